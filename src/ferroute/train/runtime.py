"""How an ensemble runs: one :class:`RunOptions`, chosen once, and the :class:`Runtime` it builds.

What a model *is* lives in :mod:`ferroute.train.ensemble` (members, config, labels, save/load);
this module decides how its members run for inference, in the spirit of an onnxruntime
session's options or a Hugging Face pipeline's ``device`` and ``torch_dtype``: test-time
views, arithmetic (fp32, bf16, int8), how the members are fused, ``torch.compile``, chunk
size and CPU threads. ``Ensemble.configure(**options)`` swaps in a new runtime; nothing else
changes how a model runs. The runtime keeps the inference-only copies of the weights it
builds (:mod:`ferroute.train.graphs`) and drops them when the weights move or train.

Shapes: faces ``(N, H, W)`` uint8 in; member probabilities ``(N, M, C)`` float32 out.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .backbones import (
    ModelError,
    features_and_logits,
    int8_supported,
    preprocess,
    use_bf16,
)
from .graphs import (
    TTA_VIEWS,
    InferenceGraph,
    QuantizedGraph,
    StackedCNN,
    _all_compact_cnn,
    _over_views,
    _softmax,
    view,
)

if TYPE_CHECKING:
    from .ensemble import Ensemble

FUSED = ("auto", "stacked", "loop", "vmap")
COMPILE = ("auto", "on", "off")


@dataclass(frozen=True)
class RunOptions:
    """How an ensemble runs; every field is checked when the options are made.

    ``tta``: test-time views (:data:`ferroute.train.graphs.TTA_VIEWS`), each member's output is its
    mean over them. ``precision``: ``fp32``, ``bf16`` (autocast), ``auto`` (bf16 only where it
    is fast: CUDA, or a CPU with AMX tiles) or ``int8`` (CNN members on the CPU, after
    ``Ensemble.quantize``). ``fused``: ``auto`` (the grouped-convolution network up to
    ``stacked_max_batch`` faces, the member loop above), ``stacked``, ``loop`` or ``vmap``.
    ``compile``: ``torch.compile`` the inference graph for calls of ``compile_min_faces`` or
    more (``auto``), always (``on``) or never (``off``). ``chunk``: faces per forward pass on
    the CPU; ``side_by_side``: run a CPU call's chunks on one thread each.
    """

    tta: str = "none"
    precision: str = "fp32"
    fused: str = "auto"
    compile: str = "auto"
    #: Larger chunks have activations above glibc's largest mmap threshold (32 MB), which
    #: are mapped and page-faulted afresh on every call: at 512 faces that cost ~40 % of the
    #: time in kernel page faults (measured).
    chunk: int = 64
    #: 1.6x faster for the fast model's int8 graph on 2 cores (benchmarks/bench_inference.py,
    #: rows ``one chunk at a time``), identical outputs.
    side_by_side: bool = True
    #: oneDNN's plain convolutions beat its grouped ones above this batch on CPU (measured by
    #: benchmarks/bench_inference.py).
    stacked_max_batch: int = 64
    #: the one-off compile (~10 s) pays for itself from about this many faces
    compile_min_faces: int = 2048

    def __post_init__(self) -> None:
        if self.tta not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {', '.join(TTA_VIEWS)}, got {self.tta!r}")
        use_bf16(self.precision, "cpu")  # ValueError naming the choices on anything else
        if self.fused not in FUSED:
            raise ValueError(f"fused must be one of {', '.join(FUSED)}, got {self.fused!r}")
        if self.compile not in COMPILE:
            raise ValueError(f"compile must be one of {', '.join(COMPILE)}, got {self.compile!r}")
        if self.compile == "on" and self.fused == "vmap":
            raise ValueError("compile='on' needs the inference graph (fused 'auto', 'stacked' or 'loop'; not 'vmap')")
        if self.chunk < 1 or self.stacked_max_batch < 1 or self.compile_min_faces < 1:
            raise ValueError("chunk, stacked_max_batch and compile_min_faces must be positive")

    def replace(self, **changes: Any) -> "RunOptions":
        """A copy with ``changes`` applied (checked again)."""
        return dataclasses.replace(self, **changes)


class Embedded(NamedTuple):
    """What :meth:`Runtime.embed` returns, per face and member."""

    probs: np.ndarray  #: ``(N, M, C)`` probabilities, as ``predict_proba`` gives them
    features: np.ndarray  #: ``(N, M, D)`` penultimate features
    logits: np.ndarray  #: ``(N, M, C)``


def options_for(members: list[nn.Module], options: RunOptions) -> RunOptions:
    """``options`` fitted to the members: fused ``auto`` means the member loop for non-CNN
    members; ``stacked`` and ``int8`` are refused there."""
    if _all_compact_cnn(members):
        return options
    if options.fused == "stacked":
        raise ValueError("fused='stacked' needs CompactCNN members; use 'loop' or 'vmap'")
    if options.precision == "int8":
        raise ValueError("precision int8 needs CNN members (backbone 'cnn'); use auto, bf16 or fp32")
    return options.replace(fused="loop") if options.fused == "auto" else options


class Runtime:
    """Runs one :class:`Ensemble` under one :class:`RunOptions`, with the graphs it caches."""

    def __init__(self, model: "Ensemble", options: RunOptions):
        self.model = model
        self.options = options_for(list(model.members), options)
        self.reset()

    def reset(self) -> None:
        """Forget the inference-only copies of the weights (rebuilt on demand)."""
        self._fused: tuple[Any, ...] | None = None
        self._stacked: StackedCNN | None = None
        self._graphs: dict[tuple[Any, ...], nn.Module] = {}  # InferenceGraph by setting
        self._compiled: dict[tuple[Any, ...], Any] = {}  # torch.compile of those graphs
        self._warmed: set[tuple[Any, ...]] = set()  # (graph key, batch) compiled by _compiled_step

    # ------------------------------------------------------------------ what runs where

    def uses_bf16(self, device: str | torch.device = "cpu") -> bool:
        """Whether a forward pass on ``device`` runs in bf16."""
        return use_bf16(self.options.precision, device)

    def uses_int8(self, device: str | torch.device = "cpu") -> bool:
        """Whether a forward pass on ``device`` runs the int8 :class:`QuantizedGraph`."""
        return self.options.precision == "int8" and torch.device(device).type == "cpu" and self._graph_path() and int8_supported()

    @property
    def is_compiled(self) -> bool:
        """Whether a compiled inference graph has been built (and not invalidated since)."""
        return bool(self._compiled)

    def _graph_path(self) -> bool:
        return self.options.fused != "vmap"

    def _graph_key(self, device: str | torch.device) -> tuple[Any, ...]:
        """What an inference graph depends on: device, compute dtype, views and fusion."""
        dev = torch.device(device)
        dtype = "int8" if self.uses_int8(dev) else torch.bfloat16 if self.uses_bf16(dev) else next(self.model.parameters()).dtype
        return (str(dev), dtype, self.options.tta, self.options.fused, self.options.stacked_max_batch)

    def inference_graph(self, device: str | torch.device = "cpu", compiled: bool = False) -> nn.Module:
        """The cached :class:`InferenceGraph` for these options on ``device``, optionally
        ``torch.compile``d (freezing the weights; one fixed batch shape per compile). With
        precision ``int8`` on the CPU: the :class:`QuantizedGraph` (never compiled)."""
        key = self._graph_key(device)
        views, members = TTA_VIEWS[self.options.tta], list(self.model.members)
        if key[1] == "int8":
            if key not in self._graphs:
                int8 = self.model.meta.get("inference", {}).get("int8")
                if not int8:
                    raise ModelError("precision int8 needs activation scales fitted on calibration faces: call "
                                     "Ensemble.quantize(faces) or run `ferroute calibrate --precision int8`")
                if int8["tta"] != self.options.tta:
                    warnings.warn(f"int8 activation scales were fitted on test-time augmentation {int8['tta']!r}, not "
                                  f"{self.options.tta!r}: outputs drift slightly; call Ensemble.quantize(faces) to refit them "
                                  f"(ferroute calibrate --tta {self.options.tta} --precision int8 does)", stacklevel=3)
                self._graphs[key] = QuantizedGraph(members, views, int8["activations"])
            return self._graphs[key]
        if key not in self._graphs:
            stacked = {"auto": "auto", "stacked": "always", "loop": "never"}[self.options.fused]
            self._graphs[key] = InferenceGraph(members, views, key[1], stacked, self.options.stacked_max_batch)
        if not compiled:
            return self._graphs[key]
        if key not in self._compiled:
            self._compiled[key] = torch.compile(self._graphs[key], dynamic=False, options={"freezing": True})
        return self._compiled[key]

    def quantize(self, faces: np.ndarray, max_faces: int = 1024, batch_size: int = 256) -> dict[str, Any]:
        """Fit int8 activation scales on calibration faces ``(N, H, W)`` uint8 (at most
        ``max_faces``, evenly spaced: the histogram observer is slow and a thousand faces pin
        the ranges down); returns the record ``Ensemble.quantize`` stores in the model."""
        members = list(self.model.members)
        if not _all_compact_cnn(members):
            raise ValueError("int8 quantization needs CNN members (backbone 'cnn')")
        if len(faces) == 0:
            raise ValueError("quantize needs at least one calibration face")
        faces = np.asarray(faces)[:: max(1, -(-len(faces) // max_faces))]
        graph = QuantizedGraph(members, TTA_VIEWS[self.options.tta])
        for s in range(0, len(faces), batch_size):
            graph.observe(preprocess(faces[s : s + batch_size], self.model.config))
        record = {"engine": "x86", "faces": int(len(faces)), "tta": self.options.tta, "activations": graph.activation_qparams()}
        graph.finish()
        return record

    # ------------------------------------------------------------------ forward passes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Member probabilities ``(B, M, C)`` float32 for a preprocessed batch ``(B, C, S, S)``,
        each member's output averaged over the test-time views (one batch of all views)."""
        if self._graph_path():
            return self.inference_graph(x.device)(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.uses_bf16(x.device)):
            return _over_views(self.forward_vmap, x, TTA_VIEWS[self.options.tta])

    def forward_vmap(self, x: torch.Tensor) -> torch.Tensor:
        """All members in one vectorised pass (``torch.func.vmap``). ``(B, ...) -> (B, M, C)``."""
        from torch.func import functional_call, stack_module_state, vmap

        if self._fused is None:
            params, buffers = stack_module_state(list(self.model.members))
            self._fused = (copy.deepcopy(self.model.members[0]).to("meta"), params, buffers)
        base, params, buffers = self._fused

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (inp,))

        return _softmax(vmap(one, in_dims=(0, 0, None))(params, buffers, x)).transpose(0, 1)

    def forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """All CNN members as one grouped-convolution network. ``(B, 1, H, W) -> (B, M, C)``."""
        if self._stacked is None:
            self._stacked = StackedCNN(list(self.model.members)).to(memory_format=torch.channels_last)
        return _softmax(self._stacked(x.contiguous(memory_format=torch.channels_last)))

    @torch.inference_mode()
    def predict_proba(self, faces: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """Gray faces ``(N, H, W)`` uint8 -> member probabilities ``(N, M, C)`` float32, on the
        device the members live on, in chunks of ``options.chunk`` faces on the CPU."""
        self.model.eval()
        dev, opts = self.model.device, self.options
        out = np.empty((len(faces), self.model.num_members, len(self.model.config.labels)), dtype=np.float32)
        chunk = opts.chunk if dev.type == "cpu" else batch_size  # the chunking answers a CPU allocator cost
        full: Any = self.forward  # runs the full chunks
        wants = opts.compile == "on" or (opts.compile == "auto" and len(faces) >= opts.compile_min_faces and self._graph_path())
        if wants and not self.uses_int8(dev):  # torch.compile does not take the eager-quantized int8 graph
            full = self._compiled_step(chunk, dev)
        workers = self._cpu_workers(len(faces), chunk, dev) if full == self.forward else 1
        if workers > 1:
            return _predict_threaded(self.inference_graph("cpu"), self.model.config, faces, out, chunk, workers, progress)
        starts = range(0, len(faces), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="ensemble", unit="batch", leave=False)
        for s in starts:
            x = preprocess(faces[s : s + batch_size], self.model.config).to(dev)
            for c in range(0, len(x), chunk):
                xc = x[c : c + chunk]
                step = full if len(xc) == chunk else self.forward  # the compiled graph knows one batch shape
                out[s + c : s + c + len(xc)] = step(xc).cpu().numpy()
        return out

    @torch.inference_mode()
    def embed(self, faces: np.ndarray, batch_size: int = 256) -> Embedded:
        """Gray faces ``(N, H, W)`` uint8 -> :class:`Embedded`: probabilities as
        :meth:`predict_proba` gives them, and each member's penultimate features and logits,
        averaged over the views (they feed density shift scores, :mod:`ferroute.decide.shift`).
        A plain member loop, in bf16 where :meth:`predict_proba` runs in bf16."""
        self.model.eval()
        views = TTA_VIEWS[self.options.tta]
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for s in range(0, len(faces), batch_size):
            x = preprocess(faces[s : s + batch_size], self.model.config).to(self.model.device)
            xv = torch.cat([view(x, *v) for v in views]).contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.uses_bf16(x.device)):
                out = [features_and_logits(m, xv) for m in self.model.members]
            f = torch.stack([o[0].float() for o in out], 1)  # (V*B, M, D)
            lg = torch.stack([o[1].float() for o in out], 1)  # (V*B, M, C)

            def per_face(t: torch.Tensor) -> np.ndarray:
                return t.view(len(views), len(x), *t.shape[1:]).mean(0).cpu().numpy()

            parts.append((per_face(lg.softmax(-1)), per_face(f), per_face(lg)))
        return Embedded(*(np.concatenate(p) for p in zip(*parts)))

    def _cpu_workers(self, n_faces: int, chunk: int, device: torch.device) -> int:
        """Threads for an eager CPU call: one per torch thread when there are at least two
        chunks to share, else 1. Only with OpenMP, whose thread count each thread sets."""
        n = torch.get_num_threads()
        shared = self.options.side_by_side and device.type == "cpu" and self._graph_path() and n > 1 and n_faces >= 2 * chunk
        return n if shared and torch.backends.openmp.is_available() else 1

    def _compiled_step(self, chunk: int, device: torch.device) -> Any:
        """The compiled inference graph, compiled now on a ``chunk``-face batch (once per
        setting); the eager :meth:`forward`, with a warning and compile ``off``, on failure."""
        warm = (self._graph_key(device), chunk)
        try:
            graph = self.inference_graph(device, compiled=True)
            if warm not in self._warmed:
                cfg = self.model.config
                graph(torch.zeros(chunk, cfg.in_chans, cfg.input_size, cfg.input_size, device=device))
                self._warmed.add(warm)
            return graph
        except Exception as exc:  # no C++ toolchain, unsupported platform, ...: eager still works
            warnings.warn(f"torch.compile of the ensemble failed, running eagerly ({type(exc).__name__}: {exc})", stacklevel=3)
            self.options = self.options.replace(compile="off")
            self._compiled, self._warmed = {}, set()
            return self.forward


def _predict_threaded(graph: nn.Module, cfg: Any, faces: np.ndarray, out: np.ndarray, chunk: int, workers: int,
                      progress: bool) -> np.ndarray:
    """CPU prediction with ``workers`` chunks side by side, one thread each (torch's intra-op
    threads set to 1 there). The small convolutions of a 64-face chunk split across cores
    spend much of their time forking and joining; whole chunks side by side do not, and the
    float work between the convolutions runs in parallel too. Outputs do not depend on where
    a face sits in the batch: every chunk runs single-threaded."""
    threads = torch.get_num_threads()

    def run(s: int) -> int:
        torch.set_num_threads(1)  # this thread's OpenMP/MKL pools; process default restored below
        with torch.inference_mode():  # thread-local, like grad mode
            x = preprocess(faces[s : s + chunk], cfg)
            out[s : s + len(x)] = graph(x).numpy()
        return len(x)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(faces), desc="ensemble", unit="face", leave=False)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="ferroute-chunk") as pool:
            for n in pool.map(run, range(0, len(faces), chunk)):
                if bar is not None:
                    bar.update(n)
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    return out
