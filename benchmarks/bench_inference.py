"""Inference speed of ferroute, measured against the machine's own matmul limit.

One command prints a table: faces/s and ms/face for one member, the member loop and the
fused ensemble, at batch 1, 32 and 256, with 1 and 2 CPU threads, in PyTorch and
onnxruntime; the model's FLOPs per face; the measured float32 matmul GFLOP/s on the same
threads and the fraction of it each row reaches (bf16 rows: of the bf16 matmul rate; int8
rows, CNN ensembles: of the int8 matmul rate, ``torch._int_mm``); peak resident memory; single-face API
latency (decode, crop, ensemble, decision) with face detection timed apart. On CUDA the
same for the default ensemble and a 5-member dinov2_s14 at 224x224 in bf16.

    python benchmarks/bench_inference.py [--model DIR] [--json FILE] [--evaluate [--ldl DIR]] [--cuda-smoke]

``--evaluate`` also times a full ``ferroute evaluate`` on FERPlus test ($FERPLUS_DIR),
cold (empty corruption cache) and warm. ``--cuda-smoke`` runs the CUDA section's code on
the CPU with a tiny dinov2 config, to check the script where no GPU is lent.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ferroute.train.backbones import create_backbone, fast_bf16, int8_supported
from ferroute.train.ensemble import TTA_VIEWS, Ensemble, RunOptions, preprocess
from ferroute.router import FERRouter, resolve_model_dir


#: batch sizes of the CPU table, and a factor on every timing's length (``--smoke``: tiny)
BATCHES: tuple[int, ...] = (1, 32, 256)
TIME_SCALE = 1.0


def timeit(fn, min_time: float = 1.0, min_reps: int = 3) -> float:
    """Best-of-3 mean seconds per call, each round running at least ``min_time``."""
    min_time, min_reps = min_time * TIME_SCALE, max(1, round(min_reps * TIME_SCALE))
    fn()
    best = float("inf")
    for _ in range(3):
        reps, t0 = 0, time.perf_counter()
        while reps < min_reps or time.perf_counter() - t0 < min_time / 3:
            fn()
            reps += 1
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def matmul_gflops(threads: int, dtype=torch.float32, device="cpu", n: int = 1024) -> float:
    torch.set_num_threads(threads)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    reps = 10 if device == "cuda" else 1  # back to back, one sync: no idle gaps between products

    def run():
        for _ in range(reps):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    return 2 * n**3 * reps / timeit(run, 1.0) / 1e9


def int8_matmul_gops(threads: int, n: int = 1024) -> float | None:
    """The CPU's measured int8 matmul rate (``torch._int_mm``, int32 accumulation), or None."""
    torch.set_num_threads(threads)
    a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
    try:
        torch._int_mm(a, b)
    except (RuntimeError, AttributeError):
        return None
    return 2 * n**3 / timeit(lambda: torch._int_mm(a, b), 1.0) / 1e9


