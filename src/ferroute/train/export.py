"""ONNX export of a whole ensemble (needs torch: the ``train`` extra): one graph from gray face
crops ``(B, 48, 48)`` uint8 to member probabilities ``(B, M, C)``, which the core runs with
onnxruntime (:mod:`ferroute.engine.onnxrun`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.config import BackboneConfig
from .ensemble import Ensemble
from ..engine.onnxrun import GRAPH_FILE, INPUT_SIZE, WEIGHTS_KEY, OnnxEnsemble, weights_digest

__all__ = ["export_onnx", "resize_matrix", "write_graph", "halve_weights", "stored_half", "to_onnx_backend", "with_backend", "OnnxEnsemble"]

#: Float tensors at least this large are stored in float16 by :func:`halve_weights` and
#: :func:`export_onnx` ``(half=True)``; biases, norms and the resize matrix stay float32.
HALF_MIN_SIZE = 1024


def resize_matrix(src: int, dst: int) -> torch.Tensor:
    """The ``(dst, src)`` matrix ``W`` with ``W @ x @ W.T`` equal to the antialiased bilinear
    resize that :func:`ferroute.train.backbones.preprocess` applies to an ``(src, src)`` image (it is
    separable and linear, so resizing the identity's rows gives it)."""
    eye = torch.eye(src, dtype=torch.float64).view(1, 1, src, src)  # resizing only the rows of I gives W @ I
    rows = F.interpolate(eye, size=(dst, src), mode="bilinear", align_corners=False, antialias=True)
    return rows.view(dst, src).float()


class _FromCrops(nn.Module):
    """uint8 crops ``(B, S, S)`` -> the ensemble's probabilities ``(B, M, C)``: preprocessing in the graph."""

    def __init__(self, ens: Ensemble, cfg: BackboneConfig, size: int = INPUT_SIZE):
        super().__init__()
        self.ens = ens
        self.chans = cfg.in_chans
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1))
        self.resize = cfg.input_size != size
        self.register_buffer("w", resize_matrix(size, cfg.input_size))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        x = faces.to(torch.float32) / 255.0
        if self.resize:
            x = torch.matmul(torch.matmul(self.w, x), self.w.t())
        x = x.unsqueeze(1)
        if self.chans != 1:
            x = x.expand(-1, self.chans, -1, -1)
        return self.ens((x - self.mean) / self.std)


def export_onnx(ens: Ensemble, path: str | Path, opset: int = 17, weights_digest: str | None = None, half: bool = False) -> Path:
    """Write ``path`` (.onnx): input ``faces (B, 48, 48)`` uint8, output ``probs (B, M, C)``.

    The backbone config, member count and test-time views travel in the graph's metadata, so
    the file is self-describing; ``weights_digest`` (:func:`ferroute.engine.onnxrun.weights_digest` of
    the folder it came from) lets a load notice a graph older than its weights. The graph is float32 (onnxruntime's CPU kernels have no bf16
    convolutions), whatever precision the torch model runs in. ``half`` stores its large
    weights in float16 with a ``Cast`` to float32 in front (half the file; onnxruntime folds the
    casts when it loads the graph, so it still computes in float32): what a model stored by
    :func:`halve_weights` gets.
    """
    import onnx

    path = Path(path)
    fused, precision = ens.options.fused, ens.precision
    # one graph for every batch size (onnxruntime runs grouped convs well)
    ens.configure(fused="stacked" if fused == "auto" else fused, precision="fp32")
    cfg = ens.config
    wrapper = _FromCrops(ens, cfg).eval()  # export restores the wrapper's mode: it must be eval
    x = torch.zeros(2, INPUT_SIZE, INPUT_SIZE, dtype=torch.uint8)
    try:
        with torch.no_grad():
            wrapper(x)  # build any fused copy now, outside the tracer
        torch.onnx.export(
            wrapper, (x,), str(path), input_names=["faces"], output_names=["probs"],
            dynamic_axes={"faces": {0: "batch"}, "probs": {0: "batch"}}, opset_version=opset, dynamo=False,
        )
    finally:
        ens.configure(fused=fused, precision=precision)
    model = onnx.load(str(path))
    meta = {"ferroute_backbone": json.dumps(cfg.to_dict()), "ferroute_members": str(ens.num_members),
            "ferroute_tta": ens.tta, "ferroute_precision": "fp32"}
    if weights_digest is not None:
        meta[WEIGHTS_KEY] = weights_digest
    if half:
        _half_initializers(model)
        meta["ferroute_storage"] = "float16"
    for k, v in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = k, v
    onnx.save(model, str(path))
    return path


