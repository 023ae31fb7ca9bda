"""Choose UAR's shift score on validation data only (never on test).

    FERPLUS_DIR=... python scripts/select_shift_score.py MODEL_DIR [--n 1200]

Splits FERPlus valid in two halves: the first calibrates each candidate router, the second
(clean, plus its 15 corruptions at severity 5 as OOD) measures the kept ratio at matched
OOD rejection. Prints the table used to pick the default in ferroute.routing.
"""

from __future__ import annotations

import argparse

import numpy as np

from ferroute.corruptions import CORRUPTIONS, corrupted_set
from ferroute.data import load_split
from ferroute.ensemble import Ensemble
from ferroute.evaluation import kept_at_rate
from ferroute.routing import UncertaintyRouter
from ferroute.uncertainty import decompose


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=1200)
    args = ap.parse_args()
    ens = Ensemble.load(args.model)
    va = load_split("valid")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(va))
    cal, ev = va.subset(idx[: len(va) // 2]), va.subset(idx[len(va) // 2 :][: args.n])
    sets = corrupted_set(ev.images, list(CORRUPTIONS), (5,), seed=1)
    dis = ev.disagreement
    amb = dis >= np.quantile(dis, 2 / 3)
    print("kept ambiguous validation faces at matched OOD rejection (corruptions of validation faces, severity 5)")
    for tta in ("none", "hflip"):
        ens.set_tta(tta)
        dcal = decompose(ens.predict_proba(cal.images))
        dev = decompose(ens.predict_proba(ev.images))
        dood = [decompose(ens.predict_proba(np.asarray(sets[(c, 5)]))) for c in CORRUPTIONS]
        ood = {k: np.concatenate([d[k] for d in dood]) for k in ("total", "aleatoric", "epistemic")}
        candidates = {"total (single score)": (dev["total"], ood["total"])}
        for shift in UncertaintyRouter.SHIFT_SCORES:
            router = UncertaintyRouter(shift=shift).fit(dcal, cal.disagreement)
            candidates[f"UAR shift={shift}"] = (router.shift_score(dev), router.shift_score(ood))
        for name, (c, o) in candidates.items():
            print(f"tta={tta:5s} {name:28s}", " ".join(f"r={r}: {kept_at_rate(c[amb], o, r):.3f}" for r in (0.5, 0.7, 0.9)))


if __name__ == "__main__":
    main()
