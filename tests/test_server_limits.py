"""The service under hostile input and load: one error envelope, bounded bodies, auth before
the body, bounded concurrent work, slow clients timed out, bad items isolated."""

import io
import os
import socket
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ferroute.serve.limits import Limits
from ferroute.router import FERRouter
from ferroute.serve.app import create_app, start_local_server


def enc(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


FACE = enc(Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)))


@pytest.fixture(scope="module")
def router(tiny_model_dir):
    return FERRouter.load(tiny_model_dir)


@pytest.fixture(scope="module")
def client(router):
    return TestClient(create_app(router, token="", max_upload_bytes=2_000_000), raise_server_exceptions=False)


def assert_envelope(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    assert body["error"]["request_id"] == r.headers["x-request-id"]


def test_every_error_has_one_envelope_with_a_request_id(client):
    assert_envelope(client.get("/nope"), 404, "not_found")
    assert_envelope(client.delete("/v1/route"), 405, "method_not_allowed")
    assert_envelope(client.post("/v1/route"), 422, "invalid_request")
    assert_envelope(client.post("/v1/route", files=[("files", ("bad.jpg", b"text", "image/jpeg"))]), 422, "bad_image")
    assert client.get("/healthz").headers["x-request-id"]


def test_a_crash_is_a_500_envelope_not_plain_text(tiny_model_dir):
    broken = FERRouter.load(tiny_model_dir)

    def boom(faces):
        raise RuntimeError("model exploded")

    broken.route_faces = boom
    c = TestClient(create_app(broken, token=""), raise_server_exceptions=False)
    assert_envelope(c.post("/v1/route", files=[("files", ("a.png", FACE, "image/png"))]), 500, "internal_error")


def test_the_openapi_document_names_the_error_envelope_and_routes(client):
    doc = client.get("/openapi.json").json()
    assert "/v1/route" in doc["paths"] and "request_id" in doc["info"]["description"]


SHAPES = st.tuples(st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "LA", "1", "CMYK", "I", "F"]),
                   st.sampled_from([1, 2, 3, 30, 47, 48, 49, 300, 4000, 40000, 100000]),
                   st.sampled_from([1, 2, 3, 30, 48, 300, 4000, 40000]),
                   st.sampled_from(["PNG", "TIFF", "GIF", "BMP", "WEBP", "JPEG"]))


