"""The graphs an ensemble runs for inference: fused members, test-time views and int8.

What a model *is* (members, config, weights, save/load) lives in :mod:`ferroute.train.ensemble`;
how it runs (device, precision, views, fusion, compile, threads) in :mod:`ferroute.train.runtime`.
This module holds the graphs the runtime builds to run the members fast, with the same outputs:
BatchNorm folded into convolutions (:func:`fold_batchnorm`), CNN members fused into one
grouped-convolution network (:class:`StackedCNN`), a ViT's patch embedding as one GEMM
(:class:`PatchLinear`), the whole evaluation pass as one module for ``torch.compile``
(:class:`InferenceGraph`) and its int8 form (:class:`QuantizedGraph`), and the test-time
views (:data:`TTA_VIEWS`, :func:`view`). Shapes: faces ``(B, C, S, S)`` in, member
probabilities ``(B, M, C)`` out.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .backbones import CompactCNN, ModelError, int8_supported


class StackedCNN(nn.Module):
    """M :class:`CompactCNN` members fused into one network of grouped convolutions.

    The first convolution sees the shared input, so its filters are simply concatenated;
    every later layer keeps each member's channels in its own group (``groups=M``). One
    forward pass computes exactly what the M members compute separately, with M times
    fewer operator launches. ``(B, 1, H, W) -> logits (B, M, C)``.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        m = len(members)
        self.m = m
        layers: list[nn.Module] = []
        feats = [list(mm.features) for mm in members]
        for i, layer in enumerate(feats[0]):
            if isinstance(layer, nn.Conv2d):
                first = i == 0
                conv = nn.Conv2d(layer.in_channels * (1 if first else m), layer.out_channels * m, layer.kernel_size,
                                 stride=layer.stride, padding=layer.padding, bias=layer.bias is not None, groups=1 if first else m)
                conv.weight.data.copy_(torch.cat([f[i].weight.data for f in feats], 0))
                if layer.bias is not None:  # members with BatchNorm folded in
                    conv.bias.data.copy_(torch.cat([f[i].bias.data for f in feats], 0))
                layers.append(conv)
            elif isinstance(layer, nn.BatchNorm2d):
                # BN is per channel, so the members' statistics simply stack along channels
                bn = nn.BatchNorm2d(layer.num_features * m, eps=layer.eps)
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, name).data.copy_(torch.cat([getattr(f[i], name).data for f in feats], 0))
                layers.append(bn)
            else:
                layers.append(copy.deepcopy(layer))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.weight = nn.Parameter(torch.stack([mm.head.weight.data for mm in members]))  # (M, C, F)
        self.bias = nn.Parameter(torch.stack([mm.head.bias.data for mm in members]))  # (M, C)
        ref = members[0].head.weight
        self.to(device=ref.device, dtype=ref.dtype)  # new layers start as float32 on the CPU
        self.eval().requires_grad_(False)  # an inference-only copy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.pool(self.features(x)).flatten(1)  # (B, M*F)
        f = f.view(f.shape[0], self.m, -1)  # (B, M, F)
        return torch.einsum("bmf,mcf->bmc", f, self.weight) + self.bias


#: Test-time views by name: (mirror, dx, dy) with shifts in pixels of a 48x48 face.
TTA_VIEWS: dict[str, tuple[tuple[bool, int, int], ...]] = {
    "none": ((False, 0, 0),),
    "hflip": ((False, 0, 0), (True, 0, 0)),
    "hflip-shift": ((False, 0, 0), (True, 0, 0), (False, 2, 0), (True, 2, 0)),
}


def view(x: torch.Tensor, mirror: bool, dx: int, dy: int) -> torch.Tensor:
    """One test-time view of a batch ``(B, C, S, S)``: optional mirror, then a shift by
    ``(dx, dy)`` pixels (scaled from 48 px to ``S``) with the border pixels repeated."""
    if mirror:
        x = x.flip(-1)
    if dx or dy:
        s = int(x.shape[-1])  # a constant in exported graphs: the input size is fixed
        dx, dy = round(dx * s / 48), round(dy * s / 48)
        p = max(abs(dx), abs(dy))
        x = F.pad(x, (p, p, p, p), mode="replicate")[..., p - dy : p - dy + s, p - dx : p - dx + s]
    return x


