"""The service under the attacks a reliability probe found (2026-12-07), each against a real
``ferroute serve`` on loopback: connections that could be held forever by a byte now and then,
slow uploads that held the body budget by what they declared, refusals at the connection
limit that reached the client as a reset."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from ferroute.serve.app import start_local_server
from tests.test_server_limits import FACE


def _connect(url: str, timeout: float = 5.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def _read_head(s: socket.socket) -> bytes:
    return _bench_server().read_head(s)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    env = dict(os.environ, FERROUTE_API_TOKEN="", FERROUTE_MAX_CONNECTIONS="60", FERROUTE_MAX_CONNECTIONS_PER_CLIENT="1000")
    proc, url = start_local_server(tiny_model_dir, env=env)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def _bench_server():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_server.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("bench_server", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_byte_after_the_response_cannot_hold_a_connection(server):
    """GET /healthz declaring a body, the answer read, then one body byte: before, uvicorn's
    keep-alive timer was cancelled by that byte and never re-armed (held forever). The bench's
    own attack, on 40 connections: every one closed within 2x the keep-alive timeout."""
    got = _bench_server().byte_after_response(server, n=40)
    assert got["closed_within_2x_keep_alive"] == 40 and got["healthz_worst_s"] < 2, got


def test_a_client_past_the_connection_limit_reads_the_envelope_not_a_reset(server):
    held = [_connect(server) for _ in range(60)]
    time.sleep(0.3)
    try:
        answers = []
        for _ in range(5):
            s = _connect(server)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answers.append(_read_head(s))
            except ConnectionResetError:
                answers.append(b"reset")
            s.close()
        assert all(a.startswith(b"HTTP/1.1 503") and b"too_many_connections" in a for a in answers), answers
    finally:
        for s in held:
            s.close()


def test_trickling_uploads_do_not_hold_the_budget_from_a_normal_request(tiny_model_dir):
    """21 uploads declaring 25 MiB, sending a byte a second, against a 512 MiB budget: the
    budget counts bytes held, so a normal request is routed at once; the trickles are cut."""
    env = dict(os.environ, FERROUTE_API_TOKEN="", FERROUTE_MIN_BODY_RATE="1024")
    proc, url = start_local_server(tiny_model_dir, env=env)
    stop = threading.Event()
    statuses: list[bytes] = []

    def trickle() -> None:
        s = _connect(url, timeout=30)
        s.sendall(b"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  + f"Content-Length: {25 << 20}\r\n\r\n".encode())
        s.settimeout(0.5)
        while not stop.is_set():
            try:
                s.sendall(b"-")
                head = s.recv(65536)
                if head:
                    statuses.append(head[:12])
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        s.close()

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(21)]
    try:
        for th in threads:
            th.start()
        time.sleep(1.0)
        import httpx

        t = time.monotonic()
        r = httpx.post(url + "/v1/route", files={"files": ("face.png", FACE, "image/png")}, timeout=30)
        assert r.status_code == 200 and time.monotonic() - t < 5, (r.status_code, r.text[:200])
        time.sleep(7)  # past the grace period: every trickle is answered 408 and cut
        assert len(statuses) == 21 and all(s.startswith(b"HTTP/1.1 408") for s in statuses), statuses
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=20)
