"""Inference backends beyond the core's onnxruntime, found as plugins so the core never imports them.

A backend is a loader ``(model_dir, backend, device, threads) -> ensemble`` registered under the
entry-point group ``ferroute.backends``; ferroute's own ``torch`` backend lives in
:mod:`ferroute.train.backend` (the ``train`` extra). The returned ensemble answers
``predict_members(faces (N, 48, 48) uint8) -> (N, M, C)`` like :class:`~ferroute.engine.onnxrun.OnnxEnsemble`.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

from .config import ModelError

GROUP = "ferroute.backends"
TRAIN_EXTRA = 'pip install "ferroute[train]"'

Loader = Callable[[Path, str, str, "int | None"], Any]


def backend_loader(name: str, model_dir: Path) -> Loader:
    """The loader registered as ``name``; a :class:`ModelError` naming the extra to install where
    it is missing or its dependencies (PyTorch for ``torch``) are not installed."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise ModelError(f"{model_dir}: no {name!r} backend is installed ({TRAIN_EXTRA}; "
                         f"an install from a source tree needs `pip install -e .` to register it)")
    try:
        return found[0].load()
    except ImportError as exc:
        raise ModelError(f"{model_dir}: backend {name!r} needs {exc.name or 'a package'}, which this install does not "
                         f"have ({TRAIN_EXTRA}), or a graph in the folder: `ferroute export {model_dir}`") from None
