"""The manual's worked example of "Calibrate to your site", on ``photos_dev`` (LFW news photos).

    FERPLUS_DIR=../shared/data/ferplus python scripts/site_example.py [--photos DIR] [--half 500] [--out docs/site_example]

Calibrates the default model on the first ``--half`` photos (sorted by name) with
``ferroute calibrate-site``, routes the next ``--half`` with the site folder and with the base
model, and writes the share of found faces each rejects beside the promise, plus the site
report, to ``--out`` (the record ``site_example.txt`` and the report's files).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rejected_share(rows_csv: Path) -> tuple[int, float]:
    rows = [r for r in csv.DictReader(rows_csv.open()) if r["decision"] not in ("no_face", "error")]
    return len(rows), sum(r["decision"] == "reject" for r in rows) / max(1, len(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos_dev" / "images")
    ap.add_argument("--half", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "site_example")
    ap.add_argument("--no-corruptions", action="store_true")
    args = ap.parse_args()
    photos = sorted(str(p) for p in args.photos.glob("*.jpg"))
    cal, test = photos[: args.half], photos[args.half : 2 * args.half]
    tmp = Path(tempfile.mkdtemp())
    site = tmp / "site"
    ferroute = [sys.executable, "-m", "ferroute"]
    t0 = time.time()
    (tmp / "cal.txt").write_text("\n".join(cal) + "\n")
    (tmp / "test.txt").write_text("\n".join(test) + "\n")
    subprocess.run([*ferroute, "calibrate-site", str(tmp / "cal.txt"), "--out", str(site),
                    *(["--no-corruptions"] if args.no_corruptions else [])], check=True)
    t1 = time.time()
    for name, model in (("site", str(site)), ("base", "default")):
        subprocess.run([*ferroute, "route", str(tmp / "test.txt"), "--model", model, "--format", "csv", "--out", str(tmp / f"{name}.csv")],
                       check=True, stderr=subprocess.DEVNULL)
    import json

    doc = json.loads((site / "site.json").read_text())
    g = doc["promise"]
    n, site_share = rejected_share(tmp / "site.csv")
    _, base_share = rejected_share(tmp / "base.csv")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    lines = [f"# site_example: {time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} CPUs",
             f"# command: python scripts/site_example.py {' '.join(sys.argv[1:])}",
             f"calibrated on photos 0-{args.half - 1} of {os.path.relpath(args.photos, ROOT)} (sorted by name): {doc['n_faces']} faces, "
             f"{t1 - t0:.0f} s; threshold {doc['z_threshold']:.4f} (the base model's {doc['base_z_threshold']:.4f})",
             f"promise: at most {doc['reject_rate']:.0%} of such faces rejected ({g['reject_rate_expected']:.2%} expected); "
             f"95 % bound {g['reject_rate_upper_95']:.2%}",
             f"routed photos {args.half}-{2 * args.half - 1}: {n} faces found; rejected with the site folder {site_share:.1%}, "
             f"with the base model {base_share:.1%}"]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    for f in ("site_report.md", "site_report.json", "site_rejected.png", "site_most_unusual_kept.png"):
        if (site / f).is_file():
            shutil.copy(site / f, args.out / f)
    (args.out / "site_example.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
