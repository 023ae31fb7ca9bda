"""Decompose ensemble uncertainty into aleatoric and epistemic parts (natural log).

total     = H(mean_m p_m)        entropy of the ensemble's mean prediction
aleatoric = mean_m H(p_m)        expected entropy: what every member finds ambiguous
epistemic = total - aleatoric    mutual information: where the members disagree
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

_EPS = 1e-12


class Decomposition(TypedDict):
    """Per-input uncertainty scores in nats, each shaped ``(B,)``."""

    total: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) along ``axis``; zero-probability terms contribute zero."""
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(np.clip(p, _EPS, None))).sum(axis=axis)


def decompose(probs: np.ndarray) -> Decomposition:
    """Split the uncertainty of member probabilities ``(B, M, C)``.

    Returns total, aleatoric and epistemic scores, each ``(B,)``. All are non-negative,
    ``total <= log C``, and epistemic is exactly zero when the members agree.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"probabilities must be shaped (B, M, C), got {p.shape}")
    if p.shape[1] < 1 or p.shape[2] < 2:
        raise ValueError(f"need at least one member and two classes, got {p.shape}")
    p = np.clip(p, 0.0, None)
    p = p / p.sum(axis=-1, keepdims=True)
    total = entropy(p.mean(axis=1))
    aleatoric = entropy(p).mean(axis=1)
    epistemic = np.clip(total - aleatoric, 0.0, None)
    # Rounding can push the per-member entropy a hair above the total; keep the sum exact.
    aleatoric = np.minimum(aleatoric, total)
    return Decomposition(total=total, aleatoric=aleatoric, epistemic=epistemic)
