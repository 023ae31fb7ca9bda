"""Deep Ensemble: M backbones of one architecture, run as one fused forward pass.

A model directory holds ``config.json`` (backbone config, member count, training record),
``member_<k>.safetensors`` per member and, once calibrated, ``router.json``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..engine.sense import check_model, probe_inputs
from .backbones import BackboneConfig, ModelError, build_from_config, preprocess
from .graphs import TTA_VIEWS, _softmax, view
from .runtime import Embedded, RunOptions, Runtime

__all__ = ["Ensemble", "Embedded", "ModelError", "RunOptions", "TTA_VIEWS", "preprocess", "view", "how_it_runs"]

FORMAT = "ferroute-ensemble"
FORMAT_VERSION = 1


class Ensemble(nn.Module):
    """M members sharing one :class:`BackboneConfig`; outputs probabilities ``(B, M, C)``.

    What the model *is*: members, config (labels, input), ``meta`` (training record, stored
    inference settings, int8 scales), save/load. How it runs is its :attr:`runtime`, built
    from one :class:`RunOptions` (``options=``, else the settings stored in ``meta``) and
    swapped with :meth:`configure`.
    """

    def __init__(self, members: list[nn.Module], config: BackboneConfig, meta: dict[str, Any] | None = None,
                 options: RunOptions | None = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(m.to(memory_format=torch.channels_last) for m in members)
        self.config = config
        self.meta: dict[str, Any] = copy.deepcopy(meta or {})  # configure() writes into its nested dicts
        stored = self.meta.setdefault("inference", {})
        int8 = stored.get("int8")
        if int8 is not None and "tta" not in int8:  # stored before the record named its views: the model's own
            stored["int8"] = {**int8, "tta": str(stored.get("tta", "none"))}
        if options is None:
            options = RunOptions(tta=str(stored.get("tta", "none")), precision=str(stored.get("precision", "fp32")))
        self.runtime = Runtime(self, options)
        self._record_options()
        self.eval()

    def configure(self, **changes: Any) -> "Ensemble":
        """Run from now on with :class:`RunOptions` ``changes`` (``tta='hflip'``,
        ``precision='bf16'``, ``compile='off'``, ``fused='loop'``, ``chunk=32``, ...): one new
        :class:`Runtime`; tta and precision are recorded in :attr:`meta` (``save`` keeps them)."""
        self.runtime = Runtime(self, self.runtime.options.replace(**changes))
        self._record_options()
        return self

    def _record_options(self) -> None:
        self.meta["inference"].update(tta=self.runtime.options.tta, precision=self.runtime.options.precision)

    @property
    def options(self) -> RunOptions:
        """How the model runs now (:attr:`runtime`'s options)."""
        return self.runtime.options

    @property
    def tta(self) -> str:
        return self.options.tta

    @property
    def precision(self) -> str:
        return self.options.precision

    @property
    def num_members(self) -> int:
        return len(self.members)

    @property
    def device(self) -> torch.device:
        """The device the members live on (where :meth:`predict_proba` runs them)."""
        return next(self.parameters()).device

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "Ensemble":
        if "runtime" in self.__dict__:
            self.runtime.reset()  # .to(device/dtype) must not leave copies behind
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> "Ensemble":
        if mode and "runtime" in self.__dict__:  # weights may change while training: rebuild the copies afterwards
            self.runtime.reset()
        return super().train(mode)

    @property
    def is_quantized(self) -> bool:
        """Whether int8 activation scales have been fitted (:meth:`quantize`)."""
        return "int8" in self.meta["inference"]

    @property
    def int8_tta(self) -> str | None:
        """The test-time views the int8 scales were fitted on (``None`` before :meth:`quantize`)."""
        int8 = self.meta["inference"].get("int8")
        return None if int8 is None else int8["tta"]

    def quantize(self, faces: np.ndarray, max_faces: int = 1024, batch_size: int = 256) -> "Ensemble":
        """Fit the int8 activation scales on calibration faces ``(N, H, W)`` uint8 (FERPlus
        validation faces, say; no labels needed), keep them in :attr:`meta` (``save`` stores
        them) and run in precision ``int8`` from now on."""
        self.meta["inference"]["int8"] = self.runtime.quantize(faces, max_faces, batch_size)
        return self.configure(precision="int8")

    def run_info(self) -> dict[str, Any]:
        """Views, device, arithmetic, backend and compile state, for reports and the server's model info."""
        return _run_info(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Member probabilities ``(B, M, C)`` float32 for a preprocessed batch ``(B, in_chans, S, S)``.

        In evaluation mode the :attr:`runtime` runs it (views, precision, fused graph);
        training runs the plain member loop on the one view, under bf16 autocast where the
        precision asks for it."""
        if not self.training:
            return self.runtime.forward(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.runtime.uses_bf16(x.device)):
            return self.forward_loop(x)

    def forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        """A loop over members on a channels-last batch. ``(B, ...) -> (B, M, C)`` probabilities."""
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.stack([_softmax(m(x)) for m in self.members], dim=1)

    def predict_proba(self, faces: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """Grayscale faces ``(N, H, W)`` uint8 -> member probabilities ``(N, M, C)`` float32
        (:meth:`Runtime.predict_proba`)."""
        return self.runtime.predict_proba(faces, batch_size, progress)

    def embed(self, faces: np.ndarray, batch_size: int = 256) -> Embedded:
        """Gray faces ``(N, H, W)`` uint8 -> :class:`Embedded` probabilities, penultimate
        features ``(N, M, D)`` and logits (:meth:`Runtime.embed`)."""
        return self.runtime.embed(faces, batch_size)

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
    def load(cls, directory: str | Path, options: RunOptions | None = None, partial: bool = False) -> "Ensemble":
        """Rebuild an ensemble from a model directory (safetensors only, nothing unpickled).

        Every way a folder can be broken is a :class:`ModelError` naming the file and what to
        do: no or invalid ``config.json``, options off the allow-list, damaged or missing
        weights, wrong shapes or keys, labels that do not match the outputs, and weights that
        give every input the same answer (zeroed or untrained: see :func:`check_outputs`).

        ``partial`` also reads a ``ferroute train`` folder still in progress (no ``config.json``
        until every member exists): its finished members, as ``train_log.json`` lists them."""
        d = Path(directory)
        cfg_path = d / "config.json"
        if partial and not cfg_path.is_file() and (d / "train_log.json").is_file():
            cfg, ks = _in_progress(d)
            return cls._load_members(d, cfg, ks, {}, options)  # no meta before config.json is written
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
        return cls._load_members(d, cfg, list(range(n)), meta, options)

    @classmethod
    def _load_members(cls, d: Path, cfg: BackboneConfig, ks: list[int], meta: dict[str, Any],
                      options: RunOptions | None) -> "Ensemble":
        """The members ``ks`` of folder ``d``, built from ``cfg`` and checked (:meth:`load`)."""
        cfg_path = d / "config.json"
        members = []
        for k in ks:
            path = d / f"member_{k}.safetensors"
            if not path.is_file():
                raise ModelError(f"{path}: member weights missing ({len(ks)} members declared)")
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
        ens = cls(members, cfg, meta=meta, options=options)
        check_outputs(ens, d)
        return ens


def _in_progress(d: Path) -> tuple[BackboneConfig, list[int]]:
    """The config and finished members of a training folder without ``config.json``."""
    from .backbones import check_config_kwargs, create_backbone

    path = d / "train_log.json"
    try:
        log = json.loads(path.read_text())
        kwargs = check_config_kwargs(log["backbone"], log.get("backbone_kwargs", {}))  # the same allow-list as config.json's
        _, cfg = create_backbone(log["backbone"], pretrained=False, **kwargs)
        ks = sorted(int(k) for k in log.get("members", {}))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable training log ({type(exc).__name__}: {exc})") from None
    if not ks:
        raise ModelError(f"{d}: no finished member yet ({path} lists none); let `ferroute train` finish one")
    return cfg, ks


def check_outputs(ens: "Ensemble", where: Path) -> None:
    """Refuse an ensemble whose outputs cannot be right: not one probability per label, not
    finite, or a member that gives every probe the same answer (zeroed weights): the same
    checks as a graph gets (:func:`ferroute.engine.sense.check_model`), labels' order included."""
    with torch.no_grad():
        outs = torch.stack([m(preprocess(probe_inputs(), ens.config)).float() for m in ens.members])  # (M, 7, C)
    if outs.shape[-1] != len(ens.config.labels):
        raise ModelError(f"{where}: the members give {outs.shape[-1]} outputs but config.json names {len(ens.config.labels)} labels")
    if not torch.isfinite(outs).all():
        raise ModelError(f"{where}: the weights give non-finite outputs (NaN or inf); the model folder is damaged")
    check_model(torch.softmax(outs, -1).transpose(0, 1).numpy(), where, ens.num_members, ens.config.labels)


def how_it_runs(model: Any) -> dict[str, Any]:
    """The :meth:`run_info` of an :class:`Ensemble` or an onnxruntime one."""
    return model.run_info()


def _run_info(model: "Ensemble") -> dict[str, Any]:
    """Views, device, arithmetic, backend and compile state of a model's inference (an
    :class:`Ensemble` or an onnxruntime one, which runs on the CPU), for reports and the
    server's model info."""
    dev = model.device
    return {
        "tta": model.tta,
        "device": str(dev),
        "precision": "int8" if model.runtime.uses_int8(dev) else "bf16" if model.runtime.uses_bf16(dev) else "fp32",
        "backend": type(model).__name__,
        "compiled": model.runtime.is_compiled,
        "threads": torch.get_num_threads(),
    }


def save_member(model: nn.Module, path: Path) -> None:
    """Save one member's state dict as safetensors (contiguous, unshared tensors)."""
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(path))


def write_config(directory: Path, cfg: BackboneConfig, members: int, meta: dict[str, Any]) -> None:
    """Write the model directory's ``config.json``."""
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "members": members, "backbone": cfg.to_dict(), "meta": meta}
    (directory / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
