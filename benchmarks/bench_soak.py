"""`ferroute serve` under hostile load on loopback: a soak of mixed good, bad and huge inputs,
and a burst of huge 16-bit uploads. Errors by status, latency percentiles, memory over time.

    python benchmarks/bench_soak.py [--minutes 30] [--clients 50] [--out docs/records/bench_soak.txt]

* soak: ``clients`` concurrent clients (each waiting as told by ``Retry-After`` after a 503)
  send requests for ``minutes`` minutes, each request
  one input drawn in a fixed rotation: real news photos (``photos_dev``), 48x48 faces, a
  photo with a face beside a garbage file, garbage bytes, a truncated JPEG, a 100000x30 PNG,
  a 16-bit 7000x7000 PNG (93 KB that decodes to 98 MB), a file over the upload limit, a
  request without files, and an unknown path. Every answer must be 200, a 4xx that says
  why, or a deliberate 503; any other 5xx counts as a failure. The server's resident memory
  is sampled every 5 s; after the first minute (warm-up) and at the end are compared.
* burst: 40 concurrent uploads of the 16-bit 7000x7000 PNG; peak resident memory and the
  answers (each a result, or a clear 413/503).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from ferroute.serve.app import start_local_server

ROOT = Path(__file__).resolve().parents[1]


def png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def payloads(photos: Path) -> list[tuple[str, list[tuple[str, tuple[str, bytes, str]]] | None, str]]:
    """(kind, multipart files or None for a GET, path) in a fixed rotation."""
    rng = np.random.default_rng(0)
    real = [p.read_bytes() for p in sorted((photos / "images").glob("*.jpg"))[:50]] or [png(Image.new("RGB", (300, 300), (90, 90, 90)), "JPEG")]
    face = png(Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)))
    deep = png(Image.fromarray(np.zeros((7000, 7000), np.uint16)))
    wide = png(Image.new("L", (100000, 30)))
    big = rng.integers(0, 256, 11 * 2**20, dtype=np.uint8).tobytes()
    out: list = []
    for k in range(len(real)):
        out += [
            ("photo", [("files", ("photo.jpg", real[k], "image/jpeg"))], "/v1/route"),
            ("face", [("files", ("face.png", face, "image/png"))], "/v1/route"),
            ("photo+garbage", [("files", ("photo.jpg", real[k], "image/jpeg")), ("files", ("junk.png", b"\x89PNG junk", "image/png"))], "/v1/route"),
        ]
        if k % 5 == 0:
            out += [
                ("garbage", [("files", ("junk.jpg", rng.integers(0, 256, 2000, dtype=np.uint8).tobytes(), "image/jpeg"))], "/v1/route"),
                ("truncated", [("files", ("cut.jpg", real[k][: len(real[k]) // 3], "image/jpeg"))], "/v1/route"),
                ("wide", [("files", ("wide.png", wide, "image/png"))], "/v1/route"),
                ("deep16", [("files", ("deep.png", deep, "image/png"))], "/v1/route"),
                ("over_limit", [("files", ("big.jpg", big, "image/jpeg"))], "/v1/route"),
                ("no_files", [], "/v1/route"),
                ("unknown_path", None, "/nope"),
            ]
    return out


class Sampler(threading.Thread):
    """Resident memory of the server (and any children) every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 5.0):
        super().__init__(daemon=True)
        self.proc, self.every, self.samples, self.stop = psutil.Process(pid), every, [], threading.Event()

    def rss(self) -> int:
        procs = [self.proc] + self.proc.children(recursive=True)
        return sum(p.memory_info().rss for p in procs if p.is_running())

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            self.samples.append((round(time.monotonic() - t0, 1), self.rss()))
            self.stop.wait(self.every)


def send(client: httpx.Client, url: str, item) -> tuple[str, int, float, str | None]:
    kind, files, path = item
    t = time.perf_counter()
    retry = None
    try:
        if files is None:
            r = client.get(url + path)
        else:
            r = client.post(url + path, files=files) if files else client.post(url + path)
        code = r.status_code
        retry = r.headers.get("retry-after")
        if code >= 400:
            body = r.json()
            assert set(body) == {"error"} and body["error"]["message"], r.text
    except httpx.HTTPError as exc:
        code = -1 if not isinstance(exc, httpx.TimeoutException) else -2
    return kind, code, time.perf_counter() - t, retry


