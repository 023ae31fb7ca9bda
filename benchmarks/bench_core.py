"""The core install (onnxruntime, no torch) beside the torch path, in one run.

    python benchmarks/bench_core.py [--photos ../shared/data/photos_dev] [--out docs/records/bench_core.txt] [--skip-install]

Needs the full environment (``pip install -e ".[test]"``) for the torch side and FERPlus
(``FERPLUS_DIR``) for the agreement rows. It measures:

* environments: a fresh venv with ``pip install .`` (core) and one with ``pip install ".[train]"``
  (torch): install time and size on disk; whether torch imports in the core one;
* ``ferroute route`` of the examples and of ``photos_dev`` end to end (a fresh process each:
  start-up, model load, decoding, detection, ensemble, CSV written): photos/s and peak RSS, core
  venv (onnx) against the torch path (``--backend torch``, full venv), runs alternating;
* an idle ``ferroute serve``'s peak RSS after one request, in each environment;
* ensemble faces/s at batch 1 and 256: the shipped graph on onnxruntime against the torch
  model as it runs by default here (bf16 or int8 where the model says so), same threads;
* decisions: the core against the torch path on FERPlus test faces and on ``photos_dev``
  faces, for ``default`` and ``fast`` (share identical, and what differs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU's model name (Linux), else the machine type."""
    try:
        return next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def recorder() -> tuple[list[str], Callable[..., None]]:
    """The lines a benchmark writes to its ``--out`` file, and ``say``, which prints and keeps one."""
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    return lines, say


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def make_venv(where: Path, spec: str) -> tuple[float, int]:
    """Create ``where`` and ``pip install spec`` into it: (seconds, bytes)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    subprocess.run([str(where / "bin" / "pip"), "install", "-q", spec], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t, du(where)


def timed_rss(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(seconds, peak RSS MB, exit code) of a command, measured in a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode; "
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env, check=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024, int(out[2])


def serve_rss(ferroute: Path, extra: list[str]) -> float:
    """Peak RSS (MB) of ``ferroute serve`` after start-up and one request of the example face."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(ferroute), "serve", "--port", str(port), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        body, boundary = (ROOT / "examples" / "clear_face.png").read_bytes(), "xferroutebench"
        data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"f.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(url + "/v1/route", data=data, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        urllib.request.urlopen(req, timeout=60).read()
        time.sleep(1)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM")).split()[1]) / 1024
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def faces_per_s(predict, faces: np.ndarray, batch: int, seconds: float = 4.0) -> float:
    predict(faces[:batch])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for s in range(0, len(faces), batch):
            predict(faces[s : s + batch])
            n += len(faces[s : s + batch])
    return n / (time.perf_counter() - t0)


def decisions(router, faces: np.ndarray) -> list[str]:
    return [r["decision"] for r in router.route_faces(faces)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos_dev" / "images")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-install", action="store_true", help="reuse the venvs of an earlier run under --venvs")
    ap.add_argument("--venvs", type=Path, default=Path(tempfile.gettempdir()) / "ferroute-bench-venvs")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    lines, say = recorder()

    import ferroute
    from ferroute.evaluate.ferplus import load_split
    from ferroute.vision.faces import FaceDetector, find_faces

    say(f"# bench_core: {time.strftime('%Y-%m-%d')}, ferroute {ferroute.__version__}, {cpu_name()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    say(f"# command: python benchmarks/bench_core.py {' '.join(sys.argv[1:])}")
    core, full = args.venvs / "core", args.venvs / "torch"
    if not args.skip_install:
        shutil.rmtree(args.venvs, ignore_errors=True)
        args.venvs.mkdir(parents=True)
        for name, where, spec in (("core", core, "."), ("torch", full, ".[train]")):
            s, size = make_venv(where, spec)
            say(f"install {name:5s} pip install {spec!r:10s}: {s:6.0f} s, {size / 2**20:7.0f} MB on disk")
    has_torch = subprocess.run([str(core / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode == 0
    say(f"core venv: {du(core) / 2**20:.0f} MB, torch importable: {has_torch}")
    say(f"torch venv: {du(full) / 2**20:.0f} MB")

    # --- end to end: a fresh process each, alternating
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    tmp = Path(tempfile.mkdtemp())
    runs: dict[str, list[tuple[float, float]]] = {}
    for rep in range(args.repeats):
        for label, exe, extra in (("core (onnx)", core / "bin" / "ferroute", []), ("torch path", full / "bin" / "ferroute", ["--backend", "torch"])):
            for what, target in (("examples", ROOT / "examples"), ("photos_dev", args.photos)):
                s, rss, rc = timed_rss([str(exe), "route", str(target), *extra, "--format", "csv", "--out", str(tmp / f"{rep}.csv")])
                assert rc in (0, 1), f"{label} {what}: exit {rc}"
                runs.setdefault(f"{label} {what}", []).append((s, rss))
    for k, v in runs.items():
        n = len(photos) if k.endswith("photos_dev") else len(list((ROOT / "examples").iterdir()))
        best = min(s for s, _ in v)
        say(f"route {k:24s}: best {best:6.1f} s = {n / best:6.1f} photos/s; peak RSS {max(r for _, r in v):5.0f} MB ({len(v)} runs)")
    ratio = min(s for s, _ in runs["torch path photos_dev"]) / min(s for s, _ in runs["core (onnx) photos_dev"])
    say(f"photos_dev: core at {ratio:.2f}x the torch path's photos/s")
    for label, exe, extra in (("core (onnx)", core / "bin" / "ferroute", []), ("torch path", full / "bin" / "ferroute", ["--backend", "torch"])):
        say(f"serve {label:12s}: peak RSS {serve_rss(exe, extra):5.0f} MB after start-up and one request")

    # --- the ensemble alone, and decisions
    from ferroute.router import FERRouter

    data = os.environ.get("FERPLUS_DIR")
    te = load_split("test", data)
    for name in ("default", "fast"):
        onnx_r, torch_r = FERRouter.load(name, backend="onnx"), FERRouter.load(name, backend="torch")
        info = torch_r.ensemble.run_info()
        for b in (1, 256):
            fo = faces_per_s(onnx_r.ensemble.predict_proba, te.images[:512], b)
            ft = faces_per_s(torch_r.ensemble.predict_proba, te.images[:512], b)
            say(f"{name} ensemble batch {b:3d}: onnxruntime fp32 {fo:7.0f} faces/s, torch {info['precision']} {ft:7.0f} faces/s "
                f"({info['threads']} threads each)")
        a, b_ = decisions(onnx_r, te.images), decisions(torch_r, te.images)
        same = np.mean([x == y for x, y in zip(a, b_)])
        diff = {}
        for x, y in zip(a, b_):
            if x != y:
                diff[f"{y}->{x}"] = diff.get(f"{y}->{x}", 0) + 1
        say(f"{name} FERPlus test ({len(a)} faces): same decision {same:.4f}; torch->core changes {json.dumps(diff)}")
        prep = find_faces([str(p) for p in photos], FaceDetector())
        crops = np.stack(prep.crops)
        a, b_ = decisions(onnx_r, crops), decisions(torch_r, crops)
        same = np.mean([x == y for x, y in zip(a, b_)])
        say(f"{name} photos_dev ({len(a)} faces): same decision {same:.4f}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
