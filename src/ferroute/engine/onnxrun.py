"""How the core runs an ensemble: its ONNX graph on onnxruntime, no torch.

A model folder's ``ensemble.onnx`` takes gray face crops ``(B, 48, 48)`` uint8 (resizing and
normalisation are inside the graph) and gives member probabilities ``(B, M, C)`` float32; its
metadata carries the backbone config, member count and test-time views, so the file describes
itself. ``ferroute export`` (torch, the ``train`` extra) writes it.

Threads are set on purpose: one :class:`onnxruntime.InferenceSession` per graph file and process,
shared by every thread that routes (``run`` is thread-safe), with its intra-op threads set to the
CPUs this process may use (:func:`usable_cpus`; a Ray actor passes its own CPU count).
onnxruntime does not read ``OMP_NUM_THREADS``, so nothing else sets them.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .cache import named_files_digest
from .config import BackboneConfig, ModelError
from .sense import INPUT_SIZE, check_model, probe_inputs

#: The graph a model folder ships for the core runtime.
GRAPH_FILE = "ensemble.onnx"
#: Graph metadata key: the digest of the member weights the graph was exported from.
WEIGHTS_KEY = "ferroute_weights"

_SESSIONS: dict[tuple[str, int, int], Any] = {}
_LOCK = threading.Lock()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or ``taskset``'s share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def weights_digest(model_dir: str | Path) -> str:
    """SHA-256 (first 16 hex) of a model folder's member weights and config, in name order: what
    a shipped graph must have been exported from."""
    d = Path(model_dir)
    return named_files_digest([d / "config.json", *sorted(d.glob("member_*.safetensors"))])[:16]


def load_graph(model_dir: str | Path, threads: int | None = None) -> OnnxEnsemble:
    """The ``ensemble.onnx`` shipped in ``model_dir``, checked against the weights beside it."""
    d = Path(model_dir)
    path = d / GRAPH_FILE
    if not path.is_file():
        raise ModelError(f"{path}: no ONNX graph in this model folder; write it with `ferroute export {d}` "
                         "(needs PyTorch: pip install \"ferroute[train]\"), or route with --backend torch")
    ens = OnnxEnsemble(path, threads=threads)
    ens.check_probes()
    stored = ens.session.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY)
    if any(d.glob("member_*.safetensors")) and stored is not None and stored != weights_digest(d):
        raise ModelError(f"{path}: the graph was exported from other weights than the member_*.safetensors beside it; "
                         f"write it again with `ferroute export {d}`")
    return ens


def session(path: str | Path, threads: int | None = None) -> Any:
    """The one :class:`onnxruntime.InferenceSession` of ``path`` in this process for ``threads``
    intra-op threads (default :func:`usable_cpus`); later calls share it."""
    import onnxruntime as ort

    path = Path(path)
    threads = int(threads or usable_cpus())
    st = path.stat()
    key = (str(path.resolve()), threads, st.st_mtime_ns)
    with _LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            try:
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                raise ModelError(f"{path}: not a readable ONNX graph ({type(exc).__name__}: {str(exc)[:200]}); "
                                 "regenerate it with `ferroute export DIR`") from None
            _SESSIONS[key] = sess
        return sess


class OnnxEnsemble:
    """An ensemble's ONNX graph run by onnxruntime on the CPU; same ``predict_proba`` as
    :class:`ferroute.train.ensemble.Ensemble` (which needs torch)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.threads = int(threads or usable_cpus())
        self.session = session(self.path, self.threads)
        props: dict[str, str] = self.session.get_modelmeta().custom_metadata_map
        if "ferroute_backbone" not in props:
            raise ModelError(f"{self.path}: not a ferroute ONNX export (no ferroute_backbone metadata); "
                             "regenerate it with `ferroute export DIR`")
        self.config = BackboneConfig.from_dict(json.loads(props["ferroute_backbone"]))
        self.num_members = int(props["ferroute_members"])
        self.tta = props.get("ferroute_tta", "none")  # baked into the graph at export
        self.precision = props.get("ferroute_precision", "fp32")
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        if inp.type != "tensor(uint8)":  # graphs from before preprocessing moved inside take floats
            raise ModelError(f"{self.path}: this graph takes preprocessed floats (an old export); "
                             "regenerate it with `ferroute export DIR`")

    def check_probes(self) -> None:
        """Refuse a graph whose outputs on the built-in probe faces make no sense
        (:func:`ferroute.engine.sense.check_model`)."""
        check_model(self.session.run(None, {self._input: probe_inputs()})[0], self.path, self.num_members, self.config.labels)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    def set_tta(self, tta: str) -> None:
        if tta != self.tta:
            raise ValueError(f"this ONNX graph was exported with tta={self.tta!r}; re-export for {tta!r}")

    def predict_proba(self, faces: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """Gray faces ``(N, 48, 48)`` uint8 -> member probabilities ``(N, M, C)`` float32."""
        faces = np.asarray(faces)
        if faces.ndim != 3 or faces.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"faces must be gray crops shaped (N, {INPUT_SIZE}, {INPUT_SIZE}), got {faces.shape}")
        faces = faces.astype(np.uint8, copy=False)
        out = np.empty((len(faces), self.num_members, len(self.config.labels)), dtype=np.float32)
        for s in range(0, len(faces), batch_size):
            x = np.ascontiguousarray(faces[s : s + batch_size])
            out[s : s + len(x)] = self.session.run(None, {self._input: x})[0]
        return out

    def run_info(self) -> dict[str, Any]:
        """Views, device, arithmetic and backend, for reports and the server's model info."""
        return {"tta": self.tta, "device": "cpu", "precision": self.precision, "backend": "OnnxEnsemble",
                "compiled": False, "threads": self.threads}
