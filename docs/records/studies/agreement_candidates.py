"""Study: the agreement model's candidates on FERPlus validation, by the rule of
``docs/records/studies/agreement_rule.md`` (written before the run).

    FERPLUS_DIR=... python docs/records/studies/agreement_candidates.py [MODEL] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from ferroute.decide import agreement as agr
from ferroute.evaluate.ferplus import load_split
from ferroute.evaluate.metrics import average_precision, flag_ceiling
from ferroute.router import FERRouter, resolve_model_dir

LEVEL = 0.6


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-8, None))


def fit(name: str, probs: np.ndarray, votes: np.ndarray):  # noqa: ANN201 (a function probs -> distributions)
    """Fit candidate ``name`` on member probabilities ``(N, M, C)`` and votes ``(N, C)``."""
    mean = probs.mean(1)
    if name == "temperature":
        t = agr.fit_temperature(mean, votes)
        return lambda p: agr.calibrate(p.mean(1), t)
    if name == "temperature+bias":
        def nll(x: np.ndarray) -> float:
            return agr.vote_nll(agr.softmax(_log(mean) / np.exp(x[0]) + np.r_[0.0, x[1:]]), votes)
        x = minimize(nll, np.zeros(mean.shape[1]), method="L-BFGS-B").x
        return lambda p: agr.softmax(_log(p.mean(1)) / np.exp(x[0]) + np.r_[0.0, x[1:]])
    if name == "temperature+bias+top":
        base = fit("temperature+bias", probs, votes)
        d = base(probs)
        knots = fit_top_share(d, votes)
        return lambda p: recalibrate_top(base(p), knots)
    if name == "member_temperature":
        def nll1(x: np.ndarray) -> float:
            return agr.vote_nll(agr.softmax(_log(probs) / np.exp(x[0])).mean(1), votes)
        x = minimize(nll1, np.zeros(1), method="L-BFGS-B").x
        return lambda p: agr.softmax(_log(p) / np.exp(x[0])).mean(1)
    raise ValueError(name)


def fit_top_share(dist: np.ndarray, votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(x, y)`` of the increasing map from the predicted top share to the vote share of the
    predicted top emotion (isotonic regression, scipy)."""
    from scipy.optimize import isotonic_regression

    top = dist.argmax(1)
    s, v = dist.max(1), votes[np.arange(len(votes)), top]
    order = np.argsort(s, kind="stable")
    y = isotonic_regression(v[order], increasing=True).x
    return s[order], y


def recalibrate_top(dist: np.ndarray, knots: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``dist`` with its top share mapped through ``knots`` and the rest scaled to fill the
    remainder; the top stays the top (it never drops below the second's rescaled share)."""
    top = dist.argmax(1)
    rows = np.arange(len(dist))
    s = dist[rows, top]
    second = np.sort(dist, 1)[:, -2]
    g = np.interp(s, *knots)
    g = np.clip(np.maximum(g, second / np.clip(1 - s + second, 1e-12, None)), 0, 1)
    out = dist * ((1 - g) / np.clip(1 - s, 1e-12, None))[:, None]
    out[rows, top] = g
    return out


CANDIDATES = ("temperature", "temperature+bias", "member_temperature", "temperature+bias+top")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="default")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--baseline", default="temperature", help="the candidate others must beat (rule 2: temperature+bias)")
    ap.add_argument("--faces", type=int, default=None, help="the first N validation faces (a smoke run)")
    args = ap.parse_args()
    t0 = time.time()
    va = load_split("valid")
    if args.faces:
        va = va.subset(np.arange(args.faces))
    probs = FERRouter.load(resolve_model_dir(args.model), backend="onnx").ensemble.predict_proba(va.images)
    votes, top = va.distributions, va.distributions.max(1)
    folds = np.array_split(np.random.default_rng(0).permutation(len(va)), 5)
    agree = {c: np.empty(len(va)) for c in CANDIDATES}
    dist = {c: np.empty_like(votes) for c in CANDIDATES}
    for k, held in enumerate(folds):
        train = np.setdiff1d(np.arange(len(va)), held)
        for c in CANDIDATES:
            f = fit(c, probs[train], votes[train])
            dist[c][held] = f(probs[held])
            agree[c][held] = agr.agreement(dist[c][held])
    truth = top < LEVEL
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(va), len(va)) for _ in range(1000)]

    def f1(flag: np.ndarray, t: np.ndarray) -> float:
        tp = (flag & t).sum()
        return float(2 * tp / (flag.sum() + t.sum())) if flag.sum() + t.sum() else 0.0

    ceiling = flag_ceiling(va.votes, [LEVEL])[LEVEL]
    rows = {}
    for c in CANDIDATES:
        flag = agree[c] < LEVEL
        q = agr.flag_quality(agree[c], top, LEVEL)
        rows[c] = {**q, "f1": f1(flag, truth), "average_precision": average_precision(1 - agree[c], truth),
                   "vote_nll": agr.vote_nll(dist[c], votes)}
    base = agree[args.baseline] < LEVEL
    for c in CANDIDATES:
        flag = agree[c] < LEVEL
        diffs = [f1(flag[b], truth[b]) - f1(base[b], truth[b]) for b in boots]
        rows[c]["f1_gain"] = rows[c]["f1"] - rows[args.baseline]["f1"]
        rows[c]["f1_gain_se"] = float(np.std(diffs))
    best = max(CANDIDATES, key=lambda c: rows[c]["f1"])
    wins = best != args.baseline and rows[best]["f1_gain"] > rows[best]["f1_gain_se"] \
        and rows[best]["vote_nll"] <= rows[args.baseline]["vote_nll"]
    chosen = best if wins else args.baseline
    lines = [f"# agreement candidates on FERPlus validation ({len(va)} faces, 5-fold cross-fitted), model {args.model}, level {LEVEL}",
             f"# command: python docs/records/studies/agreement_candidates.py {' '.join(sys.argv[1:])}",
             f"# rule: docs/records/studies/agreement_rule.md; ceiling (a predictor that knew each face's vote shares, against a fresh draw): "
             f"precision {ceiling['ceiling_precision']:.3f}, recall {ceiling['ceiling_recall']:.3f}",
             f"# dF1, se: the F1 gain over {args.baseline} and one bootstrap standard error of it",
             f"{'candidate':20} {'flagged':>8} {'actual':>7} {'prec':>6} {'recall':>6} {'F1':>6} {'dF1':>7} {'se':>6} {'AP':>6} {'NLL':>7}"]
    for c, r in rows.items():
        lines.append(f"{c:20} {r['flagged_share']:8.3f} {r['actual_share']:7.3f} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} "
                     f"{r['f1_gain']:+7.3f} {r['f1_gain_se']:6.3f} {r['average_precision']:6.3f} {r['vote_nll']:7.4f}")
    lines.append(f"chosen by the rule: {chosen} ({time.time() - t0:.0f} s)")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "ceiling": ceiling, "chosen": chosen}, indent=1) + "\n")


if __name__ == "__main__":
    main()
