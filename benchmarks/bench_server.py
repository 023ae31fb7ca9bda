"""Load test of `ferroute serve` on loopback: crowds, hostile connections, memory.

    python benchmarks/bench_server.py [--clients 10,50,100,200,500] [--requests 20] [--soak-s 0] [--out docs/records/bench_server.txt]

Starts a real `ferroute serve` (default limits) on 127.0.0.1 and measures, from client
processes on the same machine:

* crowds: each of ``--clients`` concurrent clients sends ``--requests`` POST /v1/route, once
  with `examples/clear_face.png` and once with a `photos_dev` photo: status counts, p50 / p95 /
  p99 latency of the answered (200) requests, req/s, whether every non-200 is the error
  envelope with a request id, and the server's peak RSS;
* 85 half-open connections (request headers never finished): how long `/healthz` takes while
  they are open;
* 4 and 8 slow-body clients (1 byte a second): how long a normal request takes meanwhile;
* a soak (``--soak-s`` seconds of 50 clients, 0 to skip): status counts and RSS over time.

Every request loop is bounded in count and time and targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from ferroute.serve.app import start_local_server

ROOT = Path(__file__).resolve().parents[1]


def envelope_ok(r: httpx.Response) -> bool:
    try:
        e = r.json()["error"]
        return bool(e["code"]) and bool(e["request_id"]) and r.headers.get("x-request-id") == e["request_id"]
    except Exception:
        return False


async def crowd(url: str, clients: int, requests: int, payload: bytes, name: str, proc: psutil.Process, deadline_s: float = 300) -> dict:
    lat: list[float] = []
    status: dict[str, int] = {}
    bad_envelope = 0
    peak = proc.memory_info().rss
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        stop = time.monotonic() + deadline_s

        async def worker() -> None:
            nonlocal bad_envelope, peak
            for _ in range(requests):
                if time.monotonic() > stop:
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.post(url + "/v1/route", files=[("files", (name, payload, "application/octet-stream"))])
                    key = str(r.status_code)
                    if r.status_code == 200:
                        lat.append(time.perf_counter() - t0)
                    elif not envelope_ok(r):
                        bad_envelope += 1
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                status[key] = status.get(key, 0) + 1
                peak = max(peak, proc.memory_info().rss)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    pct = (lambda q: 1000 * float(np.percentile(lat, q))) if lat else (lambda q: float("nan"))
    n = sum(status.values())
    return {"requests": n, "status": dict(sorted(status.items())), "not_envelope": bad_envelope, "req_s": n / wall,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "peak_rss_mb": peak / 2**20}


def open_sockets(url: str, n: int, head: bytes) -> list[socket.socket]:
    """``n`` loopback connections to the server, each having sent ``head`` and nothing more."""
    port = int(url.rsplit(":", 1)[1])
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(head)
        socks.append(s)
    return socks


def server_waits(url: str) -> dict[float, float]:
    """The server's cumulative histogram of slot waits from ``/metrics``: ``{upper bound: count}``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    fam = next(f for f in text_string_to_metric_families(text) if f.name == "ferroute_observed_wait_seconds")
    return {float(smp.labels["le"]): smp.value for smp in fam.samples if smp.name.endswith("_bucket")}


