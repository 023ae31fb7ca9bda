"""How many people would agree: the ensemble's mean distribution calibrated to annotator votes,
and the level below which a face is called ``ambiguous``.

A face's ``agreement`` is the calibrated predicted share of people who would pick its top
emotion. Calibration is one temperature on the ensemble mean, ``softmax(log(mean) / T)``,
fitted on validation faces by the cross-entropy against their vote distributions (the NLL of
the votes): a temperature keeps the top emotion (so accuracy cannot move), and one number is
all a vote-share reading needs. Fitting is a 1-D convex problem over ``log T``, solved by
golden-section search (a few lines of numpy, so routing needs no scipy).

The default ambiguity level follows a rule written before any test face was looked at: among
levels 0.40, 0.41, ..., 0.80, the one whose flagged share on validation faces, ``P(agreement
< L)``, is closest to the share of validation faces whose actual top vote share is below ``L``
(ties to the lower level). Then "ambiguous" flags about as many faces as people actually split on.

Shapes: mean distributions ``(N, C)``, votes ``(N, C)`` (shares summing to 1).
"""

from __future__ import annotations

import numpy as np

#: Levels the default is chosen from (the rule above).
LEVELS = np.round(np.arange(0.40, 0.8001, 0.01), 2)


def calibrate(mean: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated distributions ``(N, C)``: ``softmax(log(mean) / T)``."""
    z = np.log(np.clip(np.asarray(mean, np.float64), 1e-8, None)) / float(temperature)
    z -= z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


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


def choose_level(agree: np.ndarray, top_vote_share: np.ndarray, levels: np.ndarray = LEVELS) -> float:
    """The rule above: the level whose flagged share best matches the actual split share."""
    agree, top = np.asarray(agree), np.asarray(top_vote_share)
    gaps = [abs(np.mean(agree < lv) - np.mean(top < lv)) for lv in levels]
    return float(levels[int(np.argmin(gaps))])


def flag_quality(agree: np.ndarray, top_vote_share: np.ndarray, level: float) -> dict[str, float]:
    """The flag ``agreement < level`` against the truth ``actual top vote share < level``:
    flagged share, actual share, precision, recall."""
    flag, truth = np.asarray(agree) < level, np.asarray(top_vote_share) < level
    return {"level": float(level), "flagged_share": float(flag.mean()), "actual_share": float(truth.mean()),
            "precision": float(truth[flag].mean()) if flag.any() else None,
            "recall": float(flag[truth].mean()) if truth.any() else None}
