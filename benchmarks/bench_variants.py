"""Which inference variant is fastest here: chunk size x eager/compiled, and int8 onnxruntime.

    FERPLUS_DIR=... python benchmarks/bench_variants.py [--model DIR] [--faces 2048] [--rounds 4] [--chunks 32,64,128] [--no-int8]

The variants run in interleaved rounds on the same FERPlus test faces (this machine is
shared and its speed drifts, so each row reports the median and the best round):

* ``predict_proba`` (with the model's TTA and precision) for forward chunks of 32, 64 and
  128 faces (``--chunks``), eager and compiled — the choice behind ``Ensemble.forward_chunk``;
* one view through the ensemble: onnxruntime float32, onnxruntime int8 (static QDQ,
  per-channel weights, calibrated on 1024 validation faces) and the compiled bf16 graph,
  with the int8 graph's largest probability difference from float32.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ferroute.data import load_split
from ferroute.ensemble import Ensemble, preprocess
from ferroute.pipeline import resolve_model_dir


def rounds(variants: dict, n_faces: int, n_rounds: int) -> dict[str, list[float]]:
    speed: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(n_rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            speed[name].append(n_faces / (time.perf_counter() - t0))
    return speed


def report(title: str, speed: dict[str, list[float]]) -> None:
    print(title)
    for name, v in speed.items():
        print(f"  {name:44s} median {np.median(v):7.0f}  best {max(v):7.0f} faces/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory or embedded model name (default: default)")
    ap.add_argument("--faces", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--chunks", default="32,64,128", help="comma-separated forward chunk sizes")
    ap.add_argument("--no-int8", action="store_true", help="leave out the onnxruntime int8 rows")
    args = ap.parse_args()
    args.model = resolve_model_dir(args.model)
    torch.set_num_threads(2)
    torch._dynamo.config.recompile_limit = 64
    faces = load_split("test").images[: args.faces]

    variants = {}
    for chunk in (int(c) for c in args.chunks.split(",")):
        for compiled in (False, True):
            ens = Ensemble.load(args.model)
            ens.forward_chunk = chunk
            ens.set_compile("on" if compiled else "off")
            ens.predict_proba(faces[: 2 * chunk])  # compile / warm up outside the timing
            variants[f"predict_proba chunk {chunk}, {'compiled' if compiled else 'eager'}"] = lambda e=ens: e.predict_proba(faces)
    ref = Ensemble.load(args.model)
    report(f"predict_proba, {len(faces)} faces, tta={ref.tta}, precision={ref.precision}, 2 threads:", rounds(variants, len(faces), args.rounds))
    if args.no_int8:
        return

    try:
        import onnxruntime as ort
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from ferroute.export import export_onnx
    except ImportError:
        print("onnx / onnxruntime not installed: int8 rows left out (pip install 'ferroute[onnx]')")
        return
    ens = Ensemble.load(args.model)
    ens.set_tta("none")
    valid = load_split("valid").images
    tmp = Path(tempfile.mkdtemp())
    export_onnx(ens, tmp / "f32.onnx")
    quant_pre_process(str(tmp / "f32.onnx"), str(tmp / "pre.onnx"))

    class Calib(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": preprocess(valid[i : i + 64], ens.config).numpy()} for i in range(0, 1024, 64)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp / "pre.onnx"), str(tmp / "int8.onnx"), Calib(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    s32 = ort.InferenceSession(str(tmp / "f32.onnx"), opts, providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(str(tmp / "int8.onnx"), opts, providers=["CPUExecutionProvider"])
    x = preprocess(faces[:256], ens.config).numpy()
    p32, p8 = s32.run(None, {"input": x})[0], s8.run(None, {"input": x})[0]
    ens.set_precision("bf16")
    graph = ens.inference_graph("cpu", compiled=True)
    # 128-face chunks: the member loop (at 64 faces and below the graph runs grouped convolutions)
    chunks = [torch.from_numpy(x[i : i + 128].copy()) for i in range(0, 256, 128)]

    def torch_bf16() -> None:
        with torch.inference_mode():
            for c in chunks:
                graph(c)

    torch_bf16()
    variants = {
        "onnxruntime float32, batch 256": lambda: s32.run(None, {"input": x}),
        "onnxruntime int8 (QDQ), batch 256": lambda: s8.run(None, {"input": x}),
        "PyTorch bf16 graph compiled, 2 x 128": torch_bf16,
    }
    report(f"one view, {ens.num_members} members, 256 faces, 2 threads:", rounds(variants, len(x), args.rounds))
    print(f"  int8 vs float32 probabilities: max |dp| {np.abs(p8 - p32).max():.4f}, mean {np.abs(p8 - p32).mean():.5f}")


if __name__ == "__main__":
    main()
