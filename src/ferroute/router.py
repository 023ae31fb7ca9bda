"""The user-facing pipeline: image -> face crops -> ensemble -> [batch's emotion mix] -> decomposition -> decision -> report."""

from __future__ import annotations

import copy
import json
from itertools import islice
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from .engine.config import ModelError
from .vision.faces import CROP_SIZE, FaceDetector, Prepared, find_faces
from .vision.images import MAX_PIXELS, ImageInput, MemoryBudget
from .decide.labelshift import PriorAdapter
from .engine.backends import TRAIN_EXTRA, backend_loader  # noqa: F401  (TRAIN_EXTRA: re-exported for older imports)
from .engine.onnxrun import GRAPH_FILE, OnnxEnsemble, load_graph
from .engine.site import check_base, is_site, read_site
from .decide.routing import NotCalibratedError, UncertaintyRouter
from .decide.shift import SIGNALS_FILE, Signal, load_signals
from .stream import route_stream

if TYPE_CHECKING:
    from .train.ensemble import Ensemble

#: Inference backends: ``onnx`` runs the graph shipped in the model folder (the core, no torch);
#: ``torch`` runs the safetensors members (the ``train`` extra); ``auto`` is onnx where the
#: folder has its graph, else torch.
BACKENDS = ("auto", "onnx", "torch")

#: Models embedded in the package, by name: (ensemble folder, folder of its LDL baseline).
#: ``default`` is the quality model; ``fast`` runs every stage at half resolution and in int8
#: on x86 CPUs (about 3.7x the throughput here, a lower shift AUROC: see the README's results).
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {"default": ("default", "ldl"), "fast": ("fast", "fast-ldl")}


#: Images :meth:`FERRouter.route_many` decodes before their faces go on, so a long iterable
#: holds one group's inputs at a time. With its default ensemble batch (64 faces) it stayed at
#: +335 MB over 300 and over 1,200 512x512 photos from a generator (AMD EPYC, 2 cores,
#: 2026-12-07); with 256-face batches at +0.8-1.5 GB (onnxruntime's and YuNet's buffers for 256
#: faces), for about 12 % more faces/s.
DECODE_GROUP = 32

#: The report of an image without a face.
NO_FACE: dict[str, Any] = {"decision": "no_face", "reason": "No face was found in the image, so no emotion is reported.",
                           "emotion": None, "box": None, "score": None, "landmarks": None}


def _models_root() -> Path:
    return Path(str(resources.files("ferroute") / "models"))


def default_model_dir() -> Path:
    """The ensemble embedded in the package."""
    return _models_root() / EMBEDDED_MODELS["default"][0]


def resolve_model_dir(model: str | Path | None = None) -> Path:
    """A model directory from a path, or from an embedded model's name (``default``, ``fast``)
    when no such path exists; ``None`` is the default model."""
    if model is None:
        return default_model_dir()
    if not Path(model).exists() and str(model) in EMBEDDED_MODELS:
        return _models_root() / EMBEDDED_MODELS[str(model)][0]
    return Path(model)


def default_ldl_dir(model_dir: str | Path | None = None) -> Path:
    """The single LDL baseline embedded in the package: the one trained like ``model_dir``
    when that is an embedded model, else the default model's."""
    root = _models_root()
    if model_dir is not None:
        for ens, ldl in EMBEDDED_MODELS.values():
            if Path(model_dir).resolve() == (root / ens).resolve():
                return root / ldl
    return root / EMBEDDED_MODELS["default"][1]


def load_router(model_dir: str | Path) -> UncertaintyRouter:
    """The calibrated router stored beside a model (``router.json``)."""
    path = Path(model_dir) / "router.json"
    if not path.is_file():
        raise NotCalibratedError(f"{path}: no calibrated router; run `ferroute calibrate --model {model_dir}` first")
    try:
        return UncertaintyRouter.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: damaged router ({type(exc).__name__}: {exc}); run `ferroute calibrate --model {model_dir}` again") from None


