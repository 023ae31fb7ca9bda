"""How many people would agree: the ensemble's mean distribution calibrated to annotator votes,
and the level below which a face is called ``ambiguous``.

A face's ``agreement`` is the calibrated predicted share of people who would pick its top
emotion. Calibration is a temperature and a bias per emotion on the ensemble mean,
``softmax(log(mean) / T + b)`` (vector scaling), fitted on validation faces by the
cross-entropy against their vote distributions (the NLL of the votes). It was chosen over a
temperature alone, a temperature per member and a top-share recalibration on validation faces by
the rule of ``docs/records/studies/agreement_rule.md``; a router fitted before it has no biases
and reads as a temperature alone. Applying it is numpy; fitting uses scipy (the ``train`` extra).

The default ambiguity level is stated in words, not fitted: **no clear majority**, fewer than 3
in 5 people would pick the top emotion (:data:`DEFAULT_LEVEL`, 0.6). Users set their own.

Shapes: mean distributions ``(N, C)``, votes ``(N, C)`` (shares summing to 1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: The default level: ambiguous when fewer than 3 in 5 people would pick the top emotion.
DEFAULT_LEVEL = 0.6
#: The levels the report measures the flag at.
REPORTED_LEVELS = (0.4, 0.5, 0.6, 0.7, 0.8)


def level_words(level: float) -> str:
    """The level as a person would say it: 0.6 -> "fewer than 3 in 5 people would pick the top
    emotion"; a level that is no small fraction is given as a percentage."""
    if abs(level - 0.5) < 1e-9:
        return "fewer than half of people would pick the top emotion"
    for b in range(2, 11):
        a = round(level * b)
        if 0 < a < b and abs(a / b - level) < 1e-9:
            return f"fewer than {a} in {b} people would pick the top emotion"
    return f"fewer than {level:.0%} of people would pick the top emotion"


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted for stability."""
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def calibrate(mean: np.ndarray, temperature: float, bias: np.ndarray | None = None) -> np.ndarray:
    """Calibrated distributions ``(..., C)``: ``softmax(log(mean) / T + b)`` (``b`` = 0 when ``None``)."""
    z = np.log(np.clip(np.asarray(mean, np.float64), 1e-8, None)) / float(temperature)
    return softmax(z if bias is None else z + np.asarray(bias, np.float64))


def vote_nll(pred: np.ndarray, votes: np.ndarray) -> float:
    """Mean cross-entropy of the vote distributions under the predicted ones (nats)."""
    return float(-(np.asarray(votes) * np.log(np.clip(pred, 1e-12, None))).sum(-1).mean())


def fit_temperature(mean: np.ndarray, votes: np.ndarray, lo: float = 0.2, hi: float = 5.0) -> float:
    """The temperature minimising :func:`vote_nll` of the calibrated means (golden section on log T)."""
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2

    def f(t: float) -> float:
        return vote_nll(calibrate(mean, np.exp(t)), votes)

    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return float(np.exp((a + b) / 2))


def agreement(calibrated: np.ndarray) -> np.ndarray:
    """Predicted share of people who would pick the top emotion ``(N,)``."""
    return np.asarray(calibrated).max(-1)


def fit_calibration(mean: np.ndarray, votes: np.ndarray) -> tuple[float, np.ndarray]:
    """The temperature and per-emotion biases ``(T, b)`` (``b[0] = 0``) minimising :func:`vote_nll`
    of ``softmax(log(mean) / T + b)``: scipy's L-BFGS-B from the best temperature alone, with the
    analytic gradient."""
    from scipy.optimize import minimize

    logm = np.log(np.clip(np.asarray(mean, np.float64), 1e-8, None))
    votes = np.asarray(votes, np.float64)
    n = len(votes)

    def nll(x: np.ndarray) -> tuple[float, np.ndarray]:
        q = np.clip(calibrate(mean, np.exp(x[0]), np.r_[0.0, x[1:]]), 1e-12, None)
        dz = (q * votes.sum(1, keepdims=True) - votes) / n  # d nll / d logits
        return float(-(votes * np.log(q)).sum(1).mean()), np.r_[-(dz * logm).sum() * np.exp(-x[0]), dz.sum(0)[1:]]

    x0 = np.r_[np.log(fit_temperature(mean, votes)), np.zeros(logm.shape[1] - 1)]
    x = minimize(nll, x0, jac=True, method="L-BFGS-B").x
    return float(np.exp(x[0])), np.r_[0.0, x[1:]]


def flag_quality(agree: np.ndarray, top_vote_share: np.ndarray, level: float) -> dict[str, float]:
    """The flag ``agreement < level`` against the truth ``actual top vote share < level``:
    flagged share, actual share, precision, recall."""
    flag, truth = np.asarray(agree) < level, np.asarray(top_vote_share) < level
    return {"level": float(level), "flagged_share": float(flag.mean()), "actual_share": float(truth.mean()),
            "precision": float(truth[flag].mean()) if flag.any() else None,
            "recall": float(flag[truth].mean()) if truth.any() else None}


class AgreementReading:
    """How a router reads ambiguity from agreement: its vote calibration (fitted on validation
    votes) and the level below which a face is ``ambiguous`` (the user's, else 0.6). A mixin of
    :class:`ferroute.decide.routing.UncertaintyRouter`, which holds the state (``self._state``)."""

    _state: dict[str, Any] | None
    _level: float | None

    def _require(self) -> dict[str, Any]:  # the router's: its state, or NotCalibratedError
        raise NotImplementedError

    def fit_agreement(self, probs: np.ndarray, votes: np.ndarray) -> "AgreementReading":
        """Fit the vote temperature and the default ambiguity level (:mod:`ferroute.decide.agreement`)
        on validation member probabilities ``(N, M, C)`` and vote distributions ``(N, C)``."""
        st = self._require()
        mean, votes = np.asarray(probs, float).mean(1), np.asarray(votes, float)
        if mean.shape != votes.shape:
            raise ValueError(f"fit_agreement needs member probabilities (N, M, C) and votes (N, C), got {np.shape(probs)} and {votes.shape}")
        t, b = fit_calibration(mean, votes)
        st["vote_temperature"], st["vote_bias"] = t, [float(x) for x in b]
        st["ambiguous_below"] = DEFAULT_LEVEL
        return self

    @property
    def has_agreement(self) -> bool:
        """Whether ambiguity is read from agreement (a router calibrated with votes)."""
        return self._require().get("vote_temperature") is not None

    @property
    def ambiguous_below(self) -> float | None:
        """The agreement level below which a face is ``ambiguous``: the user's, else the fitted default."""
        if self._level is not None:
            return self._level
        return self._require().get("ambiguous_below")

    @ambiguous_below.setter
    def ambiguous_below(self, level: float | None) -> None:
        if level is not None:
            if not isinstance(level, (int, float)) or not 0 < float(level) < 1 or math.isnan(float(level)):
                raise ValueError(f"ambiguous_below must be a share between 0 and 1 (e.g. 0.6), got {level!r}")
            if self._state is not None and not self.has_agreement:
                raise ValueError("this router was calibrated before agreement existed: run `ferroute calibrate` again to set an ambiguity level")
            level = float(level)
        self._level = level

    def calibrated(self, probs: np.ndarray) -> np.ndarray:
        """The vote-calibrated distributions ``(B, C)`` of member probabilities ``(B, M, C)``
        (the members' mean where the router has no vote temperature)."""
        mean = np.asarray(probs, float).mean(1)
        st = self._require()
        t = st.get("vote_temperature")
        return mean if t is None else calibrate(mean, t, st.get("vote_bias"))
