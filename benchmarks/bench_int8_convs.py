"""Why int8 speeds up one CNN ensemble and not another: one grouped 3x3 convolution
(5 groups, as the stacked ensemble runs it) in PyTorch's int8 x86 engine, by channels per
group and resolution, in GMAC/s.

    python benchmarks/bench_int8_convs.py [--batch 128]

The default model's first stage has 24 channels per member at 48x48, ``fast``'s 32 at 24x24.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn


def int8_conv_rate(per_group: int, hw: int, groups: int = 5, batch: int = 128) -> tuple[float, float]:
    """(ms per call, GMAC/s) of a fused int8 conv-ReLU, ``groups`` groups of ``per_group`` channels."""
    from torch.ao import quantization as tq

    c = groups * per_group
    m = nn.Sequential(tq.QuantStub(), nn.Conv2d(c, c, 3, padding=1, groups=groups), nn.ReLU(), tq.DeQuantStub()).eval()
    tq.fuse_modules(m, [["1", "2"]], inplace=True)
    m.qconfig = tq.get_default_qconfig("x86")
    tq.prepare(m, inplace=True)
    x = torch.relu(torch.randn(batch, c, hw, hw)).contiguous(memory_format=torch.channels_last)
    m(x)
    tq.convert(m, inplace=True)
    qx, conv = m[0](x), m[1]
    with torch.inference_mode():
        conv(qx)
        t = time.perf_counter()
        for _ in range(10):
            conv(qx)
        dt = (time.perf_counter() - t) / 10
    return dt * 1000, batch * hw * hw * c * per_group * 9 / dt / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128, help="views per call (64 faces x 2 views in predict_proba)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=r".*(deprecated|quantized tensor creation)")
    torch.set_num_threads(2)
    torch.backends.quantized.engine = "x86"
    print(f"int8 grouped 3x3 conv-ReLU, 5 groups, batch {args.batch}, 2 threads")
    print(f"{'resolution':>10} {'ch/group':>9} {'ms':>8} {'GMAC/s':>8}")
    for hw in (48, 24, 12):
        for per_group in (24, 32, 48, 64):
            ms, rate = int8_conv_rate(per_group, hw, batch=args.batch)
            print(f"{hw:>10} {per_group:>9} {ms:>8.2f} {rate:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