def _half_initializers(model: Any) -> None:
    """Store each float32 initializer of :data:`HALF_MIN_SIZE` elements or more as float16,
    cast back to float32 by a node at the head of the graph."""
    import onnx
    from onnx import numpy_helper

    graph, casts, kept = model.graph, [], []
    for node in graph.node:  # the exporter leaves folded weights as Constant nodes: make them initializers
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and value.data_type == onnx.TensorProto.FLOAT and np.prod(value.dims) >= HALF_MIN_SIZE:
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value), node.output[0]))
        else:
            kept.append(node)
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or np.prod(init.dims) < HALF_MIN_SIZE:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{name}__fp16"))
        casts.append(onnx.helper.make_node("Cast", [f"{name}__fp16"], [name], to=onnx.TensorProto.FLOAT, name=f"{name}__cast"))
    del graph.node[:]
    graph.node.extend(casts + kept)


def stored_half(model_dir: str | Path) -> bool:
    """Whether the member weights in ``model_dir`` are stored in float16 (:func:`halve_weights`)."""
    from safetensors import safe_open

    first = Path(model_dir) / "member_0.safetensors"
    with safe_open(str(first), "pt") as f:
        return any(f.get_slice(k).get_dtype() == "F16" for k in f.keys())


def halve_weights(model_dir: str | Path) -> int:
    """Rewrite the members of ``model_dir`` with every float tensor of :data:`HALF_MIN_SIZE`
    elements or more in float16, and return the bytes saved. For a model whose weights are
    large (a face-pretrained trunk per member): the file halves, loading casts back to float32,
    and the predictions move by what float16 rounding of a weight moves them (measure them
    after: ``ferroute evaluate``). Re-export the graph afterwards (:func:`write_graph` keeps it half)."""
    from safetensors.torch import load_file, save_file

    saved = 0
    for path in sorted(Path(model_dir).glob("member_*.safetensors")):
        before = path.stat().st_size
        state = load_file(str(path))
        state = {k: v.half() if v.is_floating_point() and v.numel() >= HALF_MIN_SIZE else v for k, v in state.items()}
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        saved += before - path.stat().st_size
    return saved


def write_graph(model_dir: str | Path) -> Path:
    """Export the ensemble in ``model_dir`` to ``model_dir/ensemble.onnx`` (what the core runs),
    with float16-stored weights where the members are stored so (:func:`halve_weights`)."""
    model_dir = Path(model_dir)
    return export_onnx(Ensemble.load(model_dir), model_dir / GRAPH_FILE, weights_digest=weights_digest(model_dir),
                       half=stored_half(model_dir))


def _key(ens: Ensemble) -> str:
    import hashlib

    return hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in ens.parameters()) + ens.tta.encode()).hexdigest()[:16]


def to_onnx_backend(ens: Ensemble, folder: str | Path, threads: int | None = None) -> OnnxEnsemble:
    """Export ``ens`` (with its current TTA) into ``folder`` (a cache) and load it in onnxruntime."""
    from ..engine import cache

    stem = Path(folder) / f"ensemble-{_key(ens)}"
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
    from ..engine.cache import cache_dir

    return ens if backend == "torch" else to_onnx_backend(ens, cache_dir("onnx"))