def _over_views(probs: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, views: tuple[tuple[bool, int, int], ...]) -> torch.Tensor:
    """Test-time augmentation: ``probs`` (``(V*B, ...) -> (V*B, M, C)`` probabilities) run once
    on all views of the batch ``x`` ``(B, C, S, S)``; each member's output averaged over the
    views -> ``(B, M, C)``."""
    if len(views) == 1:
        return probs(view(x, *views[0]))
    b = x.shape[0]
    p = probs(torch.cat([view(x, *v) for v in views]))
    return p.view(len(views), b, *p.shape[1:]).mean(0)


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, in float32 when the logits come out of bf16/fp16 autocast."""
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()
    return logits.softmax(-1)


def _all_compact_cnn(members: list[nn.Module]) -> bool:
    return all(isinstance(m, CompactCNN) for m in members)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of a :class:`CompactCNN` with every convolution -> BatchNorm pair
    merged into one biased convolution: the same outputs (to float32 rounding) with one
    pass over the activations fewer per layer."""
    model = copy.deepcopy(model).eval().requires_grad_(False)
    layers, merged = list(model.features), []
    i = 0
    while i < len(layers):
        conv, bn = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.groups == 1:
            new = fuse_conv_bn_eval(conv, bn)  # torch's own folding: w * g / sqrt(v + eps), b' = (b - m) * scale + beta
            merged.append(new.requires_grad_(False))
            i += 2
        else:
            merged.append(layers[i])
            i += 1
    model.features = nn.Sequential(*merged)
    return model