def batch_shape(n: int) -> int:
    """The batch size ``n`` faces are padded to before the ensemble: the next power of two up
    to 32, then the next multiple of 32. A handful of shapes, whatever mix of requests or
    photos arrives (the one padding rule, for the server's batcher and every other caller)."""
    return 0 if n <= 0 else 1 << (n - 1).bit_length() if n <= 32 else -(-n // 32) * 32


class FERRouter:
    """Route faces in any photo: ``accept``, ``ambiguous``, ``reject`` or ``no_face``.

    Outputs are plain JSON-able dicts, one per face.
    """

    def __init__(self, ensemble: "Ensemble | OnnxEnsemble", router: UncertaintyRouter, detector: FaceDetector | None = None,
                 model_dir: Path | None = None, signals: "dict[str, Signal] | None" = None, priors: PriorAdapter | None = None):
        self.ensemble = ensemble
        self.router = router
        self.detector = detector or FaceDetector()
        self.model_dir = model_dir
        self.signals = signals or {}
        self.priors = priors
        #: the emotion mix ``(C,)`` outputs are moved to (:meth:`adapt_to`); None: the model's own
        self.mix: np.ndarray | None = None
        #: the site overlay this router was loaded through (``ferroute calibrate-site``), else None
        self.site: dict[str, Any] | None = None
        missing = [k for k in router.needs if k not in self.signals]
        if missing:
            where = model_dir / SIGNALS_FILE if model_dir else "signals="
            raise ModelError(f"{where}: the router rejects on {router.shift!r} but the fitted signal(s) {missing} are missing; "
                             "run `ferroute calibrate` again for this model")

    @classmethod
    def load(cls, model_dir: str | Path | None = None, backend: str = "auto", device: str = "cpu",
             threads: int | None = None, ambiguous_below: float | None = None) -> "FERRouter":
        """Load a model directory or embedded model name (default: the embedded ensemble) with its calibrated router.

        ``backend='onnx'`` runs the folder's ``ensemble.onnx`` with onnxruntime on the CPU (no
        torch needed; ``threads`` intra-op threads, default the CPUs this process may use);
        ``'torch'`` runs the safetensors members on ``device`` (``cpu``, ``cuda``, ``cuda:N``;
        needs ``ferroute[train]``); ``'auto'`` is onnx where the folder has its graph and the
        device is the CPU, else torch. ``ambiguous_below``: the agreement level under which a
        face is ``ambiguous`` (default: the model's, chosen on validation faces).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if model_dir is not None and is_site(model_dir):  # a site overlay: the base model, the site's threshold
            site = read_site(model_dir)
            base = resolve_model_dir(site["base_model"])
            check_base(model_dir, site, base)
            out = cls.load(base, backend=backend, device=device, threads=threads, ambiguous_below=ambiguous_below)
            out.router.use_site_threshold(site)
            out.site = {"dir": str(Path(model_dir).resolve()), **{k: site[k] for k in ("base_model", "base_digest", "promise") if k in site}}
            return out
        d = resolve_model_dir(model_dir)
        if not d.is_dir():
            raise ModelError(f"{d}: model directory not found (embedded models: {', '.join(EMBEDDED_MODELS)})")
        if not (d / "config.json").is_file():
            raise ModelError(f"{d}: not a ferroute model directory (no config.json)")
        if backend == "auto":
            backend = "onnx" if (d / GRAPH_FILE).is_file() and device == "cpu" else "torch"
        if backend == "onnx" and device != "cpu":
            raise ValueError(f"the onnx backend runs on the CPU; use backend torch for device {device!r}")
        router = load_router(d)
        router.ambiguous_below = ambiguous_below
        try:
            signals, priors = load_signals(d), PriorAdapter.load(d)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        if backend == "onnx" and (d / GRAPH_FILE).is_file():
            ens: Ensemble | OnnxEnsemble = load_graph(d, threads=threads)
        else:
            ens = _torch_ensemble(d, backend, device, threads)
        return cls(ens, router, model_dir=d, signals=signals, priors=priors)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.ensemble.config.labels

    def route_faces(self, faces: np.ndarray, batch_size: int = 256) -> list[dict[str, Any]]:
        """Route already-cropped gray faces ``(N, 48, 48)`` uint8; one report per face.

        Batches are padded to :func:`batch_shape` faces: a stream of batches of every size would
        grow the kernels' per-shape caches (and the process's memory) with every new size."""
        faces = np.asarray(faces, dtype=np.uint8)
        n = len(faces)
        padded = batch_shape(n)
        if padded > n:
            faces = np.concatenate([faces, np.zeros((padded - n, *faces.shape[1:]), np.uint8)])
        probs = self.ensemble.predict_proba(faces, batch_size=batch_size)[:n]
        if self.mix is not None:
            probs = self.priors.reweight(probs, self.mix)
        signals = {k: self.signals[k].score(faces[:n]) for k in self.router.needs}
        return self.router.route(probs, self.labels, signals)

    def adapt_to(self, inputs: np.ndarray | Iterable[ImageInput], batch_size: int = 256) -> FERRouter:
        """A router for faces from the same source as ``inputs``: gray crops ``(N, 48, 48)``
        uint8, or images whose faces are found first. It estimates their emotion mix
        (:class:`ferroute.decide.labelshift.PriorAdapter`; at least 100 faces) and moves every later
        output to it; ``self`` is left as it was. Worth it for a set whose mix differs from
        FERPlus's (posed expressions: CK+ accuracy 0.551 -> 0.664); on a FERPlus-like mix it costs
        0.2-0.4 points (``docs/records/studies/label_shift.txt``)."""
        if self.priors is None:
            where = self.model_dir or "this model"
            raise ModelError(f"{where}: no priors.json, so the model cannot adapt to a new emotion mix; "
                             "run `ferroute calibrate` again for this model")
        if isinstance(inputs, np.ndarray):
            if inputs.ndim != 3 or inputs.shape[1:] != CROP_SIZE:
                raise ValueError(f"adapt_to takes gray face crops (N, 48, 48) or a list of images, got an array of shape {inputs.shape}")
            faces = inputs.astype(np.uint8)
        else:
            crops = self.prepare(inputs).crops
            faces = np.stack(crops) if crops else np.zeros((0, *CROP_SIZE), np.uint8)
        out = copy.copy(self)
        out.mix = self.priors.estimate(self.ensemble.predict_proba(faces, batch_size=batch_size))
        return out

    def route(self, image: ImageInput, name: str | None = None) -> list[dict[str, Any]]:
        """Every face in ``image`` (path, bytes, PIL image or array); ``[{'decision': 'no_face'}]`` if none.

        Raises :class:`ImageError` when the input cannot be decoded.
        """
        return self.route_many([image], names=[name] if name else None, raise_errors=True)[0]["faces"]

    def route_many(
        self,
        images: Iterable[ImageInput],
        names: list[str] | None = None,
        batch_size: int = 64,
        raise_errors: bool = False,
        infer: Callable[[np.ndarray], list[dict[str, Any]]] | None = None,
    ) -> list[dict[str, Any]]:
        """Route a batch of images: one ``{'source', 'faces'}`` or ``{'source', 'error'}`` per image.

        Images are decoded and their faces found ``batch_size`` at a time, and each group's faces
        go through the ensemble together (or through ``infer``, e.g. a server's cross-request
        batcher), so memory holds one group's pictures, not every picture of a long iterable
        (only the result dicts accumulate; :meth:`route_stream` yields them instead). A bad
        image is reported on its own and the others still complete.
        """
        out: list[dict[str, Any]] = []
        it, pending, done = iter(images), [], False
        while not done:  # DECODE_GROUP images at a time, consumed lazily; the ensemble on batch_size faces
            seen = len(out) + sum(len(p.items) for p in pending)
            prep = self.prepare(islice(it, DECODE_GROUP), names[seen : seen + DECODE_GROUP] if names else None, raise_errors)
            done = len(prep.items) < DECODE_GROUP
            pending.append(prep)
            if done or sum(len(p.crops) for p in pending) >= batch_size:
                out.extend(self.finish(Prepared.concat(pending), batch_size=batch_size, infer=infer))
                pending = []
        return out

    def route_stream(
        self,
        images: Iterable[ImageInput],
        names: Iterable[str] | None = None,
        batch_size: int = 64,
        workers: int = 2,
    ) -> Iterator[dict[str, Any]]:
        """Route images as a stream: one item per image, in input order, as soon as its batch is
        done (see :func:`ferroute.stream.route_stream`); memory stays flat however many come."""
        return route_stream(self, images, names, batch_size=batch_size, workers=workers, detector=self.detector)

    def prepare(
        self,
        images: Iterable[ImageInput],
        names: list[str] | None = None,
        raise_errors: bool = False,
        max_pixels: int = MAX_PIXELS,
        budget: MemoryBudget | None = None,
    ) -> Prepared:
        """Decode images and crop their faces (no model): the I/O half of :meth:`route_many`,
        safe to run in another thread while the model works on the previous batch."""
        return find_faces(images, self.detector, names, raise_errors=raise_errors, max_pixels=max_pixels, budget=budget)

    def finish(self, prep: Prepared, batch_size: int = 256, infer: Callable[[np.ndarray], list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
        """Run the ensemble on prepared crops and fill in each image's faces."""
        items = prep.items
        if prep.crops:
            faces_arr = np.stack(prep.crops)
            reports = infer(faces_arr) if infer is not None else self.route_faces(faces_arr, batch_size=batch_size)
            for (i, face), rep in zip(prep.owners, reports):
                rep["box"] = list(face.box)
                rep["score"] = face.score
                rep["landmarks"] = [list(p) for p in face.landmarks] if face.landmarks else None
                items[i]["faces"].append(rep)
        for it in items:
            if "faces" in it and not it["faces"]:
                it["faces"] = [dict(NO_FACE)]
        return items


def _torch_ensemble(d: Path, backend: str, device: str, threads: int | None) -> "Ensemble | OnnxEnsemble":
    """The safetensors members run by the ``torch`` backend plugin (the ``train`` extra), or for
    ``onnx`` on a folder without its graph, exported to a cached graph first; a clear error
    where it is not installed."""
    return backend_loader("torch", d)(d, backend, device, threads)


def load(model_dir: str | Path | None = None, backend: str = "auto", device: str = "cpu", threads: int | None = None,
         ambiguous_below: float | None = None) -> FERRouter:
    """``ferroute.load()``: the embedded default model, or a model directory, ready to route
    (its ONNX graph on onnxruntime where it has one, else torch on ``device``); faces whose
    predicted agreement is under ``ambiguous_below`` are ``ambiguous`` (default: the model's level)."""
    return FERRouter.load(model_dir, backend=backend, device=device, threads=threads, ambiguous_below=ambiguous_below)
