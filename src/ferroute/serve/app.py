"""HTTP service: a web page at ``/``, ``POST /v1/route``, ``GET /v1/model``, ``GET /healthz`` and the OpenAPI page (offline).

The model is loaded once per process; decoding and face detection run in the request
threads, and the crops of concurrent requests are batched into one ensemble call by a
single worker thread, so the model is never used by two threads at once. Errors are JSON ``{"error": {...}}`` bodies
with a 4xx code that says what went wrong.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..vision.faces import Prepared
from ..vision.images import MAX_PIXELS, ImageError, MemoryBudget
from .limits import Guard, Limits, error_body, log
from ..router import FERRouter
from .schemas import ERROR_RESPONSES, ModelInfo, RouteResponse

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_FILES = 32
MAX_DECODE_BYTES = 1 << 30


class MicroBatcher:
    """Gathers face crops from concurrent requests into one ensemble call.

    Each request thread submits its crops ``(n, 48, 48)`` and blocks on a future; one worker
    thread takes what has arrived within ``max_wait_s`` (up to ``max_batch`` faces), runs the
    model once, and hands every request its slice. The model is only ever used by that thread.
    """

    def __init__(self, fn: Any, max_batch: int = 256, max_wait_s: float = 0.004):
        import queue

        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self.queue: "queue.Queue[Any]" = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="ferroute-batcher", daemon=True)
        self.thread.start()

    def submit(self, faces: Any) -> list[dict[str, Any]]:
        from concurrent.futures import Future

        fut: Future = Future()
        self.queue.put((faces, fut))
        return fut.result()

    def _loop(self) -> None:
        import queue
        import time

        import numpy as np

        while True:
            first = self.queue.get()
            items, n = [first], len(first[0])
            deadline = time.monotonic() + self.max_wait_s
            while n < self.max_batch:
                try:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                items.append(item)
                n += len(item[0])
            faces = np.concatenate([f for f, _ in items])  # padded to a few shapes by FERRouter.route_faces
            try:
                reports = self.fn(faces)
            except Exception as exc:  # hand the failure to every waiting request
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            k = 0
            for f, fut in items:
                fut.set_result(reports[k : k + len(f)])
                k += len(f)


#: The :class:`Limits` fields ``ferroute serve`` passes on as ``$FERROUTE_<FIELD>`` (upper case).
ENV_LIMITS = ("max_body_bytes", "body_timeout_s", "max_active", "max_queued", "queue_timeout_s", "max_request_pixels",
              "max_request_faces", "header_timeout_s", "max_connections", "max_connections_per_client", "min_body_rate",
              "max_bodies_per_client")


def limits_from_env(token: str | None = None) -> Limits:
    """The service's bounds from ``$FERROUTE_*`` variables (``ferroute serve`` sets them from
    its options, so worker processes see the same), with safe defaults: each of
    :data:`ENV_LIMITS` read as ``$FERROUTE_<FIELD>``, of its default's type."""
    env = os.environ.get
    values = {f: type(getattr(Limits, f))(env(f"FERROUTE_{f.upper()}", getattr(Limits, f))) for f in ENV_LIMITS}
    return Limits(**values, token=(token if token is not None else env("FERROUTE_API_TOKEN")) or None)


