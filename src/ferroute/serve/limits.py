"""What the HTTP service promises under hostile input and load, as one ASGI middleware.

Before the app reads a byte of a request body, :class:`Guard`:

* gives the request an id (``X-Request-ID``, also in every log line and error body);
* checks the bearer token, so an unauthenticated upload is refused with 401 unread;
* refuses a declared ``Content-Length`` over ``max_body_bytes`` with 413, and counts the
  bytes as they arrive (a chunked or lying client is cut off at the limit plus one chunk);
* reads the whole body *before* the request may take a routing slot, giving the client
  ``body_timeout_s`` to send it and, after ``body_grace_s``, at least ``min_body_rate`` bytes
  a second on average (408 for slow and trickling clients); each byte counts against a budget
  for bodies held in memory (``max_pending_body_bytes``) as it *arrives*, so a trickle holds
  only what it has sent and never crowds out a normal request; one address may be reading at
  most ``max_bodies_per_client`` bodies at once (503 past it);
* refuses a request whose images hold more than ``max_request_pixels`` in all (413, read
  from the image headers, nothing decoded);
* admits it by predicted wait (:mod:`ferroute.serve.admission`): while the work ahead of it, learned
  per megapixel and per face as the service runs, would drain within ``queue_timeout_s``;
  otherwise 503 at once with ``Retry-After`` set to that wait. ``max_active`` requests are
  routed at once; ``max_queued`` caps the waiting ones as a last resort;
* counts what it does for ``GET /metrics`` (Prometheus text format).

Every error, from here or the app, has one shape: ``{"error": {"code", "message",
"request_id"}}`` (see :func:`error_body`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .admission import retry_after

log = logging.getLogger("ferroute.serve.app")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def error_body(code: str, message: str, request_id: str | None) -> dict[str, Any]:
    """The one error envelope of the service."""
    return {"error": {"code": code, "message": message, "request_id": request_id}}


@dataclass
class Limits:
    """The service's bounds; ``ferroute serve`` sets them from its options."""

    max_body_bytes: int = 25 * 1024 * 1024
    body_timeout_s: float = 30.0
    max_active: int = 4
    max_queued: int = 1000  # a backstop: admission is by predicted wait
    queue_timeout_s: float = 20.0
    max_request_pixels: int = 100_000_000  # all images of one request, from their headers (413)
    max_request_faces: int = 256  # faces one request may send to the ensemble (413)
    max_pending_body_bytes: int = 512 * 1024 * 1024  # bodies held in memory at once (503 past it)
    max_open_requests: int = 2000  # requests the app holds at once, waiting included (503 in the envelope)
    header_timeout_s: float = 10.0  # uvicorn's protocol (ferroute.serve.connections): headers must arrive in time
    max_connections: int = 1000  # connections held at once; past it a 503 in the envelope
    max_connections_per_client: int = 200  # from one address (ferroute.serve.connections)
    min_body_rate: float = 8192.0  # bytes/s a body must average once body_grace_s has passed (408 below it)
    body_grace_s: float = 5.0
    max_bodies_per_client: int = 32  # bodies one address may be sending at once (503 past it)
    token: str | None = None
    guarded_paths: tuple[str, ...] = ("/v1/route",)
    protected_prefix: str = "/v1/"  # the token is asked on these; the page, docs and /healthz are public


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


class _BudgetFull(Exception):
    pass


