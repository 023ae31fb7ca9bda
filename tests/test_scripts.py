"""Every script in ``benchmarks/`` and ``scripts/`` runs here on a tiny input, or says why not,
so none can rot unseen (a moved module, a renamed graph input, a changed API).

``RUN``: the script itself, in a fresh process, on a tiny input (its ``--smoke`` flag or small
sizes). ``IMPORT_ONLY``: scripts that need what CI cannot have (another checkout, a browser, a
GPU, fresh virtual environments, hours); each is still imported, so a broken import or name fails
here, and shell scripts are parsed with ``bash -n``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(p for d in ("benchmarks", "scripts") for p in (ROOT / d).iterdir() if p.suffix in (".py", ".sh"))


def _model_copy(tmp: Path, name: str = "fast") -> Path:
    from ferroute.router import resolve_model_dir

    d = tmp / name
    shutil.copytree(resolve_model_dir(name), d)
    return d


#: script -> (arguments, given the test's tmp folder; what its output must hold)
RUN = {
    "benchmarks/bench_inference.py": (lambda t: ["--model", "fast", "--smoke", "--json", str(t / "b.json")], "onnxruntime"),
    "benchmarks/bench_report_stats.py": (lambda t: ["--rounds", "1", "--n", "300"], "AUROC"),
    "benchmarks/bench_compare.py": (lambda t: ["--before", "HEAD", "--model", "fast", "--faces", "16", "--rounds", "1"], "largest |difference|"),
    "benchmarks/bench_models.py": (lambda t: ["fast", "--faces", "16", "--rounds", "1"], "fast"),
    "benchmarks/bench_server.py": (lambda t: ["--clients", "2", "--requests", "2", "--photo", str(EXAMPLES / "astronaut_photo.jpg"),
                                              "--attack-connections", "20", "--out", str(t / "s.txt")], "byte after their response"),
    "benchmarks/bench_int8_onnx.py": (lambda t: ["--models", "fast", "--calib-faces", "16", "--test-faces", "64", "--seconds", "0.2",
                                                 "--out", str(t / "q.txt")], "int8"),
    "scripts/fit_agreement.py": (lambda t: [str(_model_copy(t))], "vote temperature"),
    "scripts/make_model_card.py": (lambda t: [str(_model_copy(t)), str(ROOT / "docs" / "fast"), "--machine", "test"], "MODEL_CARD.md"),
    "scripts/render_docs.py": (lambda t: ["--check"], ""),
    "scripts/make_probe_face.py": (lambda t: ["--out", str(t / "smile.png")], "smile.png"),
    "scripts/site_example.py": (lambda t: ["--half", "130", "--no-corruptions", "--out", str(t)], "rejected with the site folder"),
}
#: script -> why it is imported (or parsed) rather than run here
IMPORT_ONLY = {
    "benchmarks/bench_core.py": "builds two fresh virtual environments with pip (minutes, network to the registry)",
    "benchmarks/bench_photos.py": "routes 1,000 photos several times and rewrites docs/framing.png",
    "benchmarks/bench_scale.py": "starts a Ray cluster on 10,000 photos (tests/test_scale.py runs Ray on a few)",
    "benchmarks/bench_soak.py": "a soak is minutes by definition (bench_server's crowd code runs above)",
    "benchmarks/gpu_check.sh": "needs a CUDA GPU",
    "scripts/build_lite0.sh": "trains five members (hours)",
    "scripts/build_mobilefacenet.sh": "trains members (an hour or more each)",
    "scripts/export_embedded.py": "rewrites the embedded graphs; tests/test_embedded_graphs.py checks they are what it writes",
    "scripts/make_examples.py": "rewrites examples/; tests/test_default_model.py checks its rules",
    "scripts/make_frost_textures.py": "needs the imagecorruptions package's photos",
    "scripts/make_reference_cbar.py": "needs a checkout of facebookresearch/augmentation-corruption",
    "scripts/make_reference_corruptions.py": "needs the imagecorruptions package; tests/test_corruptions.py pins its outputs",
    "scripts/measure_fer_framing.py": "runs YuNet over every FERPlus training face and rewrites a shipped asset",
    "scripts/screenshot_page.py": "needs Chromium and Playwright (tests/test_web.py drives the page where they are)",
    "scripts/select_shift_score.py": "its rule's run fits and scores every candidate under twelve shifts (tens of minutes)",
}


def test_every_script_is_run_or_says_why_not():
    names = {str(p.relative_to(ROOT)) for p in SCRIPTS}
    assert names == set(RUN) | set(IMPORT_ONLY), f"not listed: {sorted(names - set(RUN) - set(IMPORT_ONLY))}; gone: {sorted((set(RUN) | set(IMPORT_ONLY)) - names)}"
    assert not set(RUN) & set(IMPORT_ONLY)


@pytest.mark.parametrize("script", [str(p.relative_to(ROOT)) for p in SCRIPTS])
def test_every_script_imports_or_parses(script):
    path = ROOT / script
    if path.suffix == ".sh":
        res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))  # main() is behind __name__ == "__main__"
    finally:
        sys.path.remove(str(path.parent))


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("script", sorted(RUN))
def test_script_runs_on_a_tiny_input(script, tmp_path):
    if not os.environ.get("FERPLUS_DIR") and script in ("benchmarks/bench_compare.py", "benchmarks/bench_models.py",
                                                        "benchmarks/bench_int8_onnx.py", "scripts/fit_agreement.py"):
        pytest.skip("needs FERPlus (FERPLUS_DIR)")
    args, expect = RUN[script]
    res = subprocess.run([sys.executable, str(ROOT / script), *args(tmp_path)], capture_output=True, text=True,
                         timeout=600, cwd=ROOT, env={**os.environ, "FERROUTE_CACHE": os.environ.get("FERROUTE_CACHE", str(tmp_path / "cache"))})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    out = res.stdout + "".join(p.read_text() for p in tmp_path.glob("*.txt"))
    assert expect in out, out[-2000:]
    if script == "benchmarks/bench_inference.py":
        rows = json.loads((tmp_path / "b.json").read_text())["rows"]
        assert any(r["backend"] == "onnxruntime" and r["faces_per_s"] > 0 for r in rows)
