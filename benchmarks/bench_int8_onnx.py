"""int8 graphs for the core: onnxruntime's static QDQ quantization of each embedded model's
graph against the shipped float32 graph, on this CPU.

    python benchmarks/bench_int8_onnx.py [--out docs/records/bench_int8_onnx.txt]

Activation scales are fitted on FERPlus validation faces (MinMax over 1,024 faces; weights per
channel, int8); the rule, written before the run (issue "A lean core"): ship int8 where it is
faster than float32 on this CPU **and** agrees with float32 on >= 99.5 % of decisions on
FERPlus test faces; otherwise float32. Needs ``ferroute[train]`` (the onnx package) and FERPlus.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def speed(ens, faces: np.ndarray, batch: int, seconds: float = 5.0) -> float:
    ens.predict_proba(faces[:batch], batch_size=batch)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for s in range(0, len(faces), batch):
            ens.predict_proba(faces[s : s + batch], batch_size=batch)
            n += len(faces[s : s + batch])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--calib-faces", type=int, default=1024)
    ap.add_argument("--test-faces", type=int, default=None, help="the first N FERPlus test faces (default: all)")
    ap.add_argument("--seconds", type=float, default=5.0, help="timing per graph and batch size")
    ap.add_argument("--models", nargs="*", default=None, help="embedded model names (default: all)")
    args = ap.parse_args()
    from bench_core import cpu_name, recorder
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    import ferroute
    from ferroute.evaluate.ferplus import load_split
    from ferroute.engine.onnxrun import GRAPH_FILE, OnnxEnsemble, usable_cpus
    from ferroute.router import EMBEDDED_MODELS, FERRouter, resolve_model_dir

    lines, say = recorder()

    say(f"# bench_int8_onnx: {time.strftime('%Y-%m-%d')}, ferroute {ferroute.__version__}, {cpu_name()}, "
        f"{usable_cpus()} CPUs, onnxruntime {__import__('onnxruntime').__version__}")
    say(f"# command: python benchmarks/bench_int8_onnx.py {' '.join(sys.argv[1:])}")
    va, te = load_split("valid"), load_split("test")
    if args.test_faces:
        te = te.subset(np.arange(min(args.test_faces, len(te))))
    calib = va.images[: args.calib_faces]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"faces": calib[s : s + 64]} for s in range(0, len(calib), 64)])

        def get_next(self):  # noqa: ANN201
            return next(self.it, None)

    tmp = Path(tempfile.mkdtemp())
    for name in args.models or EMBEDDED_MODELS:
        d = resolve_model_dir(name)
        q = tmp / f"{name}.int8.onnx"
        quantize_static(str(d / GRAPH_FILE), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        fp32, int8 = OnnxEnsemble(d / GRAPH_FILE), OnnxEnsemble(q)
        r32 = FERRouter.load(name, backend="onnx")
        r8 = FERRouter.load(name, backend="onnx")
        r8.ensemble = int8
        a = [r["decision"] for r in r32.route_faces(te.images)]
        b = [r["decision"] for r in r8.route_faces(te.images)]
        agree = float(np.mean([x == y for x, y in zip(a, b)]))
        p32, p8 = fp32.predict_proba(te.images), int8.predict_proba(te.images)
        top = float(np.mean(p32.mean(1).argmax(-1) == p8.mean(1).argmax(-1)))
        sp = {b_: (speed(fp32, te.images[:1024], b_, args.seconds), speed(int8, te.images[:1024], b_, args.seconds)) for b_ in (1, 256)}
        faster = all(s8 > s32 for s32, s8 in sp.values())
        ship = faster and agree >= 0.995
        say(f"{name}: size {os.path.getsize(d / GRAPH_FILE) / 1e6:.1f} MB fp32, {q.stat().st_size / 1e6:.1f} MB int8; "
            f"max |dp| {np.abs(p32 - p8).max():.3f}, mean |dp| {np.abs(p32 - p8).mean():.4f}")
        for b_, (s32, s8) in sp.items():
            say(f"  batch {b_:3d}: fp32 {s32:7.0f} faces/s, int8 {s8:7.0f} faces/s ({s8 / s32:.2f}x)")
        say(f"  FERPlus test ({len(te)} faces): same decision {agree:.4f}, same top emotion {top:.4f}")
        say(f"  rule (faster at both batch sizes and >= 0.995 same decisions): {'ship int8' if ship else 'ship float32'}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