def create_app(
    router: FERRouter | None = None,
    model_dir: str | Path | None = None,
    token: str | None = None,
    max_upload_bytes: int | None = None,
    max_pixels: int | None = None,
    max_files: int = MAX_FILES,
    limits: Limits | None = None,
    max_decode_bytes: int | None = None,
) -> FastAPI:
    """Build the app. ``token`` (default ``$FERROUTE_API_TOKEN``) turns on bearer authentication;
    ``limits`` (default :func:`limits_from_env`) bound bodies, slow clients and concurrent work;
    ``max_decode_bytes`` (``$FERROUTE_MAX_DECODE_BYTES``, 1 GiB) bounds the memory that
    concurrent image decodes hold."""
    router = router or FERRouter.load(model_dir)
    limits = limits or limits_from_env(token)
    if token is not None:  # an explicit token wins over the one in `limits` (the caller's object is left as given)
        limits = dataclasses.replace(limits, token=token or None)
    max_upload = max_upload_bytes or int(os.environ.get("FERROUTE_MAX_UPLOAD_BYTES", MAX_UPLOAD_BYTES))
    pixels = max_pixels or int(os.environ.get("FERROUTE_MAX_PIXELS", MAX_PIXELS))
    budget = MemoryBudget(max_decode_bytes or int(os.environ.get("FERROUTE_MAX_DECODE_BYTES", MAX_DECODE_BYTES)), wait_s=limits.queue_timeout_s)
    batcher = MicroBatcher(router.route_faces)
    # FastAPIOffline serves Swagger UI's and ReDoc's assets from the package: /docs works offline
    app = FastAPIOffline(
        title="ferroute",
        version=__version__,
        description="Facial expression recognition that knows why it is unsure: accept, ambiguous, reject or no_face, with reasons. "
        "With FERROUTE_API_TOKEN set, /v1/ endpoints need 'Authorization: Bearer <token>'. "
        'Every error answers {"error": {"code", "message", "request_id"}}.',
    )
    app.add_middleware(Guard, limits=limits, decode_budget=budget)

    def rid(request: Request) -> str | None:
        return request.scope.get("state", {}).get("request_id")

    def error(request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content=error_body(code, message, rid(request)), headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            code, message = exc.detail.get("code", "http_error"), exc.detail.get("message", "")
        else:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
            message = {404: f"no such endpoint: {request.url.path} (see /docs)",
                       405: f"{request.method} is not allowed on {request.url.path} (see /docs)"}.get(exc.status_code, str(exc.detail))
        return error(request, exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(request, 422, "invalid_request", "send one or more images as multipart form field 'files' (e.g. curl -F files=@face.jpg)")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", rid(request))
        # answered outside the Guard (Starlette's outermost error middleware): name the id here
        return error(request, 500, "internal_error", f"the server failed on this request ({type(exc).__name__}); it is logged under request id {rid(request)}",
                     headers={"X-Request-ID": str(rid(request))})

    page = (resources.files("ferroute") / "assets" / "web" / "index.html").read_text()

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        """The web page: drop photos, see each face's box, decision, reason and distribution."""
        return HTMLResponse(page)

    @app.get("/healthz", responses={500: ERROR_RESPONSES[500]})
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", response_model=ModelInfo, responses=ERROR_RESPONSES)
    def model_info() -> dict[str, Any]:
        card = router.model_dir / "MODEL_CARD.md" if router.model_dir else None
        return {
            "version": __version__,
            "members": router.ensemble.num_members,
            "backbone": router.ensemble.config.to_dict(),
            "labels": list(router.labels),
            "thresholds": router.router.thresholds,
            "reject_rate": router.router.reject_rate,
            "reject_score": router.router.shift,
            "guarantee": router.router.guarantee(),
            "inference": router.ensemble.run_info(),
            "model_card": card.read_text() if card and card.is_file() else None,
            "limits": {"max_upload_bytes": max_upload, "max_pixels": pixels, "max_files": max_files, "max_body_bytes": limits.max_body_bytes,
                       "max_active": limits.max_active, "max_queued": limits.max_queued, "max_decode_bytes": budget.total},
        }

    @app.post("/v1/route", response_model=RouteResponse, responses=ERROR_RESPONSES)
    def route(request: Request, files: list[UploadFile] = File(..., description="one or more images")) -> dict[str, Any]:
        """Route every face in each uploaded image: accept, ambiguous (with the distribution),
        reject (unfamiliar input) or no_face, each with its reason. A bad image is its own
        item's error; the others are still routed."""
        import time

        state = request.scope.setdefault("state", {})
        if not files:
            raise HTTPException(400, {"code": "no_files", "message": "no images uploaded"})
        if len(files) > max_files:
            raise HTTPException(413, {"code": "too_many_files", "message": f"{len(files)} files sent; at most {max_files} per request"})
        t0 = time.monotonic()
        parts: list[Prepared] = []
        for k, f in enumerate(files):
            name = f.filename or f"file{k}"
            data = f.file.read(max_upload + 1)
            if len(data) > max_upload:  # this item's error; the others are still routed
                err = ImageError(name, f"over the upload limit of {max_upload:,} bytes", "downscale or recompress it", kind="too_large")
                parts.append(Prepared([{"source": name, "error": str(err)}], [], [], {0: err}))
            else:
                parts.append(router.prepare([data], [name], max_pixels=pixels, budget=budget))
        prep = Prepared.concat(parts)
        state["decode_s"], state["faces"] = time.monotonic() - t0, 0
        if len(prep.errors) == len(files):  # nothing usable: the request's error
            exc = prep.errors[0]
            if exc.kind == "busy":
                raise HTTPException(503, {"code": "busy", "message": str(exc)}, headers={"Retry-After": "5"})
            if exc.kind == "too_large":
                raise HTTPException(413, {"code": "too_large", "message": str(exc)})
            raise HTTPException(422, {"code": "bad_image", "message": str(exc)})
        if len(prep.crops) > limits.max_request_faces:
            raise HTTPException(413, {"code": "too_many_faces", "message": f"these images hold {len(prep.crops)} faces; the limit is "
                                      f"{limits.max_request_faces} a request (send fewer images per request)"})
        t1 = time.monotonic()
        out = {"results": router.finish(prep, infer=batcher.submit)}
        state["ensemble_s"], state["faces"] = time.monotonic() - t1, len(prep.crops)
        return out

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, model_dir: str | Path | None = None, workers: int = 1,
          backend: str = "auto", device: str = "cpu", keep_alive_s: int = 5) -> None:
    """Run the service with uvicorn (one model per worker process). Limits come from
    ``$FERROUTE_*`` (see :func:`limits_from_env`); uvicorn itself refuses connections past
    twice the admitted requests (503) and closes idle keep-alive connections after ``keep_alive_s``."""
    import uvicorn

    from .connections import protocol

    lim = limits_from_env()
    # connections: a header timeout, a connection limit far above the admission limit, every
    # refusal in the error envelope (ferroute.serve.connections); requests: the Guard (ferroute.serve.limits)
    http = protocol(header_timeout_s=lim.header_timeout_s, max_connections=lim.max_connections,
                    max_per_client=lim.max_connections_per_client)
    extra = {"limit_concurrency": None, "timeout_keep_alive": keep_alive_s, "http": http}
    if workers > 1:
        os.environ["FERROUTE_MODEL_DIR"] = str(model_dir or "")
        os.environ["FERROUTE_BACKEND"] = backend
        os.environ["FERROUTE_DEVICE"] = device
        uvicorn.run("ferroute.serve.app:_factory", host=host, port=port, workers=workers, factory=True, **extra)
    else:
        uvicorn.run(create_app(FERRouter.load(model_dir, backend=backend, device=device, ambiguous_below=_level())), host=host, port=port, **extra)


def _level() -> float | None:
    """The ambiguity level from ``$FERROUTE_AMBIGUOUS_BELOW`` (None: the model's)."""
    raw = os.environ.get("FERROUTE_AMBIGUOUS_BELOW")
    try:
        return None if not raw else float(raw)
    except ValueError:
        raise ValueError(f"FERROUTE_AMBIGUOUS_BELOW must be a share between 0 and 1 (e.g. 0.6), got {raw!r}") from None


def _factory() -> FastAPI:
    router = FERRouter.load(os.environ.get("FERROUTE_MODEL_DIR") or None, backend=os.environ.get("FERROUTE_BACKEND", "auto"),
                            device=os.environ.get("FERROUTE_DEVICE", "cpu"), ambiguous_below=_level())
    return create_app(router)


def start_local_server(model_dir: str | Path | None = None, env: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[Any, str]:
    """Start ``ferroute serve`` on a free loopback port in a child process and wait for
    ``/healthz``; returns ``(process, base_url)``. For tests and load benchmarks."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "ferroute", "serve", "--port", str(port)] + (["--model", str(model_dir)] if model_dir else [])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.25)
    proc.terminate()
    raise RuntimeError(f"ferroute serve did not come up on {url} within {timeout:.0f} s")