def flops_per_face(module, x) -> float:
    """Forward FLOPs per face; attention counted as the two matmuls it is (PyTorch's math
    attention backend: the FLOP counter misses some fused attention kernels, e.g. on the CPU)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with FlopCounterMode(display=False) as fc, torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        module(x)
    return fc.get_total_flops() / x.shape[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row(device: str, backend: str, mode: str, threads: int, batch: int, faces_per_s: float, flops_per_face: float,
         peak: float | None, **extra: float) -> dict:
    """One table row: throughput, the arithmetic rate it means, and its fraction of ``peak``."""
    gflops = faces_per_s * flops_per_face / 1e9
    return {"device": device, "backend": backend, "mode": mode, "threads": threads, "batch": batch,
            "faces_per_s": faces_per_s, "ms_per_face": 1000 / faces_per_s, "gflops": gflops,
            "peak_gflops": peak, "fraction_of_peak": gflops / peak if peak else None, "flops_per_face": flops_per_face, **extra}


@contextlib.contextmanager
def one_chunk_at_a_time(model: Ensemble, on: bool = True) -> Iterator[None]:
    """``predict_proba``'s chunks one after the other on torch's own threads (how it ran before
    its CPU chunks ran side by side on threads of their own): the comparison row. ``on=False``
    leaves the model as it is."""
    if not on:
        yield
        return
    before = model.options.side_by_side
    model.configure(side_by_side=False)
    try:
        yield
    finally:
        model.configure(side_by_side=before)


def cpu_rows(ens: Ensemble, onnx_path: Path | None, product_tta: str = "none") -> list[dict]:
    """Rows without test-time augmentation (so FLOPs are exact), plus the product setting."""
    cfg = ens.config
    member = ens.members[0]
    f_member = flops_per_face(member, preprocess(np.zeros((1, 48, 48), np.uint8), cfg))
    f_ens = f_member * ens.num_members
    rows = []
    sessions = {}
    if onnx_path is not None:
        from ferroute.train.export import OnnxEnsemble
    bf16 = fast_bf16("cpu")
    q8 = None
    if int8_supported():
        q8 = copy.deepcopy(ens)
        try:
            if q8.is_quantized:
                q8.configure(precision="int8")  # the model's own scales
            else:  # scales fitted on random faces: the speed does not depend on them
                q8.quantize(np.random.default_rng(1).integers(0, 256, (256, 48, 48), dtype=np.uint8))
        except ValueError:  # not a CNN ensemble: no int8 rows
            q8 = None
    for threads in (1, 2):
        peak = matmul_gflops(threads)
        peak_bf16 = matmul_gflops(threads, dtype=torch.bfloat16) if bf16 else None
        peak_int8 = int8_matmul_gops(threads) if q8 is not None else None
        torch.set_num_threads(threads)
        if onnx_path is not None:
            sessions = {"fused": OnnxEnsemble(onnx_path, threads=threads)}
        for batch in BATCHES:
            faces = np.random.default_rng(0).integers(0, 256, (batch, 48, 48), dtype=np.uint8)
            x = preprocess(faces, cfg).contiguous(memory_format=torch.channels_last)
            views = len(TTA_VIEWS[product_tta])

            def product(precision: str, compiled: bool, faces=faces, sequential: bool = False):
                """The product path: predict_proba on uint8 faces (preprocess, chunked forward, TTA).
                ``sequential``: its chunks one after the other on torch's threads, as before the
                chunks ran side by side on threads of their own."""
                def run():
                    ens.configure(tta=product_tta)
                    ens.configure(precision=precision)
                    ens.configure(compile="on" if compiled else "off")
                    try:
                        with one_chunk_at_a_time(ens, sequential):
                            return ens.predict_proba(faces, batch_size=batch)
                    finally:
                        ens.configure(tta="none")
                        ens.configure(precision="fp32")
                        ens.configure(compile="auto")
                return run

            def q8_product(faces=faces, sequential: bool = False):
                def run():
                    with one_chunk_at_a_time(q8, sequential):
                        return q8.predict_proba(faces, batch_size=batch)
                return run

            side_by_side = ens.runtime._cpu_workers(batch, ens.options.chunk, torch.device("cpu")) > 1  # where predict_proba runs chunks on threads

            def graph(precision: str, compiled: bool, x=x):
                """The inference graph (BatchNorm folded, weights in the compute dtype), eager or compiled."""
                ens.configure(precision=precision)
                g = ens.runtime.inference_graph("cpu", compiled=compiled)
                ens.configure(precision="fp32")
                return lambda: g(x)

            def in_bf16(fn):
                def run():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return fn()
                return run

            cases = {
                ("torch", "one member"): (lambda: member(x), f_member),
                ("torch", "member loop"): (lambda: ens.forward_loop(x), f_ens),
                ("torch", "fused (stacked)"): (lambda: ens.runtime.forward_stacked(x), f_ens),
                ("torch", "inference graph"): (graph("fp32", False), f_ens),
            }
            if batch > 1:
                cases[("torch", "inference graph, compiled")] = (graph("fp32", True), f_ens)
            cases[("torch", f"predict_proba, tta={product_tta}")] = (product("fp32", False), f_ens * views)
            if side_by_side:
                cases[("torch", f"predict_proba, tta={product_tta}, one chunk at a time")] = (product("fp32", False, sequential=True), f_ens * views)
            if bf16:  # AMX: bf16 rows are measured against the bf16 matmul peak
                cases[("torch bf16", "one member")] = (in_bf16(lambda: member(x)), f_member)
                cases[("torch bf16", "member loop")] = (in_bf16(lambda: ens.forward_loop(x)), f_ens)
                cases[("torch bf16", "inference graph")] = (graph("bf16", False), f_ens)
                if batch > 1:
                    cases[("torch bf16", "inference graph, compiled")] = (graph("bf16", True), f_ens)
                cases[("torch bf16", f"predict_proba, tta={product_tta}")] = (product("bf16", False), f_ens * views)
                if side_by_side:
                    cases[("torch bf16", f"predict_proba, tta={product_tta}, one chunk at a time")] = (
                        product("bf16", False, sequential=True), f_ens * views)
                if batch >= 256:  # predict_proba compiles its 64-face chunks: only full chunks run compiled
                    cases[("torch bf16", f"predict_proba, tta={product_tta}, compiled")] = (product("bf16", True), f_ens * views)
            if q8 is not None:  # measured against the int8 matmul rate
                q8.configure(tta="none")
                g8 = q8.runtime.inference_graph("cpu")
                cases[("torch int8", "inference graph")] = (lambda g8=g8, x=x: g8(x), f_ens)
                q8.configure(tta=product_tta)
                cases[("torch int8", f"predict_proba, tta={product_tta}")] = (q8_product(), f_ens * views)
                if side_by_side:
                    cases[("torch int8", f"predict_proba, tta={product_tta}, one chunk at a time")] = (q8_product(sequential=True), f_ens * views)
            if "fused" in sessions:
                # the graph takes the uint8 faces (its input is named `faces`) and preprocesses inside
                cases[("onnxruntime", "fused")] = (lambda o=sessions["fused"], f=faces: o.predict_proba(f, batch_size=len(f)), f_ens)
            for (backend, mode), (fn, flops) in cases.items():
                with torch.inference_mode():
                    sec = timeit(fn, 0.6 if batch > 1 else 0.3)
                lim = peak_bf16 if backend.endswith("bf16") else peak_int8 if backend.endswith("int8") else peak
                rows.append(_row("cpu", backend, mode, threads, batch, batch / sec, flops, lim))
    return rows


def api_latency(model_dir: Path) -> dict:
    from PIL import Image

    from ferroute.vision.images import load_image

    torch.set_num_threads(2)
    router = FERRouter.load(model_dir)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    times = []
    for _ in range(max(12, round(60 * TIME_SCALE))):
        t0 = time.perf_counter()
        router.route(data)
        times.append(time.perf_counter() - t0)
    photo = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    examples = sorted(Path(__file__).resolve().parents[1].joinpath("examples").glob("*photo*"))
    if examples:
        photo = load_image(examples[0])
    det = []
    for _ in range(10):
        t0 = time.perf_counter()
        router.detector(photo)
        det.append(time.perf_counter() - t0)
    return {
        "single_face_ms_p50": 1000 * float(np.median(times[10:])),
        "single_face_ms_p95": 1000 * float(np.percentile(times[10:], 95)),
        "detection_ms_p50": 1000 * float(np.median(det)),
        "detection_image": f"{photo.shape[1]}x{photo.shape[0]}",
    }


def _print_row(r: dict) -> None:
    print(f"{r['device']:6} {r['backend']:11} {r['mode']:58} {r['threads']:>3} {r['batch']:>5} {r['faces_per_s']:>9.1f} {r['ms_per_face']:>8.3f} {r['gflops']:>8.1f} {r['peak_gflops'] or float('nan'):>7.1f} {100 * (r['fraction_of_peak'] or float('nan')):>5.1f}%", flush=True)


class _CompiledMembers(nn.Module):
    """The member loop with each member compiled on its own: members share one architecture,
    so they share compiled code and the compile costs one member's time, not M."""

    def __init__(self, members: list[nn.Module], mode: str | None = None):
        super().__init__()
        self.members = [torch.compile(m, mode=mode) for m in members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float().softmax(-1) for m in self.members], dim=1)


