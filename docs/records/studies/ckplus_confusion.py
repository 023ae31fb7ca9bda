"""Study: where the default model goes wrong on CK+, and how much of it is the label space.

    FERPLUS_DIR=... python docs/records/studies/ckplus_confusion.py [MODEL] > docs/records/studies/ckplus_confusion.txt

CK+ (``../shared/data/ckplus48``, a check, never trained or tuned on) has no neutral class
and far more disgust and contempt than FERPlus. Prints the confusion matrix of the mean
member distribution's top emotion, the accuracy over all 8 FERPlus emotions (what
``ferroute evaluate`` reports as ``generalization.ckplus_accuracy``), the accuracy when the
top emotion is taken among the labels CK+ uses, and each emotion's share of the FERPlus
training majority labels beside its share of CK+.
"""

from __future__ import annotations

import sys

import numpy as np

from ferroute.evaluate.ferplus import EMOTIONS, load_ckplus, load_split, resolve_data_dir
from ferroute.train.ensemble import Ensemble
from ferroute.router import resolve_model_dir


def main() -> None:
    ck = load_ckplus(resolve_data_dir(None).parent / "ckplus48")
    ens = Ensemble.load(resolve_model_dir(sys.argv[1] if len(sys.argv) > 1 else None))
    p = ens.predict_proba(ck.images).mean(1)
    pred = p.argmax(-1)
    used = np.unique(ck.labels)
    own = used[p[:, used].argmax(-1)]
    train = np.bincount(load_split("train").labels[load_split("train").labels >= 0], minlength=len(EMOTIONS))
    conf = np.zeros((len(EMOTIONS), len(EMOTIONS)), int)
    np.add.at(conf, (ck.labels, pred), 1)
    print(f"# CK+ ({len(ck.labels)} crops) with model {ens.meta.get('command', '?').split('--out ')[-1].split()[0]}: rows true, columns predicted")
    print(f"{'':10s}" + "".join(f"{e[:5]:>7s}" for e in EMOTIONS) + f"{'recall':>8s}{'CK+ %':>7s}{'train %':>8s}")
    for i, e in enumerate(EMOTIONS):
        n = conf[i].sum()
        print(f"{e:10s}" + "".join(f"{v:7d}" for v in conf[i]) + f"{(conf[i, i] / n if n else float('nan')):8.2f}"
              f"{100 * n / len(ck.labels):7.1f}{100 * train[i] / train.sum():8.1f}")
    print(f"accuracy over the 8 FERPlus emotions: {np.mean(pred == ck.labels):.3f}")
    print(f"accuracy with the top emotion taken among CK+'s {len(used)} labels ({', '.join(EMOTIONS[u] for u in used)}): "
          f"{np.mean(own == ck.labels):.3f}")
    print(f"predicted neutral (a class CK+ does not have): {np.mean(pred == 0):.1%}")


if __name__ == "__main__":
    main()
