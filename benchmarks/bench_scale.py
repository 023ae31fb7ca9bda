"""Scale-out figures: ``ferroute route`` locally and on Ray Data, photos/s and peak memory.

    pip install "ferroute[ray]" && python benchmarks/bench_scale.py [--photos ../shared/data/photos_dev] [--out docs/records/bench_scale.txt]

* local path, Parquet output, on 1,000 and on 10,000 photos (the 1,000 linked ten times
  under new names): wall time, photos/s and peak resident memory of the process;
* Ray on this machine's 2 CPUs: a cluster started by the command itself (``--engine ray``,
  start-up included), and the same job on a running cluster (``ray start --head``; the
  job joins it with ``--address``), whose wall is the job alone (its actors still start and
  load the model: about 8 s), on the 1,000 and on the 10,000 photos; decisions compared
  row by row with the local path's;
* a two-node Ray cluster on this one machine (``ray start --head --num-cpus 1`` plus a
  second ``ray start --address ... --num-cpus 1``, loopback only, Ray's token
  authentication on: ``RAY_AUTH_MODE=token``).

Peak memory of a Ray run is the sum over the cluster's processes (sampled every 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from bench_photos import (
    machine,  # CPU model, cores and the instruction sets, as bench_photos states them
)

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RAY = str(Path(PY).parent / "ray")


def sample_peak(pids_fn, stop: threading.Event, out: list[int]) -> None:
    peak = 0
    while not stop.is_set():
        total = 0
        for p in pids_fn():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        stop.wait(0.5)
    out.append(peak)


def timed(cmd: list[str], procs_fn=None) -> dict:
    """Run a command; wall seconds and peak RSS (of its process tree, or of procs_fn())."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(p.pid)
    tree = procs_fn or (lambda: [me] + me.children(recursive=True))
    stop, peak = threading.Event(), []
    th = threading.Thread(target=sample_peak, args=(tree, stop, peak), daemon=True)
    th.start()
    _, err = p.communicate()
    wall = time.perf_counter() - t
    stop.set()
    th.join()
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {err[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak[0] / 2**20)}


def ray_procs() -> list[psutil.Process]:
    """Every process of a Ray cluster on this machine (raylet, GCS, workers, the driver)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ray" in cmd and ("raylet" in cmd or "gcs_server" in cmd or "default_worker" in cmd or "ferroute" in cmd or "dashboard" in cmd or "log_monitor" in cmd):
            out.append(p)
    return out


def compare(a: Path, b: Path) -> dict:
    """Rows of two result folders matched by (source, face): how many, and the share with the same decision."""
    import pyarrow.dataset as pds

    def rows(p: Path) -> dict:
        t = pds.dataset(str(p)).to_table(columns=["source", "face", "decision"]).to_pylist()
        return {(r["source"], r["face"]): r["decision"] for r in t}

    x, y = rows(a), rows(b)
    common = set(x) & set(y)
    return {"rows_local": len(x), "rows_ray": len(y), "matched": len(common),
            "same_decision": round(sum(x[k] == y[k] for k in common) / max(1, len(common)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos_dev")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "records" / "bench_scale.txt")
    args = ap.parse_args()
    photos = sorted((args.photos / "images").glob("*.jpg"))
    n = len(photos)
    # Ray's token authentication on (its default for clusters started by `ray start`): the
    # second node and the job read the token the head wrote to ~/.ray/auth_token
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token")
    os.environ.update(env)
    res: dict = {"machine": machine(), "photos": n}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ten = tmp / "ten"
        ten.mkdir()
        for k in range(10):
            for p in photos:
                (ten / f"{k}_{p.name}").symlink_to(p.resolve())
        route = [PY, "-m", "ferroute", "route"]
        res["local_1x"] = timed(route + [str(args.photos / "images"), "--out", str(tmp / "l1.parquet")])
        res["local_10x"] = timed(route + [str(ten), "--out", str(tmp / "l10.parquet")])
        res["local_memory_10x_over_1x"] = round(res["local_10x"]["peak_rss_mb"] / res["local_1x"]["peak_rss_mb"], 3)
        res["ray_own_cluster"] = timed(route + [str(args.photos / "images"), "--engine", "ray", "--out", str(tmp / "r1.parquet")], ray_procs)
        for name, nodes in (("ray_running_cluster_1_node", 1), ("ray_running_cluster_2_nodes", 2)):
            subprocess.run([RAY, "start", "--head", "--num-cpus", "2" if nodes == 1 else "1", "--include-dashboard=false", "--port", "6391",
                            "--node-ip-address", "127.0.0.1", "--disable-usage-stats"], check=True, env=env, capture_output=True)
            try:
                if nodes == 2:
                    subprocess.run([RAY, "start", "--address", "127.0.0.1:6391", "--num-cpus", "1", "--disable-usage-stats"], check=True, env=env, capture_output=True)
                time.sleep(3)
                res[name] = timed(route + [str(args.photos / "images"), "--engine", "ray", "--address", "127.0.0.1:6391", "--workers", str(nodes),
                                           "--out", str(tmp / f"{name}.parquet")], ray_procs)
                if nodes == 1:  # the same 10,000 photos as local_10x: the job's start-up amortised
                    res[name + "_10x"] = timed(route + [str(ten), "--engine", "ray", "--address", "127.0.0.1:6391", "--workers", "2",
                                                        "--out", str(tmp / f"{name}_10x.parquet")], ray_procs)
                    res["decisions_ray_vs_local_10x"] = compare(tmp / "l10.parquet", tmp / f"{name}_10x.parquet")
            finally:
                subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
                time.sleep(2)
    for k, v in res.items():
        if isinstance(v, dict) and "wall_s" in v:
            v["photos_per_s"] = round((10 * n if k.endswith("10x") else n) / v["wall_s"], 1)
    res["ray_over_local_1x"] = round(res["ray_running_cluster_1_node"]["photos_per_s"] / res["local_1x"]["photos_per_s"], 3)
    res["ray_over_local_10x"] = round(res["ray_running_cluster_1_node_10x"]["photos_per_s"] / res["local_10x"]["photos_per_s"], 3)
    text = json.dumps(res, indent=1)
    print(text)
    args.out.write_text(f"# python benchmarks/bench_scale.py ({time.strftime('%Y-%m-%d %H:%M')})\n{text}\n")


if __name__ == "__main__":
    main()