class Guard:
    """ASGI middleware enforcing :class:`Limits` (see the module docstring)."""

    def __init__(self, app: Any, limits: Limits, decode_budget: Any = None):
        from .admission import Admission
        from .telemetry import Telemetry

        self.app, self.limits = app, limits
        self._waiting = 0
        self._open = 0
        self._body_bytes = 0
        self._bodies: dict[str, int] = {}  # bodies being read, by client address
        self._slots: asyncio.Semaphore | None = None
        self.admission = Admission(limits.max_active, limits.queue_timeout_s)
        self.telemetry = Telemetry()
        self.telemetry.decode_budget = decode_budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["request_id"] = rid
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        tel = self.telemetry

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                tel.status(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        lim = self.limits
        if path == "/metrics" and scope.get("method") == "GET":
            tel.set_state(self._waiting, self.admission, self._body_bytes)
            await _respond_raw(send_with_id, 200, tel.render(), tel.content_type)
            return
        if self._open >= lim.max_open_requests:
            await _respond(send_with_id, 503, error_body("busy", f"the server holds {lim.max_open_requests} requests; try again shortly", rid),
                           [(b"retry-after", retry_after(self.admission.predicted_wait()).encode())])
            return
        self._open += 1
        try:
            await self._handle(scope, receive, send_with_id, headers, path, rid)
        finally:
            self._open -= 1

    async def _handle(self, scope: Scope, receive: Receive, send_with_id: Send, headers: dict[str, str], path: str, rid: str) -> None:
        lim = self.limits
        if lim.token and path.startswith(lim.protected_prefix):
            got = headers.get("authorization", "")
            if not got.startswith("Bearer ") or not hmac.compare_digest(got[7:].encode(), lim.token.encode()):
                await _respond(send_with_id, 401, error_body("unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)", rid),
                               [(b"www-authenticate", b"Bearer")])
                return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > lim.max_body_bytes:
            await _respond(send_with_id, 413, error_body("body_too_large", f"request body of {int(declared):,} bytes is over the limit of {lim.max_body_bytes:,}", rid),
                           [(b"connection", b"close")])
            await _drain(receive)
            return
        if path not in lim.guarded_paths or scope.get("method") != "POST":
            await self.app(scope, receive, send_with_id)
            return
        # the body first, its bytes counted as they arrive: a slow client holds no routing slot
        # and a trickle holds only what it sent
        if self._body_bytes >= lim.max_pending_body_bytes:
            await _respond(send_with_id, 503, error_body("busy", "the server holds as many request bodies as its memory budget allows; try again shortly", rid),
                           [(b"retry-after", retry_after(max(1.0, self.admission.predicted_wait())).encode())])
            return
        client = str((scope.get("client") or ("?",))[0])
        if self._bodies.get(client, 0) >= lim.max_bodies_per_client:
            await _respond(send_with_id, 503, error_body("busy", f"this address is already sending {lim.max_bodies_per_client} request bodies, "
                                                         "the most one client may; wait for them", rid), [(b"retry-after", b"2")])
            return
        held = [0]
        try:
            await self._admit(scope, receive, send_with_id, headers, rid, client, held)
        finally:
            self._body_bytes -= held[0]

    async def _admit(self, scope: Scope, receive: Receive, send_with_id: Send, headers: dict[str, str], rid: str, client: str,
                     held: list[int]) -> None:
        import time

        from .admission import peek_pixels

        lim, tel = self.limits, self.telemetry
        self._bodies[client] = self._bodies.get(client, 0) + 1
        try:
            body = await asyncio.wait_for(self._read_body(receive, held), timeout=lim.body_timeout_s)
        except _BodyTooSlow:
            await _respond(send_with_id, 408, error_body("body_too_slow", f"the request body arrived at under {lim.min_body_rate:,.0f} bytes a second; "
                                                         "send it faster", rid), [(b"connection", b"close")])
            return
        except _BudgetFull:
            await _respond(send_with_id, 503, error_body("busy", "the server holds as many request bodies as its memory budget allows; try again shortly", rid),
                           [(b"retry-after", retry_after(max(1.0, self.admission.predicted_wait())).encode()), (b"connection", b"close")])
            return
        except _BodyTooLarge:
            await _respond(send_with_id, 413, error_body("body_too_large", f"request body is over the limit of {lim.max_body_bytes:,} bytes", rid), [(b"connection", b"close")])
            await _drain(receive)
            return
        except asyncio.TimeoutError:
            await _respond(send_with_id, 408, error_body("body_timeout", f"the request body did not arrive within {lim.body_timeout_s:.0f} s", rid), [(b"connection", b"close")])
            return
        finally:
            left = self._bodies.get(client, 1) - 1
            if left > 0:
                self._bodies[client] = left
            else:
                self._bodies.pop(client, None)
        pixels, images = peek_pixels(body, headers.get("content-type", ""))
        if pixels > lim.max_request_pixels:
            await _respond(send_with_id, 413, error_body("too_many_pixels", f"the images of this request hold {pixels:,} pixels in all; the limit is "
                                                         f"{lim.max_request_pixels:,} a request (send fewer or smaller images per request)", rid))
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(lim.max_active)
        ticket, wait = self.admission.try_admit(pixels / 1e6, images)
        tel.predicted_wait(wait)
        if ticket is None or (self._waiting >= lim.max_queued and self._slots.locked()):
            if ticket is not None:
                self.admission.done(ticket, None, 0.0)
            await _respond(send_with_id, 503, error_body("busy", f"the work ahead would take about {wait:.0f} s, over the {lim.queue_timeout_s:.0f} s a request may wait; "
                                                         "try again after Retry-After seconds", rid),
                           # when the work ahead will have drained to what is admitted, not the whole wait
                           [(b"retry-after", retry_after(wait - lim.queue_timeout_s).encode())])
            return
        t0 = time.monotonic()
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=lim.queue_timeout_s)
        except asyncio.TimeoutError:
            self.admission.done(ticket, None, 0.0)
            await _respond(send_with_id, 503, error_body("busy", f"waited {lim.queue_timeout_s:.0f} s for a free slot; try again shortly", rid),
                           [(b"retry-after", retry_after(self.admission.predicted_wait()).encode())])
            return
        finally:
            self._waiting -= 1
        waited = time.monotonic() - t0
        tel.observed_wait(waited)
        t1 = time.monotonic()
        state = scope["state"]
        try:
            await self.app(scope, _replay(body), send_with_id)
        finally:
            self._slots.release()
            faces = state.get("faces")
            self.admission.done(ticket, faces, time.monotonic() - t1)
            tel.work(faces, state.get("decode_s"), state.get("ensemble_s"))

    async def _read_body(self, receive: Receive, held: list[int]) -> bytes:
        """The whole body, counted as it arrives: refused once it exceeds the limit, once the
        bodies held in memory would exceed their budget, or once it falls behind
        ``min_body_rate`` after ``body_grace_s`` (each chunk has until then to arrive).
        ``held[0]`` is what this body holds of the budget (the caller gives it back)."""
        import time

        lim = self.limits
        chunks: list[bytes] = []
        size, t0 = 0, time.monotonic()
        while True:
            deadline = t0 + max(lim.body_grace_s, (size + 1) / lim.min_body_rate) if lim.min_body_rate > 0 else None
            try:
                message = await (asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic())) if deadline else receive())
            except asyncio.TimeoutError:
                raise _BodyTooSlow() from None
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > lim.max_body_bytes:
                raise _BodyTooLarge()
            if self._body_bytes + len(chunk) > lim.max_pending_body_bytes:
                raise _BudgetFull()
            self._body_bytes += len(chunk)
            held[0] += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _drain(receive: Receive, max_bytes: int = 4 << 20, max_s: float = 1.0) -> None:
    """Read and drop a little more of a refused body before the connection closes, so the
    client reads the answer instead of a reset (closing on unread data sends TCP RST, which
    can discard the answer in the client's buffer). Nothing is kept, nothing is written."""
    async def read() -> None:
        seen = 0
        while seen < max_bytes:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            seen += len(message.get("body", b""))

    try:
        await asyncio.wait_for(read(), timeout=max_s)
    except Exception:  # a timeout or a gone client: the answer is already sent
        pass


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the app never asks again for a finished body; disconnects are not replayed
        return {"type": "http.disconnect"}

    return receive


async def _respond_raw(send: Send, status: int, raw: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


async def _respond(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
    raw = json.dumps(body).encode()
    log.info("request %s -> %d %s", body["error"]["request_id"], status, body["error"]["code"])
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": raw})
