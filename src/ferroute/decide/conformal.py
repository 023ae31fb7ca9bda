"""Split-conformal thresholds: the rank of a threshold among calibration scores, the promise it
makes (with its finite-sample 95 % bound), percentiles among reference scores, and the
single-score router that thresholds total entropy alone (the baseline UAR is measured against)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .uncertainty import Decomposition, decompose


def conformal_rank(n: int, alpha: float) -> int:
    """Rank ``k`` (1-based) of the split-conformal threshold among ``n`` calibration scores:
    ``ceil((n + 1)(1 - alpha))``, so a new exchangeable score exceeds it with probability
    ``(n + 1 - k) / (n + 1) <= alpha``. ``n + 1`` when too few scores (nothing rejected)."""
    return min(int(np.ceil((n + 1) * (1 - alpha) - 1e-9)), n + 1)


def percentile_in(sorted_reference: Any, values: np.ndarray) -> np.ndarray:
    """Share (0-1) of a sorted reference at or below each of ``values``: the scale on which
    a union compares its parts, and the percentiles a report shows."""
    ref = np.asarray(sorted_reference, float)
    return np.searchsorted(ref, np.asarray(values, float), side="right") / len(ref)


def beta_ppf(q: float, a: int, b: int) -> float:
    """Quantile of Beta(a, b) for integer a, b >= 1, by bisection on its binomial form
    ``P(Beta(a, b) <= t) = P(Binomial(a + b - 1, t) >= a)``. ``scipy.stats.beta.ppf`` gives
    the same (tested); scipy is not a core dependency and routing is."""
    n = a + b - 1
    j = np.arange(a, n + 1)
    log_choose = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in j])

    def cdf(t: float) -> float:
        return float(np.exp(log_choose + j * math.log(t) + (n - j) * math.log1p(-t)).sum())

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def conformal_guarantee(n: int, k: int, reject_rate: float) -> dict[str, Any]:
    """The promise of a split-conformal threshold at rank ``k`` of ``n`` calibration scores
    (JSON-able): expected false-reject rate, and its 95 % upper bound (a Beta quantile)."""
    expected = (n + 1 - k) / (n + 1)
    upper = beta_ppf(0.95, n + 1 - k, k) if k <= n else 0.0
    return {
        "kind": "split-conformal",
        "reject_rate": reject_rate,
        "n_calibration": n,
        "reject_rate_expected": expected,
        "reject_rate_upper_95": upper,
        "statement": (f"A face drawn like the {n} clean FERPlus validation faces is rejected with probability at most "
                      f"{reject_rate:.0%} (exactly {expected:.2%} on average over calibration sets); with 95 % "
                      f"confidence this calibration rejects at most {upper:.2%} of such faces. "
                      "Faces unlike FERPlus's (other cameras, framing, populations) carry no such promise."),
    }


class NotCalibratedError(RuntimeError):
    """A router was used before ``fit``."""


def _as_decomposition(x: np.ndarray | Decomposition) -> Decomposition:
    return x if isinstance(x, dict) else decompose(np.asarray(x))


class SingleScoreRouter:
    """Baseline: one score (total entropy) decides; reject above its threshold, else accept."""

    kind = "single"

    def __init__(self, reject_rate: float = 0.05):
        self.reject_rate = reject_rate
        self.threshold: float | None = None

    def fit(self, probs: np.ndarray | Decomposition) -> "SingleScoreRouter":
        total = np.sort(np.asarray(_as_decomposition(probs)["total"], float))
        k = conformal_rank(len(total), self.reject_rate)  # the same rule as UAR's
        self.threshold = float(total[k - 1]) if k <= len(total) else float("inf")
        return self

    def score(self, probs: np.ndarray | Decomposition) -> np.ndarray:
        return np.asarray(_as_decomposition(probs)["total"], float)

    def decide(self, probs: np.ndarray | Decomposition) -> np.ndarray:
        if self.threshold is None:
            raise NotCalibratedError("single-score router is not calibrated: call fit(valid_probs) first")
        return np.where(self.score(probs) > self.threshold, "reject", "accept").astype(object)
