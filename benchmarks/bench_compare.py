"""Same outputs, same speed? The working tree's ensemble inference against an earlier commit's.

    FERPLUS_DIR=... python benchmarks/bench_compare.py --before REV [--model default] [--faces 4096] [--rounds 4]

For a refactor of how models run: each side (``src/`` of commit ``REV``, exported with
``git archive``, and this working tree's ``src/``) runs in its own process, loads the same
embedded model and times ``predict_proba`` on the first ``--faces`` FERPlus test faces
(one warm-up call, then the best of 3). The sides alternate ``--rounds`` times, so drift
from neighbours on a shared machine hits both alike; the table gives each side's best and
median faces/s and the largest difference between their probabilities.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
try:  # the layout since 0.3.0
    from ferroute.evaluate.ferplus import load_split
    from ferroute.router import resolve_model_dir
    from ferroute.train.ensemble import Ensemble
except ImportError:  # one flat folder (0.2.x)
    from ferroute.data import load_split
    from ferroute.ensemble import Ensemble
    from ferroute.pipeline import resolve_model_dir
ens = Ensemble.load(resolve_model_dir(sys.argv[2] if sys.argv[2] != "default" else None))
faces = load_split("test").images[: int(sys.argv[3])]
probs = ens.predict_proba(faces)
times = []
for _ in range(3):
    t = time.perf_counter()
    ens.predict_proba(faces)
    times.append(time.perf_counter() - t)
np.save(sys.argv[4], probs)
print(json.dumps({"faces_per_s": len(faces) / min(times)}))
"""


def machine() -> str:
    """The CPU model and core count, as /proc/cpuinfo names them (platform's name elsewhere)."""
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def side_src(rev: str, into: Path) -> Path:
    """``src/`` of commit ``rev``, extracted under ``into``."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the commit to compare with (e.g. HEAD, a tag)")
    ap.add_argument("--model", default="default", help="embedded model name or model folder")
    ap.add_argument("--faces", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        sides = {f"before ({args.before})": side_src(args.before, Path(tmp) / "before"), "after (working tree)": ROOT / "src"}
        speeds: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(args.rounds):
            for name, src in sides.items():
                out = Path(tmp) / f"{abs(hash(name))}.npy"
                env = {**os.environ, "PYTHONPATH": str(src)}
                res = subprocess.run([sys.executable, "-c", CHILD, str(src), args.model, str(args.faces), str(out)],
                                     check=True, capture_output=True, text=True, env=env)
                speeds[name].append(json.loads(res.stdout.strip().splitlines()[-1])["faces_per_s"])
                print(f"round {r + 1}: {name}: {speeds[name][-1]:.0f} faces/s", file=sys.stderr)
        before, after = (np.load(Path(tmp) / f"{abs(hash(n))}.npy") for n in sides)
    print(f"# ensemble inference, before and after — {machine()}")
    print(f"model {args.model}, {args.faces} FERPlus test faces, predict_proba as loaded; {args.rounds} alternating rounds, best of 3 each")
    print(f"{'side':28s} {'best faces/s':>12s} {'median':>8s}")
    for name, v in speeds.items():
        print(f"{name:28s} {max(v):12.0f} {statistics.median(v):8.0f}")
    print(f"largest |difference| between the two sides' probabilities: {float(np.abs(before - after).max()):.2e}")


if __name__ == "__main__":
    main()
