"""Sense checks of a loaded model's outputs, the same whichever backend runs it.

A folder can load and mean nothing: weights zeroed or untrained, a member that answers every
face alike, a graph whose outputs are not distributions, labels listed in another order than
the model was trained in. A few built-in probe crops (noise, ramps, flat grey) and one smiling
face (NASA's astronaut portrait, public domain: ``scripts/make_probe_face.py``) go through the
model once at load; what comes back must be finite distributions of the promised shape, every
member must answer different probes differently, and a model that is confident about the
smile must call it happiness.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

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


#: how sure a model must be of another emotion on the smiling probe before its labels are refused
CONFIDENT = 0.5


def smile_face() -> np.ndarray:
    """The smiling probe face ``(48, 48)`` uint8."""
    with (resources.files("ferroute") / "assets" / "probe_smile.png").open("rb") as f:
        return np.asarray(Image.open(f).convert("L"))


def probe_inputs() -> np.ndarray:
    """The probes, then the smiling face: ``(7, 48, 48)`` uint8."""
    return np.concatenate([probe_faces(), smile_face()[None]])


def check_model(out: np.ndarray, where: str | Path, members: int, labels: Sequence[str]) -> None:
    """Every load-time check on a model's member probabilities ``(7, M, C)`` for
    :func:`probe_inputs`: finite distributions of the promised shape, no still member, and
    (where the labels include ``happiness``) the labels' order on the smiling face: a model
    whose members' mean there is over :data:`CONFIDENT` sure of another emotion is refused."""
    out = np.asarray(out, np.float64)
    if out.ndim != 3 or out.shape[1:] != (members, len(labels)):
        raise ModelError(f"{where}: the model gives outputs of shape {out.shape[1:]}, but its config says "
                         f"{members} members x {len(labels)} labels")
    if not np.isfinite(out).all() or np.abs(out.sum(-1) - 1).max() > 1e-3:
        raise ModelError(f"{where}: the model's outputs on probe faces are not probability distributions (NaN, inf or not summing to 1)")
    probes, smile = out[:-1], out[-1].mean(0)
    still = [m for m in range(members) if float(np.abs(probes[:, m] - probes[:1, m]).max()) < 1e-6]
    if still:
        raise ModelError(f"{where}: member {', '.join(map(str, still))} gives every probe face the same output: its weights "
                         "are empty (zeroed) or untrained; retrain it or copy the model folder again")
    top = int(smile.argmax())
    if "happiness" in labels and labels[top] != "happiness" and smile[top] > CONFIDENT:
        raise ModelError(f"{where}: the model is {smile[top]:.0%} sure that a broadly smiling face shows {labels[top]!r}: "
                         "the labels in config.json are not in the order the model was trained with; restore the "
                         "model folder's config.json")
