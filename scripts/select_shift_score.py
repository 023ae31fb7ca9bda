"""Choose the test-time views and UAR's shift score on validation data only (never on test).

    FERPLUS_DIR=... python scripts/select_shift_score.py MODEL_DIR [--n 1200] [--precision auto] [--drop-members K] [--split-views]

Splits FERPlus valid in two halves: the first calibrates each candidate router, the second
(clean, plus its 15 corruptions at severity 5 as OOD) measures accuracy, Spearman, epistemic
AUROC and the kept ambiguous share at matched OOD rejection. Every view of every face is
run once and each TTA setting averages its own views. Prints the table used to pick the
default model's settings.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
from scipy.stats import spearmanr

from ferroute.corruptions import CORRUPTIONS, corrupted_set
from ferroute.data import load_split
from ferroute.ensemble import TTA_VIEWS, Ensemble, preprocess, view
from ferroute.evaluation import auroc, kept_at_rate
from ferroute.routing import UncertaintyRouter
from ferroute.uncertainty import decompose


@torch.inference_mode()
def per_view(ens: Ensemble, faces: np.ndarray, views: list[tuple[bool, int, int]]) -> np.ndarray:
    """Member probabilities of every view: ``(V, N, M, C)`` (``ens`` runs without its own TTA)."""
    out = np.zeros((len(views), len(faces), ens.num_members, len(ens.config.labels)), np.float32)
    for s in range(0, len(faces), ens.forward_chunk):
        x = preprocess(faces[s : s + ens.forward_chunk], ens.config)
        for v, spec in enumerate(views):
            out[v, s : s + len(x)] = ens(view(x, *spec)).numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--precision", default=None, help="fp32, bf16 or auto (default: the model's own)")
    ap.add_argument("--drop-members", type=int, default=0,
                    help="also measure every sub-ensemble with this many members left out (the model's own TTA, "
                         "conditional shift score): what a smaller ensemble would cost")
    ap.add_argument("--split-views", action="store_true",
                    help="also measure one view per member: every way to show some members the face and the others its "
                         "mirror image (one forward pass per member, like tta none)")
    args = ap.parse_args()
    ens = Ensemble.load(args.model)
    if args.precision:
        ens.set_precision(args.precision)
    own_tta = ens.tta
    ens.set_tta("none")  # each TTA setting below averages its own views
    va = load_split("valid")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(va))
    cal, ev = va.subset(idx[: len(va) // 2]), va.subset(idx[len(va) // 2 :][: args.n])
    sets = corrupted_set(ev.images, list(CORRUPTIONS), (5,), seed=1)
    ood_faces = np.concatenate([np.asarray(sets[(c, 5)]) for c in CORRUPTIONS])
    views = sorted({v for vs in TTA_VIEWS.values() for v in vs})
    probs = {k: per_view(ens, f, views) for k, f in (("cal", cal.images), ("ev", ev.images), ("ood", ood_faces))}
    dis = ev.disagreement
    amb = dis >= np.quantile(dis, 2 / 3)
    lab = ev.labels >= 0
    print(f"validation: {len(cal)} faces calibrate, {len(ev)} clean + {len(ood_faces)} corrupted (severity 5) measure; "
          f"arithmetic {'bf16' if ens.uses_bf16('cpu') else 'fp32'}")
    print("kept = share of ambiguous clean faces (top third of disagreement) kept at matched OOD rejection r")
    def measured(p: dict[str, np.ndarray]) -> tuple[dict, float, float, float]:
        """Decompositions, accuracy, Spearman and epistemic AUROC of member probabilities ``{split: (N, M, C)}``."""
        d = {k: decompose(v) for k, v in p.items()}
        acc = float((p["ev"].mean(1).argmax(-1)[lab] == ev.labels[lab]).mean())
        return d, acc, spearmanr(d["ev"]["aleatoric"], dis)[0], auroc(d["ev"]["epistemic"], d["ood"]["epistemic"])

    for tta, vs in TTA_VIEWS.items():
        sel = [views.index(v) for v in vs]
        d, acc, rho, auc = measured({k: p[sel].mean(0) for k, p in probs.items()})
        print(f"tta={tta:12s} accuracy {acc:.3f}  Spearman {rho:.3f}  epistemic AUROC {auc:.3f}")
        candidates = {"total (single score)": (d["ev"]["total"], d["ood"]["total"])}
        for shift in UncertaintyRouter.SHIFT_SCORES:
            router = UncertaintyRouter(shift=shift).fit(d["cal"], cal.disagreement)
            candidates[f"UAR shift={shift}"] = (router.shift_score(d["ev"]), router.shift_score(d["ood"]))
        single = {r: kept_at_rate(d["ev"]["total"][amb], d["ood"]["total"], r) for r in (0.5, 0.7, 0.9)}
        for name, (c, o) in candidates.items():
            kept = {r: kept_at_rate(c[amb], o, r) for r in (0.5, 0.7, 0.9)}
            print(f"  {name:28s}", " ".join(f"r={r}: {k:.3f}" for r, k in kept.items()),
                  f"| ratio r=0.9: {kept[0.9] / max(single[0.9], 1e-9):.2f}")
    def variants(title: str, cases: dict[str, dict[str, np.ndarray]]) -> None:
        """One row per variant ``{label: {split: (N, M, C)}}`` (conditional shift score), then their mean and range."""
        print(title)
        rows = []
        for label, p in cases.items():
            d, acc, rho, auc = measured(p)
            router = UncertaintyRouter(shift="conditional").fit(d["cal"], cal.disagreement)
            kept = kept_at_rate(router.shift_score(d["ev"])[amb], router.shift_score(d["ood"]), 0.9)
            rows.append((acc, rho, auc, kept / max(kept_at_rate(d["ev"]["total"][amb], d["ood"]["total"], 0.9), 1e-9)))
            print(f"  {label:24s} accuracy {rows[-1][0]:.3f}  Spearman {rows[-1][1]:.3f}  "
                  f"epistemic AUROC {rows[-1][2]:.3f}  ratio r=0.9: {rows[-1][3]:.2f}")
        lo, mean, hi = np.min(rows, 0), np.mean(rows, 0), np.max(rows, 0)
        print("  mean (range)     " + "  ".join(f"{n} {a:.3f} ({b:.3f}-{c:.3f})" for n, a, b, c in
                                             zip(("accuracy", "Spearman", "AUROC", "ratio"), mean, lo, hi)))

    m = ens.num_members
    if args.split_views:
        face, mirror = views.index((False, 0, 0)), views.index((True, 0, 0))
        # up to half the members: a set and its complement differ only by mirroring every face
        flips = [f for k in range(1, m // 2 + 1) for f in itertools.combinations(range(m), k)]
        variants("one view per member (mirrored members listed), UAR shift=conditional",
                 {f"mirrored {f}": {n: np.where(np.isin(np.arange(m), f)[None, :, None], v[mirror], v[face]) for n, v in probs.items()}
                  for f in flips})
    if args.drop_members:
        sel = [views.index(v) for v in TTA_VIEWS[own_tta]]
        p = {k: v[sel].mean(0) for k, v in probs.items()}  # (N, M, C)
        keeps = itertools.combinations(range(m), m - args.drop_members)
        variants(f"sub-ensembles of {m - args.drop_members} of {m} members, tta={own_tta}, UAR shift=conditional",
                 {f"members {keep}": {k: v[:, list(keep)] for k, v in p.items()} for keep in keeps})

if __name__ == "__main__":
    main()
