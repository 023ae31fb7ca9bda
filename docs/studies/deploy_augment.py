"""Study: does training with deployment degradations (``ferroute train --deploy-augment``) help?

    FERPLUS_DIR=... ferroute train --out runs/deploy1 --backbone cnn --backbone-arg width=24 --members 1 \\
        --epochs 20 --batch-size 128 --lr 0.003 --target soft --seed 0 --deploy-augment
    FERPLUS_DIR=... python docs/studies/deploy_augment.py runs/deploy1 > docs/studies/deploy_augment.txt

One member trained with resolution loss, blur, contrast, gamma and noise on top of the usual
flips, affine jitter and erasing, against the default model's member 0 (same seed, width,
schedule and data, usual augmentations only). Judged on validation faces: clean, and under
ImageNet-C's four held-out corruptions at severities 3 and 5 (never the test's 15). CK+
(a check, never tuned on) is reported beside it.
"""

from __future__ import annotations

import sys

import numpy as np

from ferroute.corruptions import HELD_OUT, corrupted_set
from ferroute.data import load_ckplus, load_split, resolve_data_dir
from ferroute.ensemble import Ensemble
from ferroute.pipeline import default_model_dir


def accuracy(ens: Ensemble, faces: np.ndarray, labels: np.ndarray) -> float:
    keep = labels >= 0
    return float(np.mean(ens.predict_proba(faces[keep]).mean(1).argmax(-1) == labels[keep]))


def main() -> None:
    va = load_split("valid")
    ck = load_ckplus(resolve_data_dir(None).parent / "ckplus48")
    default = Ensemble.load(default_model_dir())
    models = {"default member 0 (usual augmentations)": Ensemble([default.members[0]], default.config),
              f"{sys.argv[1]} (+ deploy augmentations)": Ensemble.load(sys.argv[1])}
    held = corrupted_set(va.images, list(HELD_OUT), (3, 5), seed=1)
    print("# one member each, FERPlus valid (majority-labelled faces) and CK+ (981 crops)")
    print(f"{'model':48s} {'valid':>6s} {'held-out sev3':>13s} {'sev5':>6s} {'CK+':>6s}")
    for name, ens in models.items():
        by_sev = {s: np.mean([accuracy(ens, np.asarray(held[(h, s)]), va.labels) for h in HELD_OUT]) for s in (3, 5)}
        print(f"{name:48s} {accuracy(ens, va.images, va.labels):6.3f} {by_sev[3]:13.3f} {by_sev[5]:6.3f} "
              f"{accuracy(ens, ck.images, ck.labels):6.3f}")


if __name__ == "__main__":
    main()
