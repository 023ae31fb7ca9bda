"""Connections that cannot starve the server: uvicorn's HTTP/1.1 protocol with a header
timeout, a connection limit and the service's error envelope.

uvicorn closes idle keep-alive connections but gives a client unlimited time to finish its
request headers, and its own concurrency limit answers in plain text. :func:`protocol`
builds an :class:`uvicorn.protocols.http.h11_impl.H11Protocol` subclass that

* closes a connection whose request headers have not all arrived within ``header_timeout_s``
  of its first byte (or of the connection's start): half-open and trickling clients hold
  nothing for long;
* answers a connection past ``max_connections`` with a 503 in the envelope and closes it
  (the admission limit, a few dozen routing requests, sits well below it);
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


def protocol(header_timeout_s: float = 10.0, max_connections: int = 1000) -> type[H11Protocol]:
    """The protocol class to give ``uvicorn.run(..., http=...)``."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer = None
            if len(self.connections) > max_connections:
                transport.write(_envelope(503, b"Service Unavailable", "too_many_connections",
                                          f"the server holds {max_connections} connections; try again shortly",
                                          [(b"retry-after", b"2")]))
                transport.close()
                return
            self._arm()

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
            if self.conn.their_state is h11.IDLE:
                self._arm()  # headers are (still) arriving: they have header_timeout_s from the first byte
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # uvicorn's keep-alive timer now covers the idle connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            if not self.transport.is_closing():
                self.transport.write(_envelope(400, b"Bad Request", "bad_request", f"malformed HTTP request ({msg.rstrip('.')}); check its headers"))
                self.transport.close()

    return GuardedH11Protocol
