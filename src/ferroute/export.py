"""ONNX export of a whole ensemble (one graph, outputs ``(B, M, C)`` probabilities) and an
onnxruntime CPU path with the same ``predict_proba`` interface as :class:`Ensemble`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones import BackboneConfig
from .cache import cache_dir
from .ensemble import Ensemble, preprocess


class _Probs(nn.Module):
    def __init__(self, ens: Ensemble):
        super().__init__()
        self.ens = ens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ens(x)


def export_onnx(ens: Ensemble, path: str | Path, opset: int = 17) -> Path:
    """Write ``path`` (.onnx): input ``(B, in_chans, S, S)`` normalised, output ``(B, M, C)``.

    The backbone config travels in the graph's metadata so the file is self-describing.
    """
    import onnx

    path = Path(path)
    fused, precision = ens.options.fused, ens.precision
    # one graph for every batch size (onnxruntime runs grouped convs well), in float32
    # (onnxruntime's CPU kernels have no bf16 convolutions)
    ens.configure(fused="stacked" if fused == "auto" else fused, precision="fp32")
    wrapper = _Probs(ens).eval()  # export restores the wrapper's mode: it must be eval
    cfg = ens.config
    x = torch.zeros(2, cfg.in_chans, cfg.input_size, cfg.input_size)
    try:
        with torch.no_grad():
            wrapper(x)  # build any fused copy now, outside the tracer
        torch.onnx.export(
            wrapper, (x,), str(path), input_names=["input"], output_names=["probs"],
            dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}}, opset_version=opset, dynamo=False,
        )
    finally:
        ens.configure(fused=fused, precision=precision)
    model = onnx.load(str(path))
    meta = model.metadata_props.add()
    meta.key, meta.value = "ferroute_backbone", json.dumps(cfg.to_dict())
    meta = model.metadata_props.add()
    meta.key, meta.value = "ferroute_members", str(ens.num_members)
    meta = model.metadata_props.add()
    meta.key, meta.value = "ferroute_tta", ens.tta
    onnx.save(model, str(path))
    return path


class OnnxEnsemble:
    """An exported ensemble run by onnxruntime on the CPU; same outputs as :class:`Ensemble`."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        props: dict[str, Any] = self.session.get_modelmeta().custom_metadata_map
        if "ferroute_backbone" not in props:
            raise ValueError(f"{path}: not a ferroute ONNX export (no ferroute_backbone metadata)")
        self.config = BackboneConfig.from_dict(json.loads(props["ferroute_backbone"]))
        self.num_members = int(props["ferroute_members"])
        self.tta = props.get("ferroute_tta", "none")  # baked into the graph at export

    def set_tta(self, tta: str) -> None:
        if tta != self.tta:
            raise ValueError(f"this ONNX graph was exported with tta={self.tta!r}; re-export for {tta!r}")

    def predict_proba(self, faces: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """Grayscale faces ``(N, H, W)`` uint8 -> member probabilities ``(N, M, C)`` float32."""
        out = np.empty((len(faces), self.num_members, len(self.config.labels)), dtype=np.float32)
        for s in range(0, len(faces), batch_size):
            x = preprocess(faces[s : s + batch_size], self.config).numpy()
            out[s : s + len(x)] = self.session.run(None, {"input": x})[0]
        return out


def onnx_cache_dir() -> Path:
    """Where exported graphs of loaded models are kept (``$FERROUTE_CACHE/onnx``)."""
    return cache_dir("onnx")


def to_onnx_backend(ens: Ensemble, folder: str | Path, threads: int | None = None) -> OnnxEnsemble:
    """Export ``ens`` (with its current TTA) into ``folder`` and load it in onnxruntime."""
    import hashlib

    from . import cache

    key = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in ens.parameters()) + ens.tta.encode()).hexdigest()[:16]
    stem = Path(folder) / f"ensemble-{key}"
    path = cache.find(stem, ".onnx") or cache.store(stem, ".onnx", lambda tmp: export_onnx(ens, tmp))
    if path is None:  # the cache cannot be written: export to a private temporary folder
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="ferroute-onnx-")) / "ensemble.onnx"
        export_onnx(ens, path)
    return OnnxEnsemble(path, threads=threads)


def with_backend(ens: Ensemble, backend: str) -> "Ensemble | OnnxEnsemble":
    """``ens`` itself for ``backend='torch'``; for ``'onnx'`` its export (with its current TTA,
    cached under ``$FERROUTE_CACHE/onnx``) run by onnxruntime."""
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    return ens if backend == "torch" else to_onnx_backend(ens, onnx_cache_dir())
