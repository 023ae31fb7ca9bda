"""Study: one trained member against the default model's member 0, on what the default must keep.

    FERPLUS_DIR=... python docs/records/studies/one_member.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a ``ferroute train`` folder (any backbone); its finished members are used,
so a run still training is measured on the members it has (member 0 alone for a one-member study). Every
model is judged on FERPlus validation faces only: clean accuracy (majority-labelled faces),
Spearman of its entropy with the annotators' vote entropy (what the aleatoric part must
track), and accuracy under the held-out shift family (``ferroute.evaluate.corruptions.HELD_OUT``; before
2026-12-06, ImageNet-C's four held-out corruptions) at severities 3 and 5 (never the test's 15). CK+ (a check, never tuned on) is reported beside it, and the
member's speed on this machine, measured in the same run (best of 3 passes over 1,024
validation faces, the model's default run options, batch 256).

Runs kept: ``docs/records/studies/deploy_augment.txt`` (``runs/deploy1``, ``train --deploy-augment``)
and ``docs/records/studies/efficientnet_lite0.txt`` (ImageNet-initialised efficientnet_lite0 members).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ferroute.evaluate.corrupted_sets import corrupted_set
from ferroute.evaluate.corruptions import HELD_OUT
from ferroute.evaluate.ferplus import load_ckplus, load_split, resolve_data_dir
from ferroute.train.ensemble import Ensemble
from ferroute.router import default_model_dir
from ferroute.decide.uncertainty import entropy


def accuracy(ens: Ensemble, faces: np.ndarray, labels: np.ndarray) -> float:
    keep = labels >= 0
    return float(np.mean(ens.predict_proba(faces[keep]).mean(1).argmax(-1) == labels[keep]))


def faces_per_second(ens: Ensemble, faces: np.ndarray) -> float:
    ens.predict_proba(faces[:256])  # warm-up: graphs, threads
    best = min(_timed(ens, faces) for _ in range(3))
    return len(faces) / best


def _timed(ens: Ensemble, faces: np.ndarray) -> float:
    t = time.perf_counter()
    ens.predict_proba(faces)
    return time.perf_counter() - t


def main() -> None:
    va = load_split("valid")
    ck = load_ckplus(resolve_data_dir(None).parent / "ckplus48")
    default = Ensemble.load(default_model_dir())
    models = {"default member 0": Ensemble([default.members[0]], default.config)}

    models.update({d: Ensemble.load(Path(d), partial=True) for d in sys.argv[1:]})  # a run's finished members, config.json or not
    held = corrupted_set(va.images, list(HELD_OUT), (3, 5), seed=1)
    print("# one member each; FERPlus valid (majority-labelled faces for accuracy, all faces for Spearman) and CK+ (981 crops)")
    print(f"{'model':40s} {'backbone':>22s} {'params':>7s} {'valid':>6s} {'rho':>6s} {'held-out sev3':>13s} "
          f"{'sev5':>6s} {'CK+':>6s} {'faces/s':>8s}")
    for name, ens in models.items():
        by_sev = {s: np.mean([accuracy(ens, np.asarray(held[(h, s)]), va.labels) for h in HELD_OUT]) for s in (3, 5)}
        rho = spearmanr(entropy(ens.predict_proba(va.images).mean(1)), va.disagreement).statistic
        cfg = ens.config
        arch = f"{cfg.name} {cfg.input_size}px"
        params = sum(p.numel() for p in ens.members[0].parameters()) / 1e6
        print(f"{name:40s} {arch:>22s} {params:6.2f}M {accuracy(ens, va.images, va.labels):6.3f} {rho:6.3f} "
              f"{by_sev[3]:13.3f} {by_sev[5]:6.3f} {accuracy(ens, ck.images, ck.labels):6.3f} "
              f"{faces_per_second(ens, va.images[:1024]):8.0f}", flush=True)


if __name__ == "__main__":
    main()
