"""Uncertainty-Aware Routing (UAR) and the single-score baseline, with the fit -> route order enforced.

UAR asks two questions in order:

1. *Is the input out of distribution?* Its epistemic uncertainty is compared with that of
   in-distribution faces **of similar ambiguity**: ambiguous faces carry more epistemic
   uncertainty even when familiar, so a single epistemic threshold would reject them as
   shifted. The shift score is the standardised residual
   ``z = (log eps - mu(a)) / sd(a)``, where ``mu`` and ``sd`` are the mean and spread of
   ``log eps`` among validation faces of aleatoric level ``a`` (quantile bins, linearly
   interpolated). ``z`` above its threshold -> ``reject``.
2. *Do people disagree about it?* Aleatoric above its threshold -> ``ambiguous``.
   Otherwise -> ``accept``.

Calibration rule (on clean FERPlus validation faces, which are in distribution):
the reject threshold is the ``1 - reject_rate`` quantile of ``z`` (default: 5 % of clean
faces rejected); the ambiguity threshold is the aleatoric value that best separates the
faces whose annotator disagreement is in the top third (maximum balanced accuracy).

The single-score baseline routes on total entropy alone: reject above the ``1 - reject_rate``
quantile of validation total entropy, accept otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .uncertainty import Decomposition, decompose

_LOG_EPS = 1e-6


class NotCalibratedError(RuntimeError):
    """A router was used before ``fit``."""


def _as_decomposition(x: np.ndarray | Decomposition) -> Decomposition:
    if isinstance(x, dict):
        return x
    return decompose(x)


class UncertaintyRouter:
    """UAR: reject on ambiguity-conditioned epistemic, then flag ambiguity, else accept."""

    kind = "uar"

    SHIFT_SCORES = ("epistemic", "conditional")

    def __init__(self, reject_rate: float = 0.05, n_bins: int = 10, shift: str = "conditional"):
        if not 0 < reject_rate < 1:
            raise ValueError(f"reject_rate must be in (0, 1), got {reject_rate}")
        if shift not in self.SHIFT_SCORES:
            raise ValueError(f"shift must be one of {self.SHIFT_SCORES}, got {shift!r}")
        self.reject_rate = reject_rate
        self.n_bins = n_bins
        self.shift = shift
        self._state: dict[str, Any] | None = None

    @property
    def is_fitted(self) -> bool:
        return self._state is not None

    def _require(self) -> dict[str, Any]:
        if self._state is None:
            raise NotCalibratedError(
                "router is not calibrated: call router.fit(valid_probs, valid_disagreement) "
                "on in-distribution validation faces before routing"
            )
        return self._state

    def fit(self, probs: np.ndarray | Decomposition, disagreement: np.ndarray) -> "UncertaintyRouter":
        """Calibrate on clean validation faces: member probabilities ``(N, M, C)`` (or their
        decomposition) and the annotators' disagreement ``(N,)`` (vote entropy)."""
        d = _as_decomposition(probs)
        a = np.asarray(d["aleatoric"], float)
        le = np.log(np.asarray(d["epistemic"], float) + _LOG_EPS)
        dis = np.asarray(disagreement, float)
        if len(a) != len(dis):
            raise ValueError(f"{len(a)} faces but {len(dis)} disagreement values")
        if len(a) < 4 * self.n_bins:
            raise ValueError(f"need at least {4 * self.n_bins} validation faces to calibrate, got {len(a)}")
        edges = np.quantile(a, np.linspace(0, 1, self.n_bins + 1))
        which = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, self.n_bins - 1)
        centers, mus, sds = [], [], []
        for b in range(self.n_bins):
            sel = which == b
            centers.append(float(np.median(a[sel])))
            mus.append(float(np.mean(le[sel])))
            sds.append(float(max(np.std(le[sel]), 1e-3)))
        self._state = {"centers": centers, "mu": mus, "sd": sds}
        z = self.shift_score(d)
        self._state["z_threshold"] = float(np.quantile(z, 1 - self.reject_rate))
        self._state["epistemic_reference"] = np.sort(np.asarray(d["epistemic"], float)).tolist()
        self._state["aleatoric_reference"] = np.sort(a).tolist()
        self._state["total_reference"] = np.sort(np.asarray(d["total"], float)).tolist()
        self._state["z_reference"] = np.sort(z).tolist()
        top = dis >= np.quantile(dis, 2 / 3)
        cand = np.unique(np.quantile(a, np.linspace(0.05, 0.95, 181)))
        bal = [0.5 * (np.mean(a[top] > t) + np.mean(a[~top] <= t)) for t in cand]
        self._state["aleatoric_threshold"] = float(cand[int(np.argmax(bal))])
        return self

    def shift_score(self, probs: np.ndarray | Decomposition) -> np.ndarray:
        """Shift score ``(B,)``, higher = less like training faces: the epistemic uncertainty
        itself (``shift='epistemic'``) or its ambiguity-conditioned z (``'conditional'``)."""
        st = self._require()
        d = _as_decomposition(probs)
        if self.shift == "epistemic":
            return np.asarray(d["epistemic"], float)
        a = np.asarray(d["aleatoric"], float)
        le = np.log(np.asarray(d["epistemic"], float) + _LOG_EPS)
        mu = np.interp(a, st["centers"], st["mu"])
        sd = np.interp(a, st["centers"], st["sd"])
        return (le - mu) / sd

    @property
    def thresholds(self) -> dict[str, float]:
        st = self._require()
        return {"shift_z": st["z_threshold"], "aleatoric": st["aleatoric_threshold"]}

    def percentile(self, name: str, values: np.ndarray) -> np.ndarray:
        """Percentile (0-100) of ``values`` among validation faces for score ``name``."""
        ref = np.asarray(self._require()[f"{name}_reference"])
        return 100.0 * np.searchsorted(ref, np.asarray(values, float), side="right") / len(ref)

    def decide(self, probs: np.ndarray | Decomposition) -> np.ndarray:
        """Decisions ``(B,)`` of ``'accept' | 'ambiguous' | 'reject'``."""
        st = self._require()
        d = _as_decomposition(probs)
        z = self.shift_score(d)
        out = np.where(np.asarray(d["aleatoric"]) > st["aleatoric_threshold"], "ambiguous", "accept").astype(object)
        out[z > st["z_threshold"]] = "reject"
        return out

    def route(self, probs: np.ndarray, labels: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
        """Full JSON-able reports for member probabilities ``(B, M, C)``, one dict per input."""
        self._require()
        p = np.asarray(probs, float)
        d = decompose(p)
        mean = p.mean(axis=1)
        decisions = self.decide(d)
        z = self.shift_score(d)
        pct = {k: self.percentile(k, d[k]) for k in ("aleatoric", "epistemic", "total")}
        zpct = self.percentile("z", z)
        reports = []
        for i in range(len(p)):
            order = np.argsort(-mean[i])
            top, second = labels[order[0]], labels[order[1]]
            dist = {lab: round(float(mean[i, j]), 4) for j, lab in enumerate(labels)}
            dec = str(decisions[i])
            if dec == "reject":
                similar = " of similar ambiguity" if self.shift == "conditional" else ""
                share = "any" if zpct[i] >= 99.95 else f"{min(zpct[i], 99.0):.0f}% of"
                reason = (
                    f"Rejected: the input looks unlike the faces the model was trained on (the ensemble members "
                    f"disagree more than on {share} validation faces{similar}), so no emotion is reported."
                )
            elif dec == "ambiguous":
                reason = (
                    f"Ambiguous: people would likely disagree about this face; it reads as {top} "
                    f"({mean[i, order[0]]:.0%}) or {second} ({mean[i, order[1]]:.0%})."
                )
            else:
                reason = f"Clear {top} expression ({mean[i, order[0]]:.0%}); the members agree and the face looks familiar."
            reports.append(
                {
                    "decision": dec,
                    "reason": reason,
                    "emotion": None if dec == "reject" else top,
                    "distribution": dist,
                    "aleatoric": round(float(d["aleatoric"][i]), 5),
                    "epistemic": round(float(d["epistemic"][i]), 6),
                    "total": round(float(d["total"][i]), 5),
                    "shift_score": round(float(z[i]), 4),
                    "percentiles": {k: round(float(v[i]), 1) for k, v in pct.items()},
                }
            )
        return reports

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reject_rate": self.reject_rate, "n_bins": self.n_bins, "shift": self.shift, "state": self._require()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UncertaintyRouter":
        r = cls(reject_rate=float(d["reject_rate"]), n_bins=int(d["n_bins"]), shift=str(d.get("shift", "conditional")))
        r._state = dict(d["state"])
        return r


class SingleScoreRouter:
    """Baseline: one score (total entropy) decides; reject above its threshold, else accept."""

    kind = "single"

    def __init__(self, reject_rate: float = 0.05):
        self.reject_rate = reject_rate
        self.threshold: float | None = None

    def fit(self, probs: np.ndarray | Decomposition) -> "SingleScoreRouter":
        total = _as_decomposition(probs)["total"]
        self.threshold = float(np.quantile(total, 1 - self.reject_rate))
        return self

    def score(self, probs: np.ndarray | Decomposition) -> np.ndarray:
        return np.asarray(_as_decomposition(probs)["total"], float)

    def decide(self, probs: np.ndarray | Decomposition) -> np.ndarray:
        if self.threshold is None:
            raise NotCalibratedError("single-score router is not calibrated: call fit(valid_probs) first")
        return np.where(self.score(probs) > self.threshold, "reject", "accept").astype(object)
