"""Deep Ensemble: M backbones of one architecture, run as one fused forward pass.

A model directory holds ``config.json`` (backbone config, member count, training record),
``member_<k>.safetensors`` per member and, once calibrated, ``router.json``.
"""

from __future__ import annotations

import copy
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .backbones import BackboneConfig, ModelError, build_from_config, features_and_logits, int8_supported, use_bf16
from .runtime import (
    StackedCNN,
    TTA_VIEWS,
    view,
    _over_views,
    _softmax,
    _all_compact_cnn,
    InferenceGraph,
    QuantizedGraph,
)

FORMAT = "ferroute-ensemble"
FORMAT_VERSION = 1


def preprocess(images: np.ndarray | torch.Tensor, cfg: BackboneConfig) -> torch.Tensor:
    """Grayscale faces ``(B, H, W)`` uint8 -> normalised float batch ``(B, in_chans, S, S)``.

    Faces are resized to ``cfg.input_size`` and replicated to the backbone's channels.
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images, copy=True))
    if x.ndim != 3:
        raise ValueError(f"faces must be shaped (B, H, W) grayscale, got {tuple(x.shape)}")
    x = x.to(torch.float32).div_(255.0).unsqueeze(1)
    if x.shape[-1] != cfg.input_size or x.shape[-2] != cfg.input_size:
        x = F.interpolate(x, size=(cfg.input_size, cfg.input_size), mode="bilinear", align_corners=False, antialias=True)
    if cfg.in_chans != 1:
        x = x.expand(-1, cfg.in_chans, -1, -1)
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


class Embedded(NamedTuple):
    """What :meth:`Ensemble.embed` returns, per face and member."""

    probs: np.ndarray  #: ``(N, M, C)`` probabilities, as :meth:`Ensemble.predict_proba`
    features: np.ndarray  #: ``(N, M, D)`` penultimate features
    logits: np.ndarray  #: ``(N, M, C)``


class Ensemble(nn.Module):
    """M members sharing one :class:`BackboneConfig`; outputs probabilities ``(B, M, C)``."""

    def __init__(self, members: list[nn.Module], config: BackboneConfig, meta: dict[str, Any] | None = None, fused: str = "auto"):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if fused not in ("auto", "stacked", "loop", "vmap"):
            raise ValueError(f"fused must be 'auto', 'stacked', 'loop' or 'vmap', got {fused!r}")
        if not _all_compact_cnn(members):
            if fused == "stacked":
                raise ValueError("fused='stacked' needs CompactCNN members; use 'loop' or 'vmap'")
            fused = "loop" if fused == "auto" else fused
        self.fused = fused
        self.members = nn.ModuleList(m.to(memory_format=torch.channels_last) for m in members)
        self.config = config
        self.meta: dict[str, Any] = copy.deepcopy(meta or {})  # set_tta & co. write into its nested dicts
        self.set_tta(str(self.meta.get("inference", {}).get("tta", "none")))
        int8 = self.meta.get("inference", {}).get("int8")
        if int8 is not None and "tta" not in int8:  # stored before the record named its views: the model's own
            self.meta["inference"]["int8"] = {**int8, "tta": self.tta}
        self.set_precision(str(self.meta.get("inference", {}).get("precision", "fp32")))
        self._drop_copies()
        self.compile_mode: str = "auto"  # see set_compile; nn.Module.compile stays torch's method
        self.eval()

    @property
    def num_members(self) -> int:
        return len(self.members)

    @property
    def device(self) -> torch.device:
        """The device the members live on (where :meth:`predict_proba` runs them)."""
        return next(self.parameters()).device

    def _drop_copies(self) -> None:
        """Forget the inference-only copies of the members' weights (rebuilt on demand).
        Plain attributes, not submodules: they stay out of ``state_dict``."""
        self._fused: tuple[Any, ...] | None = None
        self._stacked: list[StackedCNN] = []
        self._graphs: dict[tuple[Any, ...], nn.Module] = {}  # InferenceGraph by setting
        self._compiled: dict[tuple[Any, ...], Any] = {}  # torch.compile of those graphs
        self._warmed: set[tuple[Any, ...]] = set()  # (graph key, batch) compiled by _compiled_step

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "Ensemble":
        self._drop_copies()  # .to(device/dtype) must not leave copies behind
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> "Ensemble":
        if mode:  # weights may change while training: rebuild the copies afterwards
            self._drop_copies()
        return super().train(mode)

    def _fused_state(self) -> tuple[Any, ...]:
        if self._fused is None:
            from torch.func import stack_module_state

            params, buffers = stack_module_state(list(self.members))
            base = copy.deepcopy(self.members[0]).to("meta")
            self._fused = (base, params, buffers)
        return self._fused

    def forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        """A loop over members on a channels-last batch. ``(B, ...) -> (B, M, C)`` probabilities."""
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.stack([_softmax(m(x)) for m in self.members], dim=1)

    def forward_vmap(self, x: torch.Tensor) -> torch.Tensor:
        """All members in one vectorised pass (``torch.func.vmap``). ``(B, ...) -> (B, M, C)``."""
        from torch.func import functional_call, vmap

        base, params, buffers = self._fused_state()

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (inp,))

        logits = vmap(one, in_dims=(0, 0, None))(params, buffers, x)  # (M, B, C)
        return _softmax(logits).transpose(0, 1)

    def forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """All CNN members as one grouped-convolution network. ``(B, 1, H, W) -> (B, M, C)``."""
        if not self._stacked:
            self._stacked.append(StackedCNN(list(self.members)).to(memory_format=torch.channels_last))
        return _softmax(self._stacked[0](x.contiguous(memory_format=torch.channels_last)))

    #: ``auto`` runs the grouped-convolution network up to this batch size and the member
    #: loop above it, where oneDNN's plain convolutions beat its grouped ones on CPU
    #: (measured by benchmarks/bench_inference.py).
    stacked_max_batch = 64

    def set_tta(self, tta: str) -> None:
        """Test-time augmentation, one of :data:`TTA_VIEWS`: each member's output becomes its
        mean over these views of the face (``hflip``: the face and its mirror image)."""
        if tta not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {', '.join(TTA_VIEWS)}, got {tta!r}")
        self.tta = tta
        self.meta.setdefault("inference", {})["tta"] = tta

    def set_precision(self, precision: str) -> None:
        """Inference arithmetic: ``fp32``, ``bf16`` (autocast), ``auto`` (bf16 only where it
        is fast: CUDA, or a CPU with AMX tiles; fp32 elsewhere) or ``int8`` (CNN ensembles on
        the CPU, after :meth:`quantize`; bf16 on CUDA). Probabilities stay float32."""
        use_bf16(precision, "cpu")  # validates the choice (ValueError on anything else)
        if precision == "int8" and not _all_compact_cnn(list(self.members)):
            raise ValueError("precision int8 needs CNN members (backbone 'cnn'); use auto, bf16 or fp32")
        self.precision = precision
        self.meta.setdefault("inference", {})["precision"] = precision

    def uses_bf16(self, device: str | torch.device = "cpu") -> bool:
        """Whether a forward pass on ``device`` runs in bf16 under the current precision."""
        return use_bf16(self.precision, device)

    def uses_int8(self, device: str | torch.device = "cpu") -> bool:
        """Whether a forward pass on ``device`` runs the int8 :class:`QuantizedGraph` (precision
        ``int8`` is only ever set on CNN members: :meth:`set_precision` refuses others)."""
        return self.precision == "int8" and torch.device(device).type == "cpu" and self._graph_path() and int8_supported()

    @property
    def is_quantized(self) -> bool:
        """Whether int8 activation scales have been fitted (:meth:`quantize`)."""
        return "int8" in self.meta.get("inference", {})

    @property
    def int8_tta(self) -> str | None:
        """The test-time augmentation the int8 scales were fitted on (``None`` before
        :meth:`quantize`; scales stored without it were fitted on the model's stored one)."""
        int8 = self.meta.get("inference", {}).get("int8")
        return None if int8 is None else int8["tta"]

    def quantize(self, faces: np.ndarray, max_faces: int = 1024, batch_size: int = 256) -> "Ensemble":
        """Fit the int8 activation scales on calibration faces ``(N, H, W)`` uint8 (FERPlus
        validation faces, say; no labels needed; at most ``max_faces`` of them, evenly spaced:
        the histogram observer is slow and a thousand faces pin the ranges down), store them
        in :attr:`meta` (so :meth:`save` and ``config.json`` carry them) and switch to
        precision ``int8``."""
        if not _all_compact_cnn(list(self.members)):
            raise ValueError("int8 quantization needs CNN members (backbone 'cnn')")
        if len(faces) == 0:
            raise ValueError("quantize needs at least one calibration face")
        faces = np.asarray(faces)[:: max(1, -(-len(faces) // max_faces))]
        graph = QuantizedGraph(list(self.members), TTA_VIEWS[self.tta])
        for s in range(0, len(faces), batch_size):
            graph.observe(preprocess(faces[s : s + batch_size], self.config))
        qparams = graph.activation_qparams()
        graph.finish()
        self.meta.setdefault("inference", {})["int8"] = {"engine": "x86", "faces": int(len(faces)), "tta": self.tta,
                                                         "activations": qparams}
        self.set_precision("int8")
        self._graphs[self._graph_key("cpu")] = graph
        return self

    def set_compile(self, mode: str) -> None:
        """Whether :meth:`predict_proba` runs its full :attr:`forward_chunk`-face chunks through
        a ``torch.compile``d inference graph: ``on``, ``off``, or ``auto`` (on for calls of at
        least :attr:`compile_min_faces` faces, where the one-off compile, ~10 s, pays for
        itself; later calls reuse it). Smaller remainders run eagerly. On failure (no C++
        compiler, unsupported platform) it warns and runs eagerly."""
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"compile must be 'auto', 'on' or 'off', got {mode!r}")
        if mode == "on" and not self._graph_path():
            raise ValueError("compile='on' needs the inference graph (fused 'auto', 'stacked' or 'loop'; not 'vmap')")
        self.compile_mode = mode

    #: ``compile='auto'`` compiles for :meth:`predict_proba` calls with at least this many faces.
    compile_min_faces = 2048

    @property
    def is_compiled(self) -> bool:
        """Whether a compiled inference graph has been built (and not invalidated since)."""
        return bool(self._compiled)

    def _graph_path(self) -> bool:
        return self.fused != "vmap"

    def _graph_key(self, device: str | torch.device) -> tuple[Any, ...]:
        """What an inference graph depends on: device, compute dtype, TTA and fusion settings."""
        dev = torch.device(device)
        dtype = "int8" if self.uses_int8(dev) else torch.bfloat16 if self.uses_bf16(dev) else next(self.parameters()).dtype
        return (str(dev), dtype, self.tta, self.fused, self.stacked_max_batch)

    def inference_graph(self, device: str | torch.device = "cpu", compiled: bool = False) -> nn.Module:
        """The cached :class:`InferenceGraph` for the current TTA and precision on ``device``,
        optionally ``torch.compile``d (freezing the weights; one fixed batch shape per compile).
        With precision ``int8`` on the CPU: the :class:`QuantizedGraph` (never compiled)."""
        key = self._graph_key(device)
        dtype = key[1]
        if dtype == "int8":
            if key not in self._graphs:
                int8 = self.meta.get("inference", {}).get("int8")
                if not int8:
                    raise ModelError("precision int8 needs activation scales fitted on calibration faces: call "
                                     "Ensemble.quantize(faces) or run `ferroute calibrate --precision int8`")
                if int8["tta"] != self.tta:
                    warnings.warn(f"int8 activation scales were fitted on test-time augmentation {int8['tta']!r}, not "
                                  f"{self.tta!r}: outputs drift slightly; call Ensemble.quantize(faces) to refit them "
                                  f"(ferroute calibrate --tta {self.tta} --precision int8 does)", stacklevel=3)
                self._graphs[key] = QuantizedGraph(list(self.members), TTA_VIEWS[self.tta], int8["activations"])
            return self._graphs[key]
        if key not in self._graphs:
            stacked = {"auto": "auto", "stacked": "always", "loop": "never"}[self.fused]
            self._graphs[key] = InferenceGraph(list(self.members), TTA_VIEWS[self.tta], dtype, stacked, self.stacked_max_batch)
        if not compiled:
            return self._graphs[key]
        if key not in self._compiled:
            self._compiled[key] = torch.compile(self._graphs[key], dynamic=False, options={"freezing": True})
        return self._compiled[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Member probabilities ``(B, M, C)`` float32 for a preprocessed batch ``(B, in_chans, S, S)``.

        With test-time augmentation each member's output is its mean over the views of the
        face (one batch of all views), so member disagreement reflects the model, not the
        exact pose or framing. In evaluation mode it runs the :meth:`inference_graph`
        (weights in the compute dtype); training and ``fused='vmap'`` run under autocast.
        """
        if not self.training and self._graph_path():
            return self.inference_graph(x.device)(x)
        views = TTA_VIEWS[self.tta] if not self.training else TTA_VIEWS["none"]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.uses_bf16(x.device)):
            return _over_views(self._forward_members, x, views)

    def _forward_members(self, x: torch.Tensor) -> torch.Tensor:
        # evaluation runs the inference graph: what arrives here is training or fused='vmap'
        if not self.training and self.num_members > 1 and self.fused == "vmap":
            return self.forward_vmap(x)
        return self.forward_loop(x)

    #: Faces per forward pass in :meth:`predict_proba` on the CPU. Larger chunks have
    #: activations above glibc's largest mmap threshold (32 MB), which are mapped and
    #: page-faulted afresh on every call: at 512 faces that cost ~40 % of the time in kernel
    #: page faults (measured).
    forward_chunk = 64

    #: Whether eager CPU :meth:`predict_proba` calls of two or more chunks run them side by
    #: side, one thread each (:meth:`_predict_threaded`); ``False``: one chunk at a time on
    #: torch's own threads.
    chunks_side_by_side = True

    @torch.inference_mode()
    def predict_proba(self, faces: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """Grayscale faces ``(N, H, W)`` uint8 -> member probabilities ``(N, M, C)`` float32,
        computed on the device the members live on."""
        self.eval()
        dev = self.device
        out = np.empty((len(faces), self.num_members, len(self.config.labels)), dtype=np.float32)
        # the chunking answers a CPU allocator cost; a GPU takes each batch whole
        chunk = self.forward_chunk if dev.type == "cpu" else batch_size
        full: Any = self  # runs the full chunks
        wants = self.compile_mode == "on" or (self.compile_mode == "auto" and len(faces) >= self.compile_min_faces and self._graph_path())
        if wants and not self.uses_int8(dev):  # torch.compile does not take the eager-quantized int8 graph
            full = self._compiled_step(chunk, dev)
        workers = self._cpu_workers(len(faces), chunk, dev) if full is self else 1
        if workers > 1:
            return self._predict_threaded(faces, out, chunk, workers, progress)
        starts = range(0, len(faces), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="ensemble", unit="batch", leave=False)
        for s in starts:
            x = preprocess(faces[s : s + batch_size], self.config).to(dev)
            for c in range(0, len(x), chunk):
                xc = x[c : c + chunk]
                step = full if len(xc) == chunk else self  # the compiled graph knows one batch shape
                out[s + c : s + c + len(xc)] = step(xc).cpu().numpy()
        return out

    @torch.inference_mode()
    def embed(self, faces: np.ndarray, batch_size: int = 256) -> "Embedded":
        """Gray faces ``(N, H, W)`` uint8 -> :class:`Embedded`: member probabilities as
        :meth:`predict_proba` gives them (softmax per view, then the mean over the model's
        test-time views), and each member's penultimate features and logits, both averaged
        over the views. The features feed density shift scores (:mod:`ferroute.shift`).
        A plain member loop, in bf16 where :meth:`predict_proba` runs in bf16."""
        self.eval()
        views = TTA_VIEWS[self.tta]
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for s in range(0, len(faces), batch_size):
            x = preprocess(faces[s : s + batch_size], self.config).to(self.device)
            xv = torch.cat([view(x, *v) for v in views]).contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.uses_bf16(x.device)):
                out = [features_and_logits(m, xv) for m in self.members]
            f = torch.stack([o[0].float() for o in out], 1)  # (V*B, M, D)
            lg = torch.stack([o[1].float() for o in out], 1)  # (V*B, M, C)

            def per_face(t: torch.Tensor) -> np.ndarray:
                return t.view(len(views), len(x), *t.shape[1:]).mean(0).cpu().numpy()

            parts.append((per_face(lg.softmax(-1)), per_face(f), per_face(lg)))
        return Embedded(*(np.concatenate(p) for p in zip(*parts)))

    def _cpu_workers(self, n_faces: int, chunk: int, device: torch.device) -> int:
        """Threads for an eager CPU :meth:`predict_proba` call: one per torch thread when there
        are at least two chunks to share, else 1 (one chunk at a time, torch's own threads).
        Only with OpenMP, whose thread count each thread sets for itself."""
        n = torch.get_num_threads()
        shared = self.chunks_side_by_side and device.type == "cpu" and self._graph_path() and n > 1 and n_faces >= 2 * chunk
        return n if shared and torch.backends.openmp.is_available() else 1

    def _predict_threaded(self, faces: np.ndarray, out: np.ndarray, chunk: int, workers: int, progress: bool) -> np.ndarray:
        """:meth:`predict_proba` on the CPU with ``workers`` chunks side by side, each on one
        thread (torch's intra-op threads set to 1 there). The small convolutions of a 64-face
        chunk split across cores spend much of their time forking and joining; whole chunks
        side by side do not, and the float work between the convolutions (views, pooling,
        softmax, preprocessing) runs in parallel too. The fast model's int8 graph ran 1.6x
        faster this way on the 2-core machine (``benchmarks/bench_inference.py``, the rows
        ``one chunk at a time``), with identical outputs. Outputs do not depend on where a
        face sits in the batch: every chunk runs single-threaded."""
        dev = torch.device("cpu")
        graph = self.inference_graph(dev)  # built once here, not raced for by the workers
        threads = torch.get_num_threads()

        def run(s: int) -> int:
            torch.set_num_threads(1)  # this thread's OpenMP/MKL pools; process default restored below
            with torch.inference_mode():  # thread-local, like grad mode
                x = preprocess(faces[s : s + chunk], self.config)
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

    def _compiled_step(self, chunk: int, device: torch.device) -> Any:
        """The compiled inference graph, compiled now on a ``chunk``-face batch (once per setting:
        later calls reuse it); ``self`` (eager) with a warning when compiling fails."""
        warm = (self._graph_key(device), chunk)
        try:
            graph = self.inference_graph(device, compiled=True)
            if warm not in self._warmed:
                graph(torch.zeros(chunk, self.config.in_chans, self.config.input_size, self.config.input_size, device=device))
                self._warmed.add(warm)
            return graph
        except Exception as exc:  # no C++ toolchain, unsupported platform, ...: eager still works
            warnings.warn(f"torch.compile of the ensemble failed, running eagerly ({type(exc).__name__}: {exc})", stacklevel=3)
            self.compile_mode = "off"
            self._compiled, self._warmed = {}, set()
            return self

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``member_<k>.safetensors`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for k, m in enumerate(self.members):
            save_member(m, d / f"member_{k}.safetensors")
        write_config(d, self.config, self.num_members, self.meta)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Ensemble":
        """Rebuild an ensemble from a model directory (safetensors only, nothing unpickled).

        Every way a folder can be broken is a :class:`ModelError` naming the file and what to
        do: no or invalid ``config.json``, options off the allow-list, damaged or missing
        weights, wrong shapes or keys, labels that do not match the outputs, and weights that
        give every input the same answer (zeroed or untrained: see :func:`check_outputs`)."""
        d = Path(directory)
        cfg_path = d / "config.json"
        if not cfg_path.is_file():
            raise ModelError(f"{d}: not a ferroute model directory (no config.json)")
        try:
            raw = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{cfg_path}: invalid JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ModelError(f"{cfg_path}: format is {raw.get('format') if isinstance(raw, dict) else None!r}, expected {FORMAT!r}")
        try:
            cfg = BackboneConfig.from_dict(raw["backbone"])
            n = int(raw["members"])
            if not 1 <= n <= 64:
                raise ValueError(f"members must be 1..64, got {n}")
            meta = raw.get("meta", {})
            if not isinstance(meta, dict):
                raise ValueError("meta must be an object")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{cfg_path}: {type(exc).__name__}: {exc} (re-save the model with ferroute train)") from None
        members = []
        for k in range(n):
            path = d / f"member_{k}.safetensors"
            if not path.is_file():
                raise ModelError(f"{path}: member weights missing ({n} members declared)")
            try:
                m = build_from_config(cfg)
            except (TypeError, ValueError, ImportError) as exc:
                raise ModelError(f"{cfg_path}: {exc}") from None
            try:
                state = load_file(path)
            except Exception as exc:  # safetensors raises its own error types on damaged files
                raise ModelError(f"{path}: damaged weights file ({type(exc).__name__}: {exc}); copy the model folder again") from None
            try:
                m.load_state_dict(state)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()
                raise ModelError(f"{path}: weights do not fit the architecture in config.json ({'; '.join(x.strip() for x in first[:3])})") from None
            members.append(m.eval())
        ens = cls(members, cfg, meta=meta)
        check_outputs(ens, d)
        return ens


#: faces the loaded ensemble is asked about once, to catch weights that cannot be right
_PROBE = np.stack([np.full((48, 48), 0, np.uint8), np.full((48, 48), 255, np.uint8),
                   np.tile(np.arange(0, 240, 5, dtype=np.uint8), (48, 1)), np.tile(np.arange(0, 240, 5, dtype=np.uint8)[:, None], (1, 48)),
                   np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)])


def check_outputs(ens: "Ensemble", where: Path) -> None:
    """Refuse an ensemble whose outputs cannot be right: not one probability per label,
    not finite, or the same for every probe input in every member (zeroed weights)."""
    with torch.no_grad():
        x = preprocess(_PROBE, ens.config)
        outs = torch.stack([m(x).float() for m in ens.members])  # (M, 5, C)
    if outs.shape[-1] != len(ens.config.labels):
        raise ModelError(f"{where}: the members give {outs.shape[-1]} outputs but config.json names {len(ens.config.labels)} labels")
    if not torch.isfinite(outs).all():
        raise ModelError(f"{where}: the weights give non-finite outputs (NaN or inf); the model folder is damaged")
    if float((outs - outs[:, :1]).abs().max()) < 1e-6:
        raise ModelError(f"{where}: every input gets the same output in every member: the weights are empty (zeroed) or untrained")


def how_it_runs(model: Any) -> dict[str, Any]:
    """Views, device, arithmetic, backend and compile state of a model's inference (an
    :class:`Ensemble` or an onnxruntime one, which runs on the CPU), for reports and the
    server's model info."""
    dev = model.device if isinstance(model, Ensemble) else torch.device("cpu")
    return {
        "tta": model.tta,
        "device": str(dev),
        "precision": "int8" if getattr(model, "uses_int8", lambda d: False)(dev) else "bf16" if getattr(model, "uses_bf16", lambda d: False)(dev) else "fp32",
        "backend": type(model).__name__,
        "compiled": bool(getattr(model, "is_compiled", False)),
    }


def save_member(model: nn.Module, path: Path) -> None:
    """Save one member's state dict as safetensors (contiguous, unshared tensors)."""
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(path))


def write_config(directory: Path, cfg: BackboneConfig, members: int, meta: dict[str, Any]) -> None:
    """Write the model directory's ``config.json``."""
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "members": members, "backbone": cfg.to_dict(), "meta": meta}
    (directory / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
