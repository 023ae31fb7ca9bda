"""``GET /metrics``: what the service is doing, in the Prometheus text format
(``prometheus_client``, one registry per app so that several apps in one process do not mix).

Series: ``ferroute_requests_total{status}``, ``ferroute_queue_length``, ``ferroute_active_requests``,
``ferroute_predicted_wait_seconds`` and ``ferroute_observed_wait_seconds`` (histograms),
``ferroute_predicted_backlog_seconds``, ``ferroute_faces_routed_total``,
``ferroute_decode_seconds`` and ``ferroute_ensemble_seconds`` (histograms, per request),
``ferroute_body_bytes_reserved`` and ``ferroute_decode_bytes_reserved``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_WAITS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40)


class Telemetry:
    """The service's counters and gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("ferroute_requests", "HTTP responses by status code", ["status"], registry=r)
        self.queue = Gauge("ferroute_queue_length", "admitted routing requests waiting for a slot", registry=r)
        self.active = Gauge("ferroute_active_requests", "routing requests being routed", registry=r)
        self.backlog = Gauge("ferroute_predicted_backlog_seconds", "predicted seconds of admitted, unfinished routing work", registry=r)
        self.pred = Histogram("ferroute_predicted_wait_seconds", "wait predicted at admission", buckets=_WAITS, registry=r)
        self.obs = Histogram("ferroute_observed_wait_seconds", "wait for a routing slot, as it happened", buckets=_WAITS, registry=r)
        self.faces = Counter("ferroute_faces_routed", "faces sent through the ensemble", registry=r)
        self.decode = Histogram("ferroute_decode_seconds", "decoding and face search per request", buckets=_WAITS, registry=r)
        self.ensemble = Histogram("ferroute_ensemble_seconds", "ensemble and decisions per request", buckets=_WAITS, registry=r)
        self.body_bytes = Gauge("ferroute_body_bytes_reserved", "request bodies held in memory", registry=r)
        self.decode_bytes = Gauge("ferroute_decode_bytes_reserved", "memory reserved by image decodes in progress", registry=r)
        self.decode_budget: Any = None  # the app's MemoryBudget, set by create_app

    def status(self, code: int) -> None:
        self.requests.labels(str(code)).inc()

    def predicted_wait(self, s: float) -> None:
        self.pred.observe(s)

    def observed_wait(self, s: float) -> None:
        self.obs.observe(s)

    def work(self, faces: int | None, decode_s: float | None, ensemble_s: float | None) -> None:
        if faces:
            self.faces.inc(faces)
        if decode_s is not None:
            self.decode.observe(decode_s)
        if ensemble_s is not None:
            self.ensemble.observe(ensemble_s)

    def set_state(self, waiting: int, admission: Any, body_bytes: int) -> None:
        self.queue.set(waiting)
        self.active.set(admission.pending - waiting if admission.pending > waiting else 0)
        self.backlog.set(admission.pending_s)
        self.body_bytes.set(body_bytes)
        if self.decode_budget is not None:
            self.decode_bytes.set(self.decode_budget.total - self.decode_budget.free)

    def render(self) -> bytes:
        return generate_latest(self.registry)
