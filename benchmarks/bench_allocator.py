"""What ``ensemble.reuse_freed_memory`` (the command line's malloc setting) does to batched
CPU inference: ``predict_proba`` over FERPlus test in fresh processes, alternately with glibc's
default malloc behaviour and with the setting, printing wall time, kernel time and page faults.

    python benchmarks/bench_allocator.py [--model fast] [--rounds 4]

Needs $FERPLUS_DIR. The machine's speed drifts, so the two modes alternate and the medians
over rounds are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, resource, sys, time
import torch
from ferroute.data import load_split
from ferroute.ensemble import Ensemble, reuse_freed_memory
from ferroute.pipeline import resolve_model_dir
took = reuse_freed_memory()
torch.set_num_threads(2)
ens = Ensemble.load(resolve_model_dir(sys.argv[1]))
x = load_split("test").images
ens.predict_proba(x)  # warm-up (and the compile, for models that compile)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(2):
    ens.predict_proba(x)
wall, r1 = (time.perf_counter() - t0) / 2, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"took": took, "wall_s": wall, "faces_per_s": len(x) / wall, "sys_s": (r1.ru_stime - r0.ru_stime) / 2,
                  "user_s": (r1.ru_utime - r0.ru_utime) / 2, "minor_faults": (r1.ru_minflt - r0.ru_minflt) / 2,
                  "precision": ens.precision, "tta": ens.tta}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="fast")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    res: dict[str, list[dict]] = {"glibc default": [], "reuse_freed_memory": []}
    for r in range(args.rounds):
        order = list(res) if r % 2 == 0 else list(res)[::-1]
        for mode in order:
            env = dict(os.environ, FERROUTE_REUSE_FREED_MEMORY="0" if mode == "glibc default" else "1")
            out = subprocess.run([sys.executable, "-c", CHILD, args.model], env=env, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            res[mode].append(row)
            print(f"round {r + 1} {mode:20} {row['faces_per_s']:7.0f} faces/s  wall {row['wall_s']:.2f} s  "
                  f"kernel {row['sys_s']:.2f} s  user {row['user_s']:.2f} s  page faults {row['minor_faults']:.0f}", flush=True)
    print(f"\nmodel {args.model} ({res['glibc default'][0]['precision']}, tta {res['glibc default'][0]['tta']}), "
          f"predict_proba over FERPlus test, 2 threads, median of {args.rounds} rounds:")
    base = np.median([x["faces_per_s"] for x in res["glibc default"]])
    for mode, rows in res.items():
        fps = np.median([x["faces_per_s"] for x in rows])
        print(f"  {mode:20} {fps:7.0f} faces/s  ({fps / base:.2f}x)  kernel time {np.median([x['sys_s'] for x in rows]):.2f} s per pass")


if __name__ == "__main__":
    main()
