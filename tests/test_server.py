import io
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ferroute.router import FERRouter
from ferroute.serve.app import create_app


def png_bytes(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


FACE = png_bytes(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8))


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    return TestClient(create_app(FERRouter.load(tiny_model_dir), token="", max_upload_bytes=50_000, max_pixels=1_000_000))


def test_health_model_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    m = client.get("/v1/model").json()
    assert m["members"] == 3 and "shift_z" in m["thresholds"] and m["model_card"].startswith("# tiny")
    assert m["guarantee"]["kind"] == "split-conformal" and "at most 5%" in m["guarantee"]["statement"]
    assert {k: v for k, v in m["inference"].items() if k != "threads"} == {"tta": "none", "device": "cpu", "precision": "fp32", "backend": "Ensemble", "compiled": False}
    assert m["inference"]["threads"] >= 1
    assert "/v1/route" in client.get("/openapi.json").json()["paths"]


def test_route_one_and_several(client):
    r = client.post("/v1/route", files=[("files", ("a.png", FACE, "image/png"))])
    assert r.status_code == 200
    assert r.json()["results"][0]["faces"][0]["decision"] in {"accept", "ambiguous", "reject"}
    r = client.post("/v1/route", files=[("files", ("a.png", FACE, "image/png")), ("files", ("bad.jpg", b"text", "image/jpeg"))])
    res = r.json()["results"]
    assert r.status_code == 200 and "faces" in res[0] and "bad.jpg" in res[1]["error"]


def test_errors_are_json_with_the_right_code(client):
    r = client.post("/v1/route", files=[("files", ("bad.jpg", b"text", "image/jpeg"))])
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_image"
    r = client.post("/v1/route", files=[("files", ("big.png", b"x" * 60_000, "image/png"))])
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large" and "upload limit" in r.json()["error"]["message"]
    bomb = png_bytes(np.zeros((1200, 1200), np.uint8))
    r = client.post("/v1/route", files=[("files", ("bomb.png", bomb, "image/png"))])
    assert r.status_code == 413 and "pixels" in r.json()["error"]["message"]
    r = client.post("/v1/route")
    assert r.status_code == 422 and "files" in r.json()["error"]["message"]


def test_bearer_token(tiny_model_dir):
    c = TestClient(create_app(FERRouter.load(tiny_model_dir), token="s3cret"))
    assert c.get("/v1/model").status_code == 401
    assert c.get("/v1/model", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200


def test_real_uvicorn_process_on_loopback(tiny_model_dir):
    import httpx

    from ferroute.serve.app import start_local_server

    proc, url = start_local_server(tiny_model_dir, env=dict(os.environ, FERROUTE_API_TOKEN="t"))
    try:
        h = {"Authorization": "Bearer t"}
        r = httpx.post(url + "/v1/route", files=[("files", ("a.png", FACE, "image/png"))], headers=h, timeout=30)
        assert r.status_code == 200 and r.json()["results"][0]["faces"][0]["decision"] in {"accept", "ambiguous", "reject"}
        assert httpx.post(url + "/v1/route", files=[("files", ("a.png", FACE, "image/png"))], timeout=30).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_micro_batcher_groups_concurrent_requests_and_keeps_order():
    from concurrent.futures import ThreadPoolExecutor

    from ferroute.serve.app import MicroBatcher

    calls = []

    def fn(faces):
        calls.append(len(faces))
        return [{"v": int(f[0, 0])} for f in faces]

    b = MicroBatcher(fn, max_batch=64, max_wait_s=0.05)
    inputs = [np.full((k % 3 + 1, 48, 48), k, np.uint8) for k in range(20)]
    with ThreadPoolExecutor(20) as pool:
        outs = list(pool.map(b.submit, inputs))
    for k, out in enumerate(outs):
        assert [o["v"] for o in out] == [k] * (k % 3 + 1)
    assert len(calls) < 20  # several requests shared one model call

    def boom(faces):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        MicroBatcher(boom).submit(np.zeros((1, 48, 48), np.uint8))
