"""ferroute: facial expression recognition that knows why it is unsure.

>>> import ferroute
>>> router = ferroute.load()                 # embedded default ensemble, calibrated
>>> router.route("photo.jpg")                # one JSON-able dict per face

The package is laid out by role, in the order data flows (image -> face -> crop -> ensemble ->
decomposition -> decision -> report): :mod:`ferroute.vision` (images, faces, crops),
:mod:`ferroute.engine` (a model folder's ONNX graph on onnxruntime), :mod:`ferroute.decide`
(decomposition, agreement, shift, routing), :mod:`ferroute.router` (``FERRouter``, ``load``),
:mod:`ferroute.output` and :mod:`ferroute.serve`; the lab apart, in :mod:`ferroute.train` (the
only folder that imports torch) and :mod:`ferroute.evaluate`.

Names are imported on first use, so ``import ferroute`` (and ``ferroute --help``) stays quick.
Routing needs no torch: PyTorch comes with ``pip install "ferroute[train]"`` for training,
calibration, evaluation and export.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.3.2"

#: public name -> module that defines it
_EXPORTS = {
    "EMOTIONS": "labels",
    "FERRouter": "router",
    "ImageError": "vision.images",
    "NotCalibratedError": "decide.routing",
    "SingleScoreRouter": "decide.routing",
    "UncertaintyRouter": "decide.routing",
    "annotate": "vision.draw",
    "decompose": "decide.uncertainty",
    "load": "router",
}
__all__ = ["EMOTIONS", "FERRouter", "ImageError", "NotCalibratedError", "SingleScoreRouter", "UncertaintyRouter",
           "annotate", "decompose", "load", "__version__"]

#: Import paths of 0.2.x (one flat folder) -> where each module lives since 0.3.0. The old paths
#: still import, with a DeprecationWarning, until 0.4.0 (CHANGELOG, "Moved").
MOVED = {
    "pipeline": "router", "images": "vision.images", "faces": "vision.faces", "crops": "vision.crops",
    "draw": "vision.draw", "video": "vision.video", "uncertainty": "decide.uncertainty",
    "agreement": "decide.agreement", "shift": "decide.shift", "routing": "decide.routing",
    "labelshift": "decide.labelshift", "onnxrun": "engine.onnxrun", "cache": "engine.cache",
    "config": "engine.config", "server": "serve.app", "admission": "serve.admission",
    "connections": "serve.connections", "limits": "serve.limits", "telemetry": "serve.telemetry",
    "schemas": "serve.schemas", "results": "output.results", "scale": "output.scale",
    "backbones": "train.backbones", "ensemble": "train.ensemble", "graphs": "train.graphs",
    "runtime": "train.runtime", "training": "train.fit", "export": "train.export", "data": "evaluate.ferplus",
    "corruptions": "evaluate.corruptions", "heldout": "evaluate.heldout", "nonface": "evaluate.nonface",
    "metrics": "evaluate.metrics", "evaluation": "evaluate.protocol", "report": "evaluate.report",
}
#: Names that moved off the top level, with their new module.
_MOVED_NAMES = {"RunOptions": "train.runtime"}

if TYPE_CHECKING:
    from .decide.routing import NotCalibratedError, SingleScoreRouter, UncertaintyRouter
    from .decide.uncertainty import decompose
    from .labels import EMOTIONS
    from .router import FERRouter, load
    from .vision.draw import annotate
    from .vision.images import ImageError


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``import ferroute.<old>`` with the module at its new path, warning once per import."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        prefix, _, old = fullname.partition(".")
        if prefix != __name__ or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        new = f"{__name__}.{MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new} in ferroute 0.3.0; the old path goes in 0.4.0",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: Any) -> None:
        """The new module is already executed."""


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _MOVED_NAMES:
        new = f"{__name__}.{_MOVED_NAMES[name]}"
        warnings.warn(f"ferroute.{name} moved to {new}.{name} in 0.3.0; the old name goes in 0.4.0",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new), name)
    raise AttributeError(f"module 'ferroute' has no attribute {name!r}")
