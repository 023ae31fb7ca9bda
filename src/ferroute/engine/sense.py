"""Sense checks of a loaded model's outputs, the same whichever backend runs it.

A folder can load and mean nothing: weights zeroed or untrained, a member that answers every
face alike, a graph whose outputs are not distributions. A few built-in probe crops (noise,
ramps, flat grey) go through the model once at load; what comes back must be finite
distributions of the promised shape, and every member must answer different probes differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .config import ModelError

#: side of the gray crops the models take
INPUT_SIZE = 48


def probe_faces() -> np.ndarray:
    """Six probe crops ``(6, 48, 48)`` uint8: noise, three ramps, flat grey, smooth noise."""
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 255, INPUT_SIZE, dtype=np.float32), (INPUT_SIZE, 1))
    probes = np.stack([rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE)).astype(np.float32), ramp, ramp.T, 255 - ramp,
                       np.full((INPUT_SIZE, INPUT_SIZE), 128, np.float32), rng.normal(128, 40, (INPUT_SIZE, INPUT_SIZE))])
    return np.clip(probes, 0, 255).astype(np.uint8)


def check_members(predict: Callable[[np.ndarray], np.ndarray], where: str | Path, members: int, labels: int) -> None:
    """Refuse (:class:`ModelError`, naming ``where``) a model whose member probabilities
    ``predict(probes) -> (6, M, C)`` are not finite distributions of shape ``(M, C)``, or in
    which any member gives every probe the same answer (its weights zeroed or untrained)."""
    out = np.asarray(predict(probe_faces()), np.float64)
    if out.ndim != 3 or out.shape[1:] != (members, labels):
        raise ModelError(f"{where}: the model gives outputs of shape {out.shape[1:]}, but its config says "
                         f"{members} members x {labels} labels")
    if not np.isfinite(out).all() or np.abs(out.sum(-1) - 1).max() > 1e-3:
        raise ModelError(f"{where}: the model's outputs on probe faces are not probability distributions (NaN, inf or not summing to 1)")
    still = [m for m in range(members) if float(np.abs(out[:, m] - out[:1, m]).max()) < 1e-6]
    if still:
        raise ModelError(f"{where}: member {', '.join(map(str, still))} gives every probe face the same output: its weights "
                         "are empty (zeroed) or untrained; retrain it or copy the model folder again")