@given(SHAPES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_extreme_images_beside_a_good_face_never_take_it_down(client, shape):
    mode, w, h, fmt = shape
    if w * h > 5_000_000:
        h = max(1, 5_000_000 // w)
    try:
        data = enc(Image.new(mode, (w, h)), fmt)
    except Exception:
        data = b"\0" * 64  # a combination Pillow cannot write: send garbage instead
    r = client.post("/v1/route", files=[("files", ("odd", data, "application/octet-stream")), ("files", ("face.png", FACE, "image/png"))])
    assert r.status_code == 200, r.text
    odd, good = r.json()["results"]
    assert good["faces"][0]["decision"] in {"accept", "ambiguous", "reject"}
    assert "error" in odd or odd["faces"]


def test_a_huge_16_bit_png_decodes_within_its_budget(router):
    c = TestClient(create_app(router, token="", max_decode_bytes=64 << 20), raise_server_exceptions=False)
    deep = enc(Image.fromarray(np.zeros((6000, 6000), np.uint16)))  # 72 MB inside Pillow
    r = c.post("/v1/route", files=[("files", ("deep.png", deep, "image/png"))])
    assert_envelope(r, 413, "too_large")
    assert "decoding budget" in r.json()["error"]["message"]
    c = TestClient(create_app(router, token="", max_decode_bytes=256 << 20), raise_server_exceptions=False)
    r = c.post("/v1/route", files=[("files", ("deep.png", deep, "image/png"))])
    assert r.status_code == 200 and r.json()["results"][0]["faces"][0]["decision"] == "no_face"


def test_a_full_queue_answers_503_with_retry_after(tiny_model_dir):
    slow = FERRouter.load(tiny_model_dir)
    real = slow.route_faces

    def slowly(faces):
        time.sleep(1.0)
        return real(faces)

    slow.route_faces = slowly
    c = TestClient(create_app(slow, token="", limits=Limits(max_active=1, max_queued=0, queue_timeout_s=0.2)), raise_server_exceptions=False)
    out: list = []

    def post():
        out.append(c.post("/v1/route", files=[("files", ("a.png", FACE, "image/png"))]))

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in out)
    assert codes[0] == 200 and 503 in codes, codes
    busy = next(r for r in out if r.status_code == 503)
    assert busy.headers["retry-after"] and busy.json()["error"]["code"] == "busy"


# --------------------------------------------------------------------------- on a real socket


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def live(tiny_model_dir, server_tmp):
    env = dict(os.environ, FERROUTE_API_TOKEN="s3cret", FERROUTE_MAX_BODY_BYTES=str(1 << 20), FERROUTE_BODY_TIMEOUT_S="1", TMPDIR=str(server_tmp))
    proc, url = start_local_server(tiny_model_dir, env=env)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def spooled(folder) -> int:
    """Bytes the server wrote to its temporary folder (where uploads would be spooled)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def raw_request(url: str, head: str, body_chunks: list[bytes] = (), pause: float = 0.0, read_timeout: float = 10.0) -> tuple[int, bytes, int]:
    """Send headers (and body chunks) on a raw socket; returns (status, response head, body bytes sent before the answer)."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=read_timeout)
    s.sendall(head.encode())
    sent = 0
    s.setblocking(False)
    answer = b""
    for chunk in body_chunks:
        try:
            answer += s.recv(65536)
        except BlockingIOError:
            pass
        if answer:
            break
        try:
            s.sendall(chunk)
            sent += len(chunk)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            break
        time.sleep(pause)
    s.setblocking(True)
    s.settimeout(read_timeout)
    try:
        while b"\r\n\r\n" not in answer:
            more = s.recv(65536)
            if not more:
                break
            answer += more
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return int(answer.split(b" ", 2)[1]) if answer else 0, answer, sent


# The client's byte counts include what the kernel's socket buffers absorb (a few MB on
# loopback); what the server read is bounded by what it wrote to disk: nothing.


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(live, server_tmp):
    head = f"POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {1 << 30}\r\n\r\n"
    status, answer, sent = raw_request(live, head, [b"\0" * 65536] * 256)
    assert status == 401 and sent < 12 * (1 << 20) and spooled(server_tmp) == 0


def test_an_oversize_body_is_refused_by_its_declared_length_and_while_streaming(live, server_tmp):
    auth = "Authorization: Bearer s3cret\r\n"
    head = f"POST /v1/route HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {1 << 30}\r\n\r\n"
    status, _, sent = raw_request(live, head, [b"\0" * 65536] * 256)
    assert status == 413 and sent < 12 * (1 << 20) and spooled(server_tmp) == 0
    head = f"POST /v1/route HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b"\0" * 65536 + b"\r\n"
    status, _, sent = raw_request(live, head, [chunk] * 256, pause=0.002)
    assert status == 413 and sent < 12 * (1 << 20) and spooled(server_tmp) == 0


def test_a_slow_client_is_timed_out(live):
    head = "POST /v1/route HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n"
    t = time.monotonic()
    status, _, _ = raw_request(live, head, [b"--b\r\n"])
    assert status == 408 and time.monotonic() - t < 8


def test_openapi_names_the_response_and_error_schemas(client):
    doc = client.get("/openapi.json").json()
    route = doc["paths"]["/v1/route"]["post"]["responses"]
    assert route["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/RouteResponse")
    for code in ("401", "413", "422", "503", "500"):
        assert route[code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse"), code
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Decision"]["enum"]) == {"accept", "ambiguous", "reject", "no_face"}
    dist = schemas["FaceReport"]["properties"]["distribution"]["anyOf"][0]
    assert dist["propertyNames"]["$ref"].endswith("/Emotion") and len(schemas["Emotion"]["enum"]) == 8