class PatchLinear(nn.Module):
    """A patchifying convolution (kernel = stride, no padding; a ViT's patch embedding) as one
    matrix product over the flattened patches: the same sums, but a GEMM where GPUs otherwise
    run a slow strided convolution (6 % of a dinov2_s14's time on an H200 for 1 % of its FLOPs).
    ``(B, C, H, W) -> (B, D, H // p, W // p)``, a channels-last view like the convolution's."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.p = conv.kernel_size[0]
        d = conv.out_channels
        # (D, C, p, p) -> (D, p*p*C): the order of a patch cut from a channels-last image
        self.weight = nn.Parameter(conv.weight.detach().permute(0, 2, 3, 1).reshape(d, -1).clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        p = self.p
        h, w = hh // p, ww // p
        patches = x[:, :, : h * p, : w * p].permute(0, 2, 3, 1).reshape(b, h, p, w, p, c)
        patches = patches.transpose(2, 3).reshape(b * h * w, p * p * c)
        return F.linear(patches, self.weight, self.bias).view(b, h, w, -1).permute(0, 3, 1, 2)

    @staticmethod
    def fits(m: nn.Module) -> bool:
        return (isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1 and m.kernel_size == m.stride and m.kernel_size[0] == m.kernel_size[1]
                and m.padding == (0, 0) and m.dilation == (1, 1) and m.groups == 1 and m.padding_mode == "zeros")


@torch.no_grad()
def inference_copy(model: nn.Module) -> nn.Module:
    """An evaluation-only copy of one member, rewritten for speed with the same outputs (to
    float rounding): a :class:`CompactCNN` with BatchNorm folded (:func:`fold_batchnorm`);
    any other backbone with its patchifying convolutions as :class:`PatchLinear`."""
    if _all_compact_cnn([model]):
        return fold_batchnorm(model)
    model = copy.deepcopy(model).eval().requires_grad_(False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if PatchLinear.fits(child):
                setattr(parent, name, PatchLinear(child))
    return model


class SharedTrunk(nn.Module):
    """Members whose frozen trunk is the same (MobileFaceNet members fine-tuned from SFace with
    the same ``frozen``: identical stem and first blocks, BatchNorm statistics included) as one
    network: the trunk runs once, then each member's own tail. Exactly the members' logits,
    ``(B, 3, S, S) -> (B, M, C)``; at 64 px with five blocks frozen the trunk is about 70 % of a
    member's time, so five members cost about 2.2 members instead of 5."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.trunk = members[0].frozen_trunk()
        self.tails = nn.ModuleList(m.tail() for m in members)

    @staticmethod
    def fits(members: list[nn.Module]) -> bool:
        """Whether every member has a frozen trunk and all of them hold the same tensors."""
        if len(members) < 2 or not all(hasattr(m, "frozen_trunk") and getattr(m, "frozen", 0) >= 1 for m in members):
            return False
        if len({m.frozen for m in members}) != 1:
            return False
        first = members[0].frozen_trunk().state_dict()
        return all(all(torch.equal(first[k], v) for k, v in m.frozen_trunk().state_dict().items()) for m in members[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.trunk(x)
        return torch.stack([t(y) for t in self.tails], dim=1)


class InferenceGraph(nn.Module):
    """An ensemble's whole evaluation pass as one module, the thing ``torch.compile`` sees.

    Test-time views, then the members as :func:`inference_copy` (BatchNorm folded into CNN
    convolutions, ViT patch embeddings as one GEMM) with weights already in the compute dtype
    (bf16 or float32: no per-call casts, no autocast); CNN members as one grouped-convolution
    network for small batches (or always, with ``stacked='always'``) and a member loop above;
    members sharing a frozen trunk as :class:`SharedTrunk` (the trunk once);
    softmax in float32, mean over views. ``(B, C, S, S)`` float32 -> ``(B, M, C)`` float32.
    """

    def __init__(self, members: list[nn.Module], views: tuple[tuple[bool, int, int], ...], dtype: torch.dtype,
                 stacked: str = "auto", stacked_max_batch: int = 64):
        super().__init__()
        self.members = nn.ModuleList(inference_copy(m).to(dtype=dtype, memory_format=torch.channels_last) for m in members)
        if not _all_compact_cnn(members):
            stacked = "never"
        self.stacked = StackedCNN(list(self.members)).to(memory_format=torch.channels_last) if stacked != "never" else None
        self.always_stacked = stacked == "always"
        self.shared = SharedTrunk(list(self.members)) if self.stacked is None and SharedTrunk.fits(members) else None
        self.views, self.dtype, self.stacked_max_batch = views, dtype, stacked_max_batch
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _over_views(self._probs, x, self.views)

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        if self.stacked is not None and (self.always_stacked or x.is_cuda or x.shape[0] <= self.stacked_max_batch):
            logits = self.stacked(x)
        elif self.shared is not None:
            logits = self.shared(x)
        else:
            logits = torch.stack([m(x) for m in self.members], dim=1)
        return logits.float().softmax(-1)


_QUANT_NOTICES = r".*(torch\.ao\.quantization is deprecated|quantized tensor creation functions)"
_quiet_lock = threading.Lock()
_quiet: dict[str, Any] = {"depth": 0, "filter": None}  # threads inside _quiet_quantization, and the filter entry they share


@contextlib.contextmanager
def _quiet_quantization() -> Iterator[None]:
    """Silence PyTorch's deprecation notices for its eager quantization API (present and
    working in the torch versions ferroute supports; a user cannot act on them). Kept over
    the maintained route (torchao's PT2E, lowered by inductor) because that ran the fast
    model 4x slower at the same agreement with float32: docs/records/studies/int8_pt2e.txt.

    Thread-safe, unlike ``warnings.catch_warnings``: :meth:`Ensemble.predict_proba` runs int8
    chunks on several threads at once. The first thread in adds one filter, the last one out
    removes that filter and nothing else.
    """
    with _quiet_lock:
        if _quiet["depth"] == 0:
            warnings.filterwarnings("ignore", message=_QUANT_NOTICES)
            _quiet["filter"] = warnings.filters[0]
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0:
                with contextlib.suppress(ValueError):  # someone reset the filters meanwhile
                    warnings.filters.remove(_quiet["filter"])


class QuantizedGraph(nn.Module):
    """A CNN ensemble's evaluation pass in int8 on the CPU (PyTorch eager static quantization
    on the x86 engine: oneDNN/FBGEMM kernels, VNNI or AMX-INT8 where the CPU has them).

    The grouped-convolution network of :class:`StackedCNN` with BatchNorm folded in and every
    convolution fused with its ReLU; weights int8 with one scale per output channel, activations
    uint8 with one scale per layer. Those activation scales are fitted once on calibration
    faces (:meth:`observe`, a histogram observer, then :meth:`finish`) and travel with the
    model as plain numbers (:meth:`activation_qparams`), so a loaded model rebuilds the same
    graph without data. Global pooling, the heads and softmax stay float32. Building one
    sets ``torch.backends.quantized.engine`` to ``x86``.
    ``(B, 1, S, S)`` float32 -> ``(B, M, C)`` float32.
    """

    #: faces per quantized forward (times the views): the int8 grouped convolutions ran
    #: fastest on small channels-last batches on the 2-core AMX machine
    chunk = 32

    def __init__(self, members: list[nn.Module], views: tuple[tuple[bool, int, int], ...],
                 qparams: dict[str, list[float]] | None = None):
        super().__init__()
        if not int8_supported():
            raise RuntimeError("int8 inference needs PyTorch's x86 quantized engine (an x86-64 CPU); use precision 'auto'")
        from torch.ao import quantization as tq
        from torch.ao.quantization.observer import (
            FixedQParamsObserver,
            HistogramObserver,
        )

        torch.backends.quantized.engine = "x86"
        stacked = StackedCNN([fold_batchnorm(m).float().cpu() for m in members])
        feats = stacked.features
        kids = list(feats.named_children())
        pairs = [[kids[i][0], kids[i + 1][0]] for i in range(len(kids) - 1)
                 if isinstance(kids[i][1], nn.Conv2d) and isinstance(kids[i + 1][1], nn.ReLU)]
        tq.fuse_modules(feats, pairs, inplace=True)
        self.quant, self.features, self.dequant = tq.QuantStub(), feats, tq.DeQuantStub()
        self.pool, self.m, self.views = stacked.pool, stacked.m, views
        self.register_buffer("weight", stacked.weight.detach().clone())  # (M, C, F)
        self.register_buffer("bias", stacked.bias.detach().clone())  # (M, C)
        weight_obs = tq.default_per_channel_weight_observer
        observed = [("quant", self.quant)] + [(f"features.{n}", mod) for n, mod in feats.named_children()
                                              if isinstance(mod, (nn.Conv2d, nn.Sequential))]
        self.observed = [n for n, _ in observed]  # layers whose outputs carry an activation scale
        if qparams is not None:
            missing = [n for n in self.observed if n not in qparams]
            if missing:
                raise ModelError(f"int8 activation scales missing for layers {missing}; recalibrate with precision int8")
        for name, mod in observed:
            if qparams is None:
                act = HistogramObserver.with_args(reduce_range=False)
            else:
                scale, zero_point = qparams[name]
                act = FixedQParamsObserver.with_args(scale=float(scale), zero_point=int(zero_point))
            mod.qconfig = tq.QConfig(activation=act, weight=weight_obs)
        self.dequant.qconfig = self.quant.qconfig  # convert swaps only stubs that carry a qconfig
        self.eval().requires_grad_(False)
        with _quiet_quantization():
            tq.prepare(self, inplace=True)
        self.converted = False
        if qparams is not None:
            self.finish()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        f = self.pool(self.dequant(self.features(self.quant(x)))).flatten(1)  # (B, M*F)
        f = f.view(f.shape[0], self.m, -1)
        return torch.einsum("bmf,mcf->bmc", f, self.weight) + self.bias

    @torch.inference_mode()
    def observe(self, x: torch.Tensor) -> None:
        """Record activation ranges on a batch of calibration faces ``(B, 1, S, S)``."""
        if self.converted:
            raise RuntimeError("this int8 graph is already converted; build a new one to recalibrate")
        for c in x.split(256):
            _over_views(self._logits, c, self.views)

    def activation_qparams(self) -> dict[str, list[float]]:
        """``{layer: [scale, zero_point]}`` of every quantized activation, JSON-able."""
        modules = dict(self.named_modules())
        out = {}
        for name in self.observed:
            scale, zp = modules[name].activation_post_process.calculate_qparams()
            out[name] = [float(scale), int(zp)]
        return out

    def finish(self) -> None:
        """Quantize the weights and freeze the activation scales (after :meth:`observe`)."""
        from torch.ao import quantization as tq

        with _quiet_quantization():
            tq.convert(self, inplace=True)
        self.converted = True

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.converted:
            raise RuntimeError("int8 graph not calibrated: call observe() on calibration faces, then finish()")
        with _quiet_quantization():
            return torch.cat([_over_views(lambda v: self._logits(v).softmax(-1), c, self.views) for c in x.split(self.chunk)])
