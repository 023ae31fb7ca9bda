"""Load test of `ferroute serve` on loopback: concurrent clients, latency, errors, memory.

    python benchmarks/bench_server.py [--clients 50] [--requests 20] [--model DIR]

Starts a real uvicorn process on 127.0.0.1, sends `clients x requests` POST /v1/route
requests (one 48x48 face each) from concurrent clients, and prints requests/s, p50/p95
latency, the error count, and the server's resident memory after the first requests and
at the end (growth beyond warm-up would show a leak).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time

import httpx
import numpy as np
import psutil
from PIL import Image

from ferroute.server import start_local_server


async def run(url: str, clients: int, requests: int, payloads: list[bytes], proc: psutil.Process) -> dict:
    lat: list[float] = []
    errors = 0
    rss_after_warmup = None
    done = 0
    async with httpx.AsyncClient(timeout=60) as client:
        async def worker(k: int) -> None:
            nonlocal errors, done, rss_after_warmup
            for i in range(requests):
                data = payloads[(k + i) % len(payloads)]
                t0 = time.perf_counter()
                try:
                    r = await client.post(url + "/v1/route", files=[("files", ("face.png", data, "image/png"))])
                    if r.status_code != 200 or "faces" not in r.json()["results"][0]:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                lat.append(time.perf_counter() - t0)
                done += 1
                if done == clients and rss_after_warmup is None:
                    rss_after_warmup = proc.memory_info().rss

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {
        "requests": len(lat), "errors": errors, "wall_s": wall, "requests_per_s": len(lat) / wall,
        "p50_ms": 1000 * float(np.percentile(lat, 50)), "p95_ms": 1000 * float(np.percentile(lat, 95)),
        "rss_after_first_requests_mb": (rss_after_warmup or 0) / 2**20, "rss_end_mb": proc.memory_info().rss / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of clients x requests; memory is compared between rounds")
    args = ap.parse_args()
    server, url = start_local_server(args.model, timeout=120)
    try:
        rng = np.random.default_rng(0)
        payloads = []
        for _ in range(16):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(buf, "PNG")
            payloads.append(buf.getvalue())
        proc = psutil.Process(server.pid)
        rounds = [asyncio.run(run(url, args.clients, args.requests, payloads, proc)) for _ in range(args.rounds)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"# ferroute serve load test: {args.rounds} rounds of {args.clients} clients x {args.requests} requests on loopback")
    for i, res in enumerate(rounds, 1):
        print(f"round {i}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()))
    first = rounds[0]
    print(f"memory: {first['rss_after_first_requests_mb']:.0f} MB after the first {args.clients} requests, "
          + ", ".join(f"{r['rss_end_mb']:.0f} MB after round {i}" for i, r in enumerate(rounds, 1)))
    if len(rounds) > 1:
        print(f"growth over the last round: {rounds[-1]['rss_end_mb'] - rounds[-2]['rss_end_mb']:+.1f} MB")
    sys.exit(1 if any(r["errors"] for r in rounds) else 0)


if __name__ == "__main__":
    main()
