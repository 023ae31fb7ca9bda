"""The vocabulary every layer shares: the eight FERPlus emotions, in the order of every
distribution ferroute reads or writes (``(..., C)`` with ``C = 8``)."""

from __future__ import annotations

#: FERPlus's emotions in its column order; every probability vector follows it.
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)