def soak(url: str, pid: int, minutes: float, clients: int, items: list) -> dict:
    sampler = Sampler(pid)
    sampler.start()
    results: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + minutes * 60
    warm: list[int] = []

    def client_loop(k: int) -> None:
        with httpx.Client(timeout=120) as client:
            i = k
            while time.monotonic() < deadline:
                res = send(client, url, items[i % len(items)])
                with lock:
                    results.append(res)
                i += clients
                if res[1] == 503:  # a well-behaved client waits as told (Retry-After) before its next request
                    time.sleep(float(res[3] or 1))

    def warmup_mark() -> None:
        time.sleep(min(60.0, minutes * 60 / 3))
        warm.append(sampler.rss())

    threading.Thread(target=warmup_mark, daemon=True).start()
    t0 = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    wall = time.monotonic() - t0
    time.sleep(6)
    end_rss = sampler.rss()
    sampler.stop.set()
    lat = np.array([r[2] for r in results if r[1] == 200])
    by_status = Counter(r[1] for r in results)
    by_kind = {k: dict(Counter(r[1] for r in results if r[0] == k)) for k in sorted({r[0] for r in results})}
    bad_5xx = sum(v for s, v in by_status.items() if s >= 500 and s != 503)
    return {
        "minutes": minutes, "clients": clients, "requests": len(results), "requests_per_s": round(len(results) / wall, 1),
        "by_status": {str(k): v for k, v in sorted(by_status.items())}, "by_kind": {k: {str(s): n for s, n in v.items()} for k, v in by_kind.items()},
        "unexpected_5xx": bad_5xx, "client_errors_or_timeouts": by_status.get(-1, 0) + by_status.get(-2, 0),
        "latency_200_s": {p: round(float(np.percentile(lat, q)), 3) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))} if len(lat) else None,
        "rss_mb": {"after_warmup": round(warm[0] / 2**20) if warm else None, "end": round(end_rss / 2**20), "peak": round(max(s[1] for s in sampler.samples) / 2**20)},
        "rss_end_over_warmup": round(end_rss / warm[0], 3) if warm else None,
        "rss_mb_over_time": [(t, round(v / 2**20)) for t, v in sampler.samples[:: max(1, len(sampler.samples) // 40)]],
    }


def burst(url: str, pid: int, n: int = 40) -> dict:
    deep = png(Image.fromarray(np.zeros((7000, 7000), np.uint16)))
    sampler = Sampler(pid, every=0.2)
    sampler.start()
    with httpx.Client(timeout=300) as client, ThreadPoolExecutor(n) as pool:
        res = list(pool.map(lambda _: send(client, url, ("deep16", [("files", ("deep.png", deep, "image/png"))], "/v1/route")), range(n)))
    sampler.stop.set()
    sampler.join()
    return {"uploads": n, "png_bytes": len(deep), "by_status": dict(Counter(str(r[1]) for r in res)),
            "peak_rss_mb": round(max(s[1] for s in sampler.samples) / 2**20), "wall_s": round(max(r[2] for r in res), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos_dev")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "records" / "bench_soak.txt")
    args = ap.parse_args()
    proc, url = start_local_server(env=dict(os.environ, FERROUTE_API_TOKEN=""))
    try:
        rss0 = psutil.Process(proc.pid).memory_info().rss
        report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores; server: ferroute serve with its default limits",
                  "rss_mb_idle": round(rss0 / 2**20), "burst_16bit_7000x7000": burst(url, proc.pid)}
        print(json.dumps(report, indent=1), flush=True)
        report["soak"] = soak(url, proc.pid, args.minutes, args.clients, payloads(args.photos))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = json.dumps(report, indent=1)
    print(text)
    args.out.write_text(f"# python benchmarks/bench_soak.py --minutes {args.minutes:g} --clients {args.clients} ({time.strftime('%Y-%m-%d %H:%M')})\n{text}\n")


if __name__ == "__main__":
    main()
