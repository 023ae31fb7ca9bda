"""ferroute: facial expression recognition that knows why it is unsure.

>>> import ferroute
>>> router = ferroute.load()                 # embedded default ensemble, calibrated
>>> router.route("photo.jpg")                # one JSON-able dict per face

Names are imported on first use, so ``import ferroute`` (and ``ferroute --help``) stays quick.
Routing needs no torch: the embedded models run as ONNX graphs on onnxruntime; PyTorch comes
with ``pip install "ferroute[train]"`` for training, calibration, evaluation and export.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.1"

#: public name -> module that defines it
_EXPORTS = {
    "EMOTIONS": "data",
    "FERRouter": "pipeline",
    "ImageError": "images",
    "NotCalibratedError": "routing",
    "RunOptions": "runtime",
    "SingleScoreRouter": "routing",
    "UncertaintyRouter": "routing",
    "annotate": "draw",
    "decompose": "uncertainty",
    "load": "pipeline",
}
__all__ = ["EMOTIONS", "FERRouter", "ImageError", "NotCalibratedError", "RunOptions", "SingleScoreRouter", "UncertaintyRouter",
           "annotate", "decompose", "load", "__version__"]

if TYPE_CHECKING:
    from .data import EMOTIONS
    from .draw import annotate
    from .images import ImageError
    from .pipeline import FERRouter, load
    from .routing import NotCalibratedError, SingleScoreRouter, UncertaintyRouter
    from .runtime import RunOptions
    from .uncertainty import decompose


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ferroute' has no attribute {name!r}")
