"""Study: int8 through PyTorch's maintained route (torchao's PT2E + X86InductorQuantizer,
lowered by torch.compile) against the eager ``torch.ao.quantization`` graph ferroute ships.

    pip install --target /tmp/taolib --no-deps torchao==0.18.0
    FERPLUS_DIR=... PYTHONPATH=/tmp/taolib python docs/records/studies/int8_pt2e.py > docs/records/studies/int8_pt2e.txt

Both quantize the same thing: the ``fast`` model's five CNNs as one grouped-convolution
network (BatchNorm folded), static int8 with activation scales from the same 1,024 evenly
spaced FERPlus validation faces, one test-time view. Measured on the first 2,048 FERPlus test
faces: faces/s at batch 64 on all torch threads (best of 5), the largest probability
difference from float32, and how often the top emotion agrees with float32.
"""

from __future__ import annotations

import os
import platform
import time
import warnings

import numpy as np
import torch

from ferroute.train.backbones import preprocess
from ferroute.evaluate.ferplus import load_split
from ferroute.train.ensemble import Ensemble
from ferroute.train.graphs import StackedCNN, _softmax, fold_batchnorm
from ferroute.router import resolve_model_dir

warnings.filterwarnings("ignore")


def speed(fn, x: torch.Tensor, batch: int = 64) -> float:
    chunks = [x[s : s + batch] for s in range(0, len(x) - batch + 1, batch)]
    with torch.inference_mode():
        fn(chunks[0])
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for c in chunks:
                fn(c)
            best = min(best, time.perf_counter() - t)
    return len(chunks) * batch / best


def probs_of(fn, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([fn(x[s : s + batch]).float().numpy() for s in range(0, len(x), batch)])


def main() -> None:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    ens = Ensemble.load(resolve_model_dir("fast"))
    ens.configure(tta="none")
    va, te = load_split("valid"), load_split("test")
    cal = preprocess(va.images[:: max(1, len(va) // 1024)][:1024], ens.config)
    x = preprocess(te.images[:2048], ens.config).contiguous(memory_format=torch.channels_last)

    class Probs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = StackedCNN([fold_batchnorm(m).float() for m in ens.members]).eval()

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return _softmax(self.net(t))

    fp32 = Probs().eval()
    ref = probs_of(fp32, x)

    ens.configure(precision="fp32")
    rows = [("float32 (stacked, eager)", fp32, None)]
    ens.quantize(va.images)  # the shipped route: eager torch.ao static quantization, x86 engine
    eager = ens.runtime.inference_graph("cpu")
    rows.append(("int8, eager torch.ao (shipped)", eager, None))

    t0 = time.perf_counter()
    gm = torch.export.export(Probs().eval(), (x[:64],)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(gm, quantizer)
    with torch.inference_mode():
        for s in range(0, len(cal) - 63, 64):  # the exported graph takes batches of 64
            prepared(cal[s : s + 64].contiguous(memory_format=torch.channels_last))
    converted = convert_pt2e(prepared)
    compiled = torch.compile(converted, dynamic=False)
    with torch.inference_mode():
        compiled(x[:64])  # compile now, timed apart
    rows.append(("int8, torchao PT2E + inductor", compiled, time.perf_counter() - t0))

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.machine())
    print(f"# int8 routes for the fast model — {cpu}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'route':34s} {'faces/s':>8s} {'max |dp|':>9s} {'top-1 agrees':>12s} {'setup s':>8s}")
    for name, fn, setup in rows:
        p = probs_of(fn, x)
        print(f"{name:34s} {speed(fn, x):8.0f} {np.abs(p - ref).max():9.4f} {np.mean(p.mean(1).argmax(-1) == ref.mean(1).argmax(-1)):12.4f} "
              f"{'' if setup is None else f'{setup:8.1f}'}")


if __name__ == "__main__":
    main()
