"""The statistics of a full ``ferroute evaluate`` report, timed against the library calls they replace.

    python benchmarks/bench_report_stats.py [--rounds 3]

Synthetic scores the size of FERPlus test (3573 faces; ties on purpose, as in entropies of
saturated softmaxes). Per round: the bootstrap Spearman CI (1000 resamples) as ferroute
computes it against one ``scipy.stats.spearmanr`` per resample, and the 375 AUROCs of a run
(75 corrupted sets x 5 scores) against ``sklearn.metrics.roc_auc_score``; the largest
difference between the two is printed too.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from ferroute.evaluate.metrics import N_BOOT, auroc, spearman_ci


def spearman_ci_loop(x: np.ndarray, y: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    boots = [spearmanr(x[i], y[i]).statistic for i in (rng.integers(0, len(x), len(x)) for _ in range(n_boot))]
    return [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=3573)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.n
    x = np.round(rng.gamma(1.0, 0.5, n), 3)  # aleatoric-like, with ties
    y = np.round(0.6 * x + rng.gamma(1.0, 0.3, n), 2)  # disagreement-like, many ties
    clean = [np.round(rng.gamma(1.0, 0.1, n), 4) for _ in range(5)]
    shifted = [[np.round(rng.gamma(1.2, 0.1, n), 4) for _ in range(5)] for _ in range(75)]
    print(f"# ferroute report statistics, {n} faces, {N_BOOT} bootstrap resamples, 375 AUROCs; seconds per call")
    print(f"{'round':>5} {'spearman_ci':>12} {'spearmanr loop':>15} {'375 auroc':>10} {'375 roc_auc_score':>18}")
    for r in range(args.rounds):
        t = time.perf_counter()
        _, ci = spearman_ci(x, y)
        t1 = time.perf_counter()
        ci_ref = spearman_ci_loop(x, y)
        t2 = time.perf_counter()
        ours = [auroc(c, s) for sets in shifted for c, s in zip(clean, sets)]
        t3 = time.perf_counter()
        labels = np.r_[np.zeros(n), np.ones(n)]
        ref = [roc_auc_score(labels, np.r_[c, s]) for sets in shifted for c, s in zip(clean, sets)]
        t4 = time.perf_counter()
        print(f"{r + 1:>5} {t1 - t:>12.3f} {t2 - t1:>15.3f} {t3 - t2:>10.3f} {t4 - t3:>18.3f}")
    print(f"largest difference: CI {np.max(np.abs(np.subtract(ci, ci_ref))):.1e}, AUROC {np.max(np.abs(np.subtract(ours, ref))):.1e}")


if __name__ == "__main__":
    main()
