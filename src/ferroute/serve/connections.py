"""Connections that cannot starve the server: uvicorn's HTTP/1.1 protocol with a header
timeout, a connection limit and the service's error envelope.

uvicorn closes idle keep-alive connections but gives a client unlimited time to finish its
request headers, and its own concurrency limit answers in plain text. :func:`protocol`
builds an :class:`uvicorn.protocols.http.h11_impl.H11Protocol` subclass that

* closes a connection whose request headers have not all arrived within ``header_timeout_s``
  of its first byte (or of the connection's start): half-open and trickling clients hold
  nothing for long;
* answers a connection past ``max_connections``, or past ``max_per_client`` from one address,
  with a 503 in the envelope once its request arrives (or after a second), then closes it, so
  the client reads the answer rather than a reset (the admission limit, a few dozen routing
  requests, sits well below both);
* closes a connection as soon as a response is complete while the client is still sending its
  request body (a ``GET`` declaring a body it never finishes, say): uvicorn's keep-alive timer
  is cancelled by any arriving byte and never re-armed in that state, so one such connection
  could otherwise be held forever by a byte now and then;
* answers a malformed request (a bad ``Content-Length``, say) with a 400 in the envelope.

Slow *bodies* are the :class:`ferroute.serve.limits.Guard`'s: it reads the body, with its own
timeout, before the request may take a routing slot.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _envelope(status: int, reason: bytes, code: str, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    rid = uuid.uuid4().hex[:12]
    body = json.dumps({"error": {"code": code, "message": message, "request_id": rid}}).encode()
    head = [b"HTTP/1.1 %d %s" % (status, reason), b"content-type: application/json", b"content-length: %d" % len(body),
            b"x-request-id: " + rid.encode(), b"connection: close", *(k + b": " + v for k, v in (extra or []))]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def protocol(header_timeout_s: float = 10.0, max_connections: int = 1000, max_per_client: int = 200) -> type[H11Protocol]:
    """The protocol class to give ``uvicorn.run(..., http=...)``."""
    per_client: dict[str, int] = {}  # open connections by client address

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer = None
            self._refusal: bytes | None = None
            peer = transport.get_extra_info("peername")
            self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
            per_client[self._peer] = per_client.get(self._peer, 0) + 1
            if len(self.connections) > max_connections:
                self._refuse(f"the server holds {max_connections} connections; try again shortly")
            elif per_client[self._peer] > max_per_client:
                self._refuse(f"this address holds {max_per_client} connections, the most one client may; close some and try again")
            else:
                self._arm()

        def _refuse(self, message: str) -> None:
            """Answer 503 when the request arrives (or after a second), so it is read, not reset."""
            self._refusal = _envelope(503, b"Service Unavailable", "too_many_connections", message, [(b"retry-after", b"2")])
            self._header_timer = self.loop.call_later(1.0, self._send_refusal)

        def _send_refusal(self) -> None:
            self._header_timer = None
            if self._refusal is not None and not self.transport.is_closing():
                self.transport.write(self._refusal)
                self.transport.close()
            self._refusal = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.conn.their_state in (h11.IDLE,) and not self.transport.is_closing():
                self.transport.write(_envelope(408, b"Request Timeout", "header_timeout",
                                               f"the request headers did not arrive within {header_timeout_s:.0f} s"))
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refusal is not None:  # the request of a refused connection: read, answered, closed
                self._disarm()
                self._send_refusal()
                return
            if self.conn.their_state is h11.IDLE:
                self._arm()  # headers are (still) arriving: they have header_timeout_s from the first byte
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def on_response_complete(self) -> None:
            unfinished = self.conn.their_state is h11.SEND_BODY  # answered before its body was all sent
            super().on_response_complete()  # uvicorn's keep-alive timer now covers an idle connection
            if unfinished and not self.transport.is_closing():
                self.transport.close()  # the rest of that body is never read: nothing may hold the connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            left = per_client.get(self._peer, 1) - 1
            if left > 0:
                per_client[self._peer] = left
            else:
                per_client.pop(self._peer, None)
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            if not self.transport.is_closing():
                self.transport.write(_envelope(400, b"Bad Request", "bad_request", f"malformed HTTP request ({msg.rstrip('.')}); check its headers"))
                self.transport.close()

    return GuardedH11Protocol
