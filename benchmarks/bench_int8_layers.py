"""Where ``fast``'s int8 pass spends its time, layer by layer, and whether two bit-identical
rewrites of the layers the profiler blames make the whole pass faster.

    python benchmarks/bench_int8_layers.py [--rounds 60]

One 32-face chunk with mirror TTA (a batch of 64, as ``predict_proba`` runs it), one thread.
The rewrites: the 1-channel 4x4 stride-2 stem as a 1x1 convolution over gathered 4x4 patches
(16 input channels instead of 1), and the last 3x3 convolution, which runs on a 3x3 map, as a
grouped 1x1 convolution over each position's gathered 3x3 neighbourhood (9x the input
channels per group). Both gather uint8 codes, so their outputs equal the original's bit for
bit (checked). Whole-pass times are CPU seconds of this thread (``time.thread_time``),
the variants interleaved, so a busy host slows them alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from torch import nn


def one_by_one(conv: nn.Module, codes: torch.Tensor, groups: int = 1) -> nn.Module:
    """A quantized 1x1 conv-ReLU with ``conv``'s scales, bias and output quantization, on
    weight ``codes`` ``(out, in_per_group, 1, 1)`` rearranged from ``conv``'s own."""
    import torch.ao.nn.intrinsic.quantized as nniq

    w = conv.weight()
    wq = torch._make_per_channel_quantized_tensor(codes, w.q_per_channel_scales(), w.q_per_channel_zero_points(), 0)
    out = nniq.ConvReLU2d(groups * codes.shape[1], codes.shape[0], 1, groups=groups)
    out.set_weight_bias(wq, conv.bias())
    out.scale, out.zero_point = conv.scale, conv.zero_point
    return out


class PatchStem(nn.Module):
    """A quantized ``k x k`` stride-``s`` conv-ReLU on 1 channel (padding 1) as a 1x1 conv over patches."""

    def __init__(self, stem: nn.Module):
        super().__init__()
        w = stem.weight()
        out, _, k, _ = w.shape
        self.k, self.s = k, stem.stride[0]
        self.conv = one_by_one(stem, w.int_repr().reshape(out, k * k, 1, 1))

    def forward(self, xq: torch.Tensor) -> torch.Tensor:
        b, _, h, w = xq.shape
        zp, k, s = xq.q_zero_point(), self.k, self.s
        padded = torch.full((b, h + 2, w + 2), zp, dtype=torch.uint8)
        padded[:, 1:-1, 1:-1] = xq.int_repr()[:, 0]
        ho, wo = (h + 2 - k) // s + 1, (w + 2 - k) // s + 1
        patches = padded.as_strided((b, ho, wo, k, k), ((h + 2) * (w + 2), s * (w + 2), s, w + 2, 1))
        q = torch._make_per_tensor_quantized_tensor(patches.reshape(b, ho, wo, k * k), xq.q_scale(), zp)
        return self.conv(q.permute(0, 3, 1, 2))


class GatheredConv(nn.Module):
    """A quantized grouped 3x3 conv-ReLU (padding 1) as a grouped 1x1 conv over gathered neighbourhoods."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        w = conv.weight()
        out, c, _, _ = w.shape
        self.groups, self.c = conv.groups, c
        codes = w.int_repr().permute(0, 2, 3, 1).reshape(out, 9 * c, 1, 1).contiguous()
        self.conv = one_by_one(conv, codes, self.groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, ct, hh, ww = h.shape
        g, c, zp = self.groups, self.c, h.q_zero_point()
        padded = torch.full((b, hh + 2, ww + 2, ct), zp, dtype=torch.uint8)
        padded[:, 1:-1, 1:-1] = h.int_repr().permute(0, 2, 3, 1)
        row, img = (ww + 2) * ct, (hh + 2) * (ww + 2) * ct
        hood = padded.as_strided((b, hh, ww, g, 3, 3, c), (img, row, ct, c, row, ct, 1))
        q = torch._make_per_tensor_quantized_tensor(hood.reshape(b, hh, ww, g * 9 * c), h.q_scale(), zp)
        return self.conv(q.permute(0, 3, 1, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from torch.profiler import ProfilerActivity, profile

    import ferroute

    torch.set_num_threads(1)
    graph = ferroute.load("fast").ensemble.inference_graph("cpu")
    feats = graph.features
    convs = [i for i, mod in enumerate(feats) if type(mod).__name__ == "ConvReLU2d"]
    x = torch.randn(32, 1, 48, 48)
    with torch.inference_mode():
        for _ in range(5):
            graph(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(20):
                graph(x)
    rows = [e for e in prof.key_averages(group_by_input_shape=True) if e.key == "quantized::conv2d_relu"]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print("int8 conv-ReLU layers of fast, batch 64 (32 faces x 2 views), 1 thread, torch profiler")
    print(f"{'input shape':>22} {'ms/call':>8} {'share':>6}")
    for e in sorted(rows, key=lambda e: -e.self_cpu_time_total):
        print(f"{str(e.input_shapes[0]):>22} {e.self_cpu_time_total / e.count / 1000:8.2f} {e.self_cpu_time_total / total:6.1%}")

    variants = {"as shipped": graph}
    stem = copy.deepcopy(graph)
    stem.features[convs[0]] = PatchStem(feats[convs[0]])
    variants["stem as patch 1x1"] = stem
    last = copy.deepcopy(graph)
    last.features[convs[-1]] = GatheredConv(feats[convs[-1]])
    variants["last conv as gathered 1x1"] = last
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        ref = graph(x)
        for name, g in variants.items():
            if not torch.equal(g(x), ref):
                raise SystemExit(f"{name}: outputs differ from the shipped graph")
        for _ in range(args.rounds):
            for name, g in variants.items():
                t = time.thread_time()
                g(x)
                times[name].append((time.thread_time() - t) * 1000)
    print(f"\nwhole int8 pass, 32 faces x 2 views, 1 thread, {args.rounds} interleaved rounds (outputs equal bit for bit)")
    print(f"{'variant':>26} {'min ms':>7} {'median ms':>10}")
    for name, v in times.items():
        print(f"{name:>26} {min(v):7.2f} {statistics.median(v):10.2f}")


if __name__ == "__main__":
    main()