def gemm_rows(shapes: dict[str, tuple[int, int, int]], peak: float, device: str, sync, smoke: bool) -> list[dict]:
    """The model's own matmul shapes alone, in bf16: the rate its linear layers can reach here."""
    rows = []
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, dtype=torch.bfloat16, device=device)
        b = torch.randn(k, n, dtype=torch.bfloat16, device=device)

        def run():
            a @ b
            sync()

        sec = timeit(run, 0.3 if smoke else 1.0)
        g = 2 * m * k * n / sec / 1e9
        rows.append({"device": device, "backend": "torch bf16", "mode": f"matmul {name} {m}x{k}x{n}", "threads": torch.get_num_threads(),
                     "batch": m, "faces_per_s": float("nan"), "ms_per_face": float("nan"), "gflops": g,
                     "peak_gflops": peak, "fraction_of_peak": g / peak, "flops_per_face": None})
    return rows


def kernel_profile(fn, device: str, top: int = 12) -> list[dict]:
    """Where the GPU time of ``fn`` goes: the ``top`` kernels by total time, with their share."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            fn()
    attr = "device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    if device != "cuda":
        events = [e for e in events if e.key.startswith("aten::")]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: -getattr(e, attr))
    return [{"kernel": e.key[:90], "share": getattr(e, attr) / total, "calls": e.count // 3, "us_per_run": getattr(e, attr) / 3}
            for e in events[:top]]


def cuda_rows(ens: Ensemble, smoke: bool = False, budget_s: float = 360.0, extra: dict | None = None,
              product_tta: str = "none", product_precision: str = "auto") -> list[dict]:
    """The CUDA table: a 5-member dinov2_s14 at 224x224 in bf16 (random weights; the speed does
    not depend on them) and ``ens``, eager and compiled, against the measured bf16 matmul peak.
    Variants are skipped once ``budget_s`` has passed (compiles take minutes); rows print as
    they come, so a run cut short still reports. With ``smoke`` the
    same code runs on the CPU with a tiny dinov2."""
    t_start = time.perf_counter()
    device = "cpu" if smoke else "cuda"
    dtype = torch.bfloat16
    rows: list[dict] = []
    n = 256 if smoke else 8192
    peak = matmul_gflops(torch.get_num_threads(), dtype=dtype, device=device, n=n)
    print(f"{device} bf16 matmul peak (measured, {n}x{n}x{n}): {peak:.0f} GFLOP/s", flush=True)
    if extra is not None:
        extra["bf16_matmul_peak_gflops"] = peak
    sync = (lambda: None) if smoke else torch.cuda.synchronize

    kw = dict(depth=1, embed_dim=48, num_heads=2) if smoke else {}
    size, dbatch = (28, 8) if smoke else (224, 256)
    members, dcfg = [], None
    for k in range(5):
        torch.manual_seed(k)
        m, dcfg = create_backbone("dinov2_s14", input_size=size, **kw)
        members.append(m)
    dino = Ensemble(members, dcfg, options=RunOptions(fused="loop")).to(device)
    dino.configure(precision="bf16")
    dino_bf16 = copy.deepcopy(dino).to(dtype)
    x = torch.randn(dbatch, 3, size, size, device=device)
    dname = "dinov2_s14 x5 (random init)"
    cases = [(dname, "member loop, fp32 weights, bf16 autocast", dino.forward_loop, x),
             (dname, "member loop, bf16 weights", dino_bf16.forward_loop, x.to(dtype)),
             (dname, "inference graph, bf16 (product path)", dino, x)]  # Ensemble.forward
    if not smoke:
        graph = dino.runtime.inference_graph(device)
        cases += [(dname, "inference graph, bf16, compiled", dino.runtime.inference_graph(device, compiled=True), x),
                  (dname, "graph members compiled one by one", _CompiledMembers(list(graph.members)), x.to(dtype))]
    f_dino = flops_per_face(dino.members[0], x[:1]) * dino.num_members

    e = ens.to(device)
    e.configure(precision="bf16")
    ename = f"{ens.config.name} x{ens.num_members} (this model)"
    for batch in (8,) if smoke else (256, 4096):
        xe = torch.randn(batch, ens.config.in_chans, ens.config.input_size, ens.config.input_size, device=device)
        cases.append((ename, "inference graph, bf16", e.runtime.inference_graph(device), xe))
        if not smoke:
            cases.append((ename, "inference graph, bf16, compiled", e.runtime.inference_graph(device, compiled=True), xe))
    f_ens = flops_per_face(ens.members[0], xe[:1]) * ens.num_members

    best: list = [0.0, None]

    def measure(name: str, vname: str, fn, inp: torch.Tensor) -> None:
        if time.perf_counter() - t_start > budget_s:
            print(f"{name}, {vname}, batch {len(inp)}: skipped (past the {budget_s:.0f} s budget)", flush=True)
            return

        def run():  # autocast only where the row says so: the product path has weights in bf16 instead
            with torch.inference_mode(), torch.autocast(device_type=device, dtype=dtype, enabled="autocast" in vname):
                fn(inp)
            sync()
        try:
            t0 = time.perf_counter()
            run()  # a compiled variant compiles here
            first = time.perf_counter() - t0
            sec = timeit(run, 0.5 if smoke else 2.0)
        except Exception as exc:  # compile is best effort
            print(f"{name}, {vname} failed: {type(exc).__name__}: {exc}"[:400], file=sys.stderr, flush=True)
            return
        fps = len(inp) / sec
        r = _row(device, "torch", f"{name}, {vname}", torch.get_num_threads(), len(inp), fps,
                 f_dino if name == dname else f_ens, peak, first_call_s=first)
        rows.append(r)
        _print_row(r)
        if name == dname and fps > best[0]:
            best[:] = [fps, run]

    for case in cases:
        measure(*case)
    if best[1] is not None:  # why the best dinov2 variant reaches the fraction it does
        prof = kernel_profile(best[1], device)
        if extra is not None:
            extra["dinov2_kernel_profile"] = prof
        print("dinov2 x5, best variant, time by kernel:")
        for p in prof:
            print(f"  {100 * p['share']:5.1f}%  {p['calls']:>4} calls  {p['kernel']}", flush=True)
        d = dcfg.kwargs.get("embed_dim", 384)
        tokens = dbatch * ((size // 14) ** 2 + 1)
        shapes = {"qkv": (tokens, d, 3 * d), "proj": (tokens, d, d), "fc1": (tokens, d, 4 * d), "fc2": (tokens, 4 * d, d)}
        for r in gemm_rows(shapes, peak, device, sync, smoke):
            rows.append(r)
            _print_row(r)

    # the product path: predict_proba on uint8 faces (preprocess, to the GPU, TTA, back to numpy)
    faces = np.random.default_rng(0).integers(0, 256, (64 if smoke else 16384, 48, 48), dtype=np.uint8)
    e.configure(precision=product_precision)
    e.configure(tta=product_tta)
    views = len(TTA_VIEWS[product_tta])
    for bs in (16,) if smoke else (256, 4096):
        if time.perf_counter() - t_start > budget_s + 60:
            break
        sec = timeit(lambda bs=bs: e.predict_proba(faces, batch_size=bs), 0.5 if smoke else 2.0)
        r = _row(device, "torch", f"{ename}, predict_proba tta={product_tta} {product_precision}", torch.get_num_threads(),
                 bs, len(faces) / sec, f_ens * views, peak)
        rows.append(r)
        _print_row(r)
    ref = copy.deepcopy(ens).to("cpu")
    ref.configure(precision="fp32")
    ref.configure(tta=product_tta)
    dp = float(np.abs(e.predict_proba(faces[:512]) - ref.predict_proba(faces[:512])).max())
    print(f"predict_proba on {device} ({product_precision}) vs CPU float32, 512 faces: max |dp| {dp:.4f}", flush=True)
    if extra is not None:
        extra[f"{device}_vs_cpu_fp32_max_abs_dp"] = dp
    e.configure(tta="none")
    e.configure(precision="fp32")
    ens.to("cpu")
    return rows


def evaluate_wall(model_dir: Path, ldl_dir: Path | None = None, keep: Path | None = None, warm_runs: int = 1) -> dict:
    out = {}
    ldl = ["--ldl", str(ldl_dir)] if ldl_dir else []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, FERROUTE_CACHE=cache)
        # the decoded FERPlus splits are not part of the corruption cache: warm them first
        subprocess.run([sys.executable, "-c", "from ferroute.evaluate.ferplus import load_split as l; l('valid'); l('test')"], env=env, check=True)
        # the machine's speed drifts: more warm runs show the spread
        for label in ("cold", "warm", *(f"warm{i}" for i in range(2, warm_runs + 1))):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ferroute", "evaluate", "--model", str(model_dir), *ldl, "--out", str(Path(cache) / f"rep-{label}")], env=env, check=True, stdout=subprocess.DEVNULL)
            out[f"evaluate_{label}_s"] = time.perf_counter() - t0
        if keep is not None:  # the warm run's report, e.g. for the docs
            shutil.copytree(Path(cache) / "rep-warm", keep, dirs_exist_ok=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory or embedded model name (default: default)")
    ap.add_argument("--ldl", type=Path, help="LDL baseline for --evaluate (default: the embedded one trained like --model)")
    ap.add_argument("--keep-report", type=Path, help="copy the warm --evaluate run's report folder here")
    ap.add_argument("--warm-runs", type=int, default=1, help="--evaluate: how many warm runs to time")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--evaluate", action="store_true", help="also time ferroute evaluate, cold and warm")
    ap.add_argument("--cuda-smoke", action="store_true", help="run the CUDA section on the CPU with a tiny config")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--skip-cpu", action="store_true", help="leave out the CPU table (e.g. with --cuda-smoke)")
    ap.add_argument("--smoke", action="store_true", help="batches 1 and 4, timings cut short: checks that every row still runs (tests)")
    ap.add_argument("--cuda-budget", type=float, default=360.0, help="seconds after which the CUDA section skips its remaining variants")
    args = ap.parse_args()
    args.model = resolve_model_dir(args.model)
    if args.smoke:
        global BATCHES, TIME_SCALE
        BATCHES, TIME_SCALE = (1, 4), 0.02
    try:  # one compiled graph per batch size and dtype here
        torch._dynamo.config.recompile_limit = 64
    except AttributeError:  # older PyTorch (e.g. on a lent GPU machine)
        torch._dynamo.config.cache_size_limit = 64

    ens = Ensemble.load(args.model)
    product_tta, product_precision = ens.tta, ens.precision
    ens.configure(precision="fp32")  # bf16 rows wrap their own autocast
    ens.configure(tta="none")  # the mode rows compare one view; the product row adds the TTA views
    onnx_path = None
    if not args.no_onnx:
        from ferroute.train.export import export_onnx

        onnx_path = Path(tempfile.mkdtemp()) / "ens.onnx"
        export_onnx(ens, onnx_path)
    info = {"machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(), "torch": torch.__version__}
    rows = [] if args.skip_cpu else cpu_rows(ens, onnx_path, product_tta)
    extra: dict = {}
    if torch.cuda.is_available() or args.cuda_smoke:
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
        print(f"# CUDA section — {info}", flush=True)
        rows += cuda_rows(ens, smoke=args.cuda_smoke, budget_s=args.cuda_budget, extra=extra,
                          product_tta=product_tta, product_precision=product_precision)
    try:
        extra.update(api_latency(args.model))
    except Exception as exc:  # e.g. an OpenCV build without its face detector on a lent GPU machine
        print(f"API latency not measured: {type(exc).__name__}: {exc}", file=sys.stderr)
        extra["api_latency_error"] = f"{type(exc).__name__}: {exc}"
    if args.evaluate:
        extra.update(evaluate_wall(args.model, args.ldl, args.keep_report, args.warm_runs))
    extra["peak_rss_mb"] = peak_rss_mb()

    print(f"# ferroute inference benchmark — {info}")
    print(f"model: {args.model} ({ens.num_members} x {ens.config.name})")
    hdr = f"{'device':6} {'backend':11} {'mode':58} {'thr':>3} {'batch':>5} {'faces/s':>9} {'ms/face':>8} {'GFLOP/s':>8} {'peak':>7} {'%peak':>6}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        _print_row(r)
    print()
    for k, v in extra.items():
        if not isinstance(v, list):  # the kernel profile printed above
            print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows, "extra": extra}, indent=2) + "\n")


if __name__ == "__main__":
    main()
