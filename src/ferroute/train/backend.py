"""The ``torch`` inference backend (entry point ``ferroute.backends: torch``): a model folder's
safetensors members on a torch device, or exported to a cached ONNX graph when ``backend`` is
``onnx`` and the folder has none."""

from __future__ import annotations

from pathlib import Path

import torch

from .backbones import check_device
from .ensemble import Ensemble
from .export import with_backend


def load_ensemble(model_dir: Path, backend: str, device: str, threads: int | None):  # noqa: ANN201 (Ensemble | OnnxEnsemble)
    """The members of ``model_dir`` ready for ``predict_members((N, 48, 48) uint8) -> (N, M, C)``."""
    dev = check_device(device, backend)
    if threads:
        torch.set_num_threads(threads)
    return with_backend(Ensemble.load(model_dir).to(dev), backend)  # each checks its probe outputs as it loads
