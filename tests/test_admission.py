"""Admission by predicted wait, per-request budgets, /metrics, and connections that cannot
starve the server (header timeout, envelope for every refusal)."""

import io
import os
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ferroute.serve.admission import Admission, CostModel, peek_pixels, retry_after
from ferroute.serve.limits import Limits
from ferroute.serve.app import create_app, start_local_server

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def png(w: int, h: int, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), value).save(buf, "PNG")
    return buf.getvalue()


def test_cost_model_learns_per_megapixel_and_per_face():
    m = CostModel()
    rng = np.random.default_rng(0)
    for _ in range(400):
        mpx, faces = rng.uniform(0, 5), int(rng.integers(0, 10))
        m.observe(mpx, faces, 1, 0.01 + 0.05 * mpx + 0.002 * faces)
    assert m.predict(4.0, 2) == pytest.approx(0.01 + 0.2 + 0.004, rel=0.05)
    assert m.predict(0.0, 0) >= 1e-3


def test_admission_admits_what_drains_in_time_and_says_how_long_otherwise():
    a = Admission(slots=2, queue_timeout_s=1.0, model=CostModel(base_s=0.1, per_mpx_s=0, per_face_s=0))
    tickets = []
    while True:  # 2 slots, 0.1 s each: about 20 requests ahead is a 1 s wait
        t, wait = a.try_admit(0.0, 1)
        if t is None:
            break
        tickets.append(t)
    assert 20 <= len(tickets) <= 21 and wait > 1.0 and retry_after(wait) == "2"
    for t in tickets[:5]:
        a.done(t, 1, 0.1)
    t, wait = a.try_admit(0.0, 1)
    assert t is not None and wait <= 1.0


def test_peek_pixels_reads_headers_of_every_part():
    b = b"xyz"
    body = (b"--" + b + b'\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n' + png(300, 200) + b"\r\n"
            + b"--" + b + b'\r\nContent-Disposition: form-data; name="files"; filename="b.txt"\r\n\r\nnot an image\r\n--' + b + b"--\r\n")
    assert peek_pixels(body, "multipart/form-data; boundary=xyz") == (60_000, 2)


@pytest.fixture(scope="module")
def router():
    import ferroute

    return ferroute.load()


def test_a_request_over_the_pixel_budget_is_refused_unread(router):
    app = create_app(router, token="", limits=Limits(max_request_pixels=5_000_000))
    c = TestClient(app, raise_server_exceptions=False)
    big = png(2000, 2000)
    r = c.post("/v1/route", files=[("files", ("a.png", big, "image/png")), ("files", ("b.png", big, "image/png"))])
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels" and "5,000,000" in r.json()["error"]["message"]
    r = c.post("/v1/route", files=[("files", ("a.png", big, "image/png"))])
    assert r.status_code == 200


def test_a_request_over_the_face_budget_is_413(router):
    c = TestClient(create_app(router, token="", limits=Limits(max_request_faces=1)), raise_server_exceptions=False)
    face = (EXAMPLES / "clear_face.png").read_bytes()
    r = c.post("/v1/route", files=[("files", ("a.png", face, "image/png")), ("files", ("b.png", face, "image/png"))])
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_faces"


def test_metrics_in_the_prometheus_text_format(router):
    from prometheus_client.parser import text_string_to_metric_families

    c = TestClient(create_app(router, token=""))
    face = (EXAMPLES / "clear_face.png").read_bytes()
    assert c.post("/v1/route", files=[("files", ("a.png", face, "image/png"))]).status_code == 200
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {"ferroute_requests", "ferroute_faces_routed", "ferroute_queue_length", "ferroute_predicted_wait_seconds",
            "ferroute_observed_wait_seconds", "ferroute_decode_seconds", "ferroute_ensemble_seconds", "ferroute_body_bytes_reserved"} <= set(fams)
    faces = [s.value for s in fams["ferroute_faces_routed"].samples if s.name == "ferroute_faces_routed_total"]
    assert faces == [1.0]


@pytest.fixture(scope="module")
def live():
    env = dict(os.environ, FERROUTE_API_TOKEN="", FERROUTE_HEADER_TIMEOUT_S="2", FERROUTE_BODY_TIMEOUT_S="4")
    proc, url = start_local_server(env=env)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.mark.slow
def test_half_open_connections_do_not_starve_the_server_and_are_closed(live):
    socks = []
    for _ in range(85):
        s = socket.create_connection(("127.0.0.1", _port(live)))
        s.sendall(b"POST /v1/route HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        socks.append(s)
    t = time.monotonic()
    with urllib.request.urlopen(live + "/healthz", timeout=2) as r:
        assert r.status == 200
    assert time.monotonic() - t < 2
    time.sleep(3)  # past the 2 s header timeout: each was answered in the envelope and closed
    s = socks[0]
    s.settimeout(2)
    data = s.recv(4096)
    assert b"408" in data.split(b"\r\n")[0] and b'"header_timeout"' in data
    for s in socks:
        s.close()


@pytest.mark.slow
def test_slow_bodies_hold_no_slot_and_malformed_requests_get_the_envelope(live):
    slow = []
    for _ in range(6):  # more than the 4 routing slots, each sending its body at a trickle
        s = socket.create_connection(("127.0.0.1", _port(live)))
        s.sendall(b"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b")
        slow.append(s)
    face = (EXAMPLES / "clear_face.png").read_bytes()
    body = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="f.png"\r\nContent-Type: image/png\r\n\r\n' + face + b"\r\n--b--\r\n")
    req = urllib.request.Request(live + "/v1/route", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    t = time.monotonic()
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    assert time.monotonic() - t < 2
    for s in slow:
        s.close()
    s = socket.create_connection(("127.0.0.1", _port(live)))
    s.sendall(b"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    s.settimeout(5)
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 400") and b'"bad_request"' in data and b"request_id" in data
    s.close()


def test_the_drain_rate_is_measured_while_busy():
    a = Admission(slots=2, queue_timeout_s=10.0, model=CostModel(base_s=0.1, per_mpx_s=0, per_face_s=0))
    tickets = [a.try_admit(0.0, 1)[0] for _ in range(10)]
    assert a.predicted_wait() == pytest.approx(1.0 / 2)  # 10 x 0.1 s over 2 slots at the start
    t = 100.0
    for tk in tickets[:8]:  # the server drains 0.1 predicted s every 0.2 s: half a second per second
        t += 0.2
        with a._lock:
            busy = a.pending >= a.slots
            a.pending_s -= tk.seconds
            a.pending -= 1
            a._measure(tk.seconds, busy, t)
    assert a.rate < 2.0  # slower than the slots alone would say