def p95_bound(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest histogram bound holding 95 % of the waits observed between two snapshots."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts[float("inf")]
    return next((le for le, c in counts.items() if total and c >= 0.95 * total), float("nan"))


def half_open(url: str, n: int = 85) -> float:
    socks = open_sockets(url, n, b"POST /v1/route HTTP/1.1\r\nHost: x\r\n")
    t = time.perf_counter()
    httpx.get(url + "/healthz", timeout=30).raise_for_status()
    took = time.perf_counter() - t
    for s in socks:
        s.close()
    return took


def slow_bodies(url: str, face: bytes, n: int) -> float:
    socks = open_sockets(url, n, b"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n-")
    time.sleep(1)
    for s in socks:
        s.sendall(b"-")  # a byte a second, as the attack does
    t = time.perf_counter()
    httpx.post(url + "/v1/route", files=[("files", ("f.png", face, "image/png"))], timeout=60).raise_for_status()
    took = time.perf_counter() - t
    for s in socks:
        s.close()
    return took


def read_head(s: socket.socket) -> bytes:
    """What the server sent on ``s`` up to the end of a response head (or of the stream)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = s.recv(65536)
        if not more:
            break
        data += more
    return data


def byte_after_response(url: str, n: int = 1000, keep_alive_s: float = 5.0) -> dict[str, float]:
    """``n`` connections, each ``GET /healthz`` declaring a 1000-byte body, the answer read, then
    one body byte (the attack that once held every connection forever): how many the server has
    closed within 2x the keep-alive timeout, and the slowest ``/healthz`` of a new client meanwhile."""
    port = int(url.rsplit(":", 1)[1])
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        try:
            read_head(s)
            s.sendall(b"x")
        except OSError:
            pass
        socks.append(s)
    deadline, worst = time.monotonic() + 2 * keep_alive_s, 0.0
    while time.monotonic() < deadline:
        t = time.perf_counter()
        try:
            httpx.get(url + "/healthz", timeout=10).raise_for_status()
            worst = max(worst, time.perf_counter() - t)
        except httpx.HTTPError:
            worst = float("inf")
        time.sleep(0.5)
    closed = 0
    for s in socks:  # read what is left of each answer: closed is an end of stream (or a reset) after it
        s.setblocking(False)
        try:
            while True:
                if s.recv(65536) == b"":
                    closed += 1
                    break
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    return {"connections": n, "closed_within_2x_keep_alive": closed, "healthz_worst_s": worst}


def trickling_uploads(url: str, face: bytes, n: int = 21, declared: int = 25 << 20) -> dict[str, float]:
    """``n`` uploads declaring ``declared`` bytes each, sending a byte a second: the time a normal
    request takes meanwhile (once the budget counted declared lengths and refused it for 75 s)."""
    socks = open_sockets(url, n, b"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         + f"Content-Length: {declared}\r\n\r\n-".encode())
    time.sleep(1)
    for s in socks:
        try:
            s.sendall(b"-")
        except OSError:
            pass
    t = time.perf_counter()
    r = httpx.post(url + "/v1/route", files=[("files", ("f.png", face, "image/png"))], timeout=60)
    took = time.perf_counter() - t
    for s in socks:
        s.close()
    return {"uploads": n, "normal_request_status": r.status_code, "normal_request_s": took}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="10,50,100,200,500")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--soak-s", type=float, default=0)
    ap.add_argument("--photo", type=Path, default=ROOT.parent / "shared" / "data" / "photos_dev" / "images")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--attack-connections", type=int, default=1000, help="connections of the byte-after-response attack")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_core import cpu_name

    face = (ROOT / "examples" / "clear_face.png").read_bytes()
    photo_path = args.photo if args.photo.is_file() else sorted(args.photo.glob("*.jpg"))[0]
    photo = photo_path.read_bytes()
    lines = [f"# bench_server: {time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} CPUs; ferroute serve with its default limits, "
             f"clients on the same machine (loopback)", f"# command: python benchmarks/bench_server.py {' '.join(sys.argv[1:])}"]

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    proc, url = start_local_server(env=dict(os.environ, FERROUTE_API_TOKEN=""))
    try:
        ps = psutil.Process(proc.pid)
        for clients in (int(c) for c in args.clients.split(",")):
            for name, payload in (("clear_face.png", face), (photo_path.name, photo)):
                before = server_waits(url)
                r = asyncio.run(crowd(url, clients, args.requests, payload, name, ps))
                say(f"{clients:4d} clients x {args.requests} {name:22s}: {r['requests']} requests, status {r['status']}, "
                    f"not in the envelope {r['not_envelope']}; {r['req_s']:.0f} req/s; answered p50/p95/p99 "
                    f"{r['p50_ms']:.0f}/{r['p95_ms']:.0f}/{r['p99_ms']:.0f} ms (at the clients); server-side slot wait p95 "
                    f"<= {p95_bound(before, server_waits(url)):g} s; peak RSS {r['peak_rss_mb']:.0f} MB")
        say(f"85 half-open connections: /healthz answered in {half_open(url):.3f} s")
        for n in (4, 8):
            say(f"{n} slow-body clients: a normal request took {slow_bodies(url, face, n):.3f} s")
        b = byte_after_response(url, args.attack_connections)
        say(f"{b['connections']} connections sending a byte after their response: {b['closed_within_2x_keep_alive']} closed within "
            f"2x the keep-alive timeout; /healthz meanwhile at worst {b['healthz_worst_s']:.3f} s")
        tr = trickling_uploads(url, face)
        say(f"{tr['uploads']} uploads declaring 25 MiB, trickling a byte a second: a normal request got {tr['normal_request_status']} "
            f"in {tr['normal_request_s']:.3f} s")
        if args.soak_s > 0:
            t_end = time.monotonic() + args.soak_s
            k = 0
            while time.monotonic() < t_end:
                r = asyncio.run(crowd(url, 50, 20, face, "clear_face.png", ps, deadline_s=t_end - time.monotonic()))
                k += 1
                if k % 10 == 1:
                    say(f"soak round {k}: status {r['status']}, p95 {r['p95_ms']:.0f} ms, RSS {ps.memory_info().rss / 2**20:.0f} MB")
            say(f"soak: {k} rounds over {args.soak_s:.0f} s, RSS at the end {ps.memory_info().rss / 2**20:.0f} MB")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
