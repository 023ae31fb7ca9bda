"""Admission by predicted wait: what a routing request will cost, learned as the service runs.

A request's service time is modelled as ``base + per_mpx * megapixels + per_face * faces``,
fitted online by least squares with exponential forgetting (:class:`CostModel`) on every
request the service finishes (the handler reports the pixels it decoded and the faces it
routed). Before a request is admitted its megapixels are read from its images' headers
(:func:`peek_pixels`, no decoding) and its faces predicted from the recent faces per image.
The wait it would see is the predicted work ahead of it (active and queued requests) divided
by the rate at which the service drains predicted work, measured as it runs (predicted
seconds finished per wall-clock second while busy; the routing slots at start). The measured
rate takes in what the per-request fit cannot: the event loop's own load, parsing, a CPU
shared with other processes. A request is admitted while that wait fits the queue timeout,
and otherwise refused at once with a ``Retry-After`` of that wait (rounded up).

Hand-written (about 60 lines, numpy): a 3-parameter recursive least-squares fit; a queueing
library would not know what a face costs.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass

import numpy as np


class CostModel:
    """Seconds a routing request takes, from ``[1, megapixels, faces]``, fitted online."""

    def __init__(self, base_s: float = 0.02, per_mpx_s: float = 0.02, per_face_s: float = 0.005, forget: float = 0.98):
        self.theta = np.array([base_s, per_mpx_s, per_face_s])  # the prior: a small photo with one face, ~0.05 s
        self.p = np.eye(3) * 10.0
        self.forget = forget
        self.n = 0
        self.faces_per_image = 1.0
        self._lock = threading.Lock()

    def predict(self, mpx: float, faces: float) -> float:
        """Predicted seconds for a request (never below 1 ms)."""
        return max(1e-3, float(self.theta @ np.array([1.0, mpx, faces])))

    def expected_faces(self, images: int) -> float:
        return images * self.faces_per_image

    def observe(self, mpx: float, faces: int, images: int, seconds: float) -> None:
        """Update the fit with a finished request (recursive least squares)."""
        x = np.array([1.0, mpx, float(faces)])
        with self._lock:
            px = self.p @ x
            k = px / (self.forget + x @ px)
            self.theta = self.theta + k * (seconds - self.theta @ x)
            self.theta = np.maximum(self.theta, 0.0)  # costs are not negative
            self.p = (self.p - np.outer(k, px)) / self.forget
            self.n += 1
            if images:
                self.faces_per_image = 0.9 * self.faces_per_image + 0.1 * (faces / images)


@dataclass
class Ticket:
    """An admitted request's predicted cost, held until it finishes."""

    seconds: float
    mpx: float
    images: int


class Admission:
    """The work ahead of a new request and whether it may wait for it."""

    def __init__(self, slots: int, queue_timeout_s: float, model: CostModel | None = None):
        self.slots, self.queue_timeout_s = slots, queue_timeout_s
        self.model = model or CostModel()
        self.pending_s = 0.0  # predicted seconds of every admitted, unfinished request
        self.pending = 0
        self.rate = float(slots)  # predicted seconds drained per second (EMA while busy)
        self._window_start: float | None = None
        self._window_done = 0.0
        self._lock = threading.Lock()

    def _wait(self) -> float:
        return 0.0 if self.pending < self.slots else self.pending_s / max(self.rate, 1e-3)

    def predicted_wait(self) -> float:
        """Seconds a request admitted now would wait (work ahead / drain rate)."""
        with self._lock:
            return self._wait()

    def try_admit(self, mpx: float, images: int) -> tuple[Ticket | None, float]:
        """A ticket, or ``None`` with the predicted wait when it would exceed the queue timeout."""
        cost = self.model.predict(mpx, self.model.expected_faces(images))
        with self._lock:
            wait = self._wait()
            if wait > self.queue_timeout_s:
                return None, wait
            self.pending_s += cost
            self.pending += 1
        return Ticket(cost, mpx, images), wait

    def done(self, ticket: Ticket, faces: int | None, seconds: float) -> None:
        import time

        with self._lock:
            busy = self.pending >= self.slots
            self.pending_s = max(0.0, self.pending_s - ticket.seconds)
            self.pending -= 1
            if faces is not None:
                self._measure(ticket.seconds, busy, time.monotonic())
        if faces is not None:
            self.model.observe(ticket.mpx, faces, ticket.images, seconds)


    def _measure(self, drained: float, busy: bool, now: float, window_s: float = 0.5) -> None:
        """Update the drain rate from busy windows of at least ``window_s`` (idle time says nothing)."""
        if not busy:
            self._window_start, self._window_done = None, 0.0
            return
        if self._window_start is None:
            self._window_start, self._window_done = now, 0.0
            return
        self._window_done += drained
        span = now - self._window_start
        if span >= window_s:
            self.rate = 0.7 * self.rate + 0.3 * (self._window_done / span)
            self._window_start, self._window_done = now, 0.0


def retry_after(wait_s: float) -> str:
    """An honest ``Retry-After`` in whole seconds, at least 1. A request refused for its predicted
    wait ``w`` over the queue timeout ``T`` is told ``w - T``: when the work ahead will have drained
    to what is admitted, not the whole wait (which told clients 3-5x too long)."""
    return str(max(1, math.ceil(wait_s)))


def peek_pixels(body: bytes, content_type: str) -> tuple[int, int]:
    """``(total pixels, images)`` of a multipart body's parts, from their image headers only
    (PIL opens lazily); a part PIL cannot read counts as no pixels (the handler reports it)."""
    from PIL import Image

    boundary = None
    for piece in content_type.split(";"):
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"').encode("latin-1")
    if not boundary:
        return 0, 0
    total = images = 0
    for part in body.split(b"--" + boundary)[1:]:
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep or b"filename=" not in head:
            continue
        images += 1
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                total += w * h  # animations: the first frame is what is routed
        except Exception:  # not an image, or damaged: the handler names it
            continue
    return total, images
