"""The benchmark scripts' GPU section, run on the CPU with tiny models (no GPU in CI)."""

import importlib.util
from pathlib import Path

from tests.test_ensemble import tiny_ensemble


def _bench_inference():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_inference.py"
    spec = importlib.util.spec_from_file_location("bench_inference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_cuda_section_runs_its_code_on_the_cpu_with_tiny_models():
    bench = _bench_inference()
    extra: dict = {}
    rows = bench.cuda_rows(tiny_ensemble(2), smoke=True, extra=extra, product_tta="hflip")
    modes = [r["mode"] for r in rows]
    assert any(m.startswith("dinov2_s14 x5") and "inference graph" in m for m in modes)
    assert any(m.startswith("cnn x2") and "predict_proba tta=hflip" in m for m in modes)
    assert any(m.startswith("matmul qkv") for m in modes)
    for r in rows:
        assert r["peak_gflops"] > 0 and r["gflops"] > 0
        assert r["flops_per_face"] is None or r["flops_per_face"] > 0
    assert extra["dinov2_kernel_profile"] and extra["cpu_vs_cpu_fp32_max_abs_dp"] < 0.05
