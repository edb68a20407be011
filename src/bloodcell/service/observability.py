"""Prometheus metrics and a JSON-lines access log, both fed by one ASGI middleware."""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import TextIO

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    """The service's metrics in their own registry (one per app, so tests never share state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bloodcell_requests", "HTTP requests by endpoint, method and status.",
            ("endpoint", "method", "status"), registry=self.registry,
        )
        self.latency = Histogram(
            "bloodcell_request_duration_seconds", "Request latency by endpoint.",
            ("endpoint",), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.errors = Counter(
            "bloodcell_errors", "Refused requests and failed files by error code.",
            ("endpoint", "code"), registry=self.registry,
        )
        self.images = Counter(
            "bloodcell_images", "Images processed by endpoint.", ("endpoint",), registry=self.registry,
        )
        self.queue_depth = Gauge("bloodcell_queue_depth", "Jobs waiting for a worker slot.", registry=self.registry)
        self.in_flight = Gauge("bloodcell_in_flight", "Jobs running now.", registry=self.registry)
        self.abandoned = Gauge(
            "bloodcell_abandoned_jobs", "Timed-out jobs still finishing their current step.", registry=self.registry,
        )

    def set_queue(self, in_flight: int, waiting: int, abandoned: int = 0) -> None:
        self.in_flight.set(in_flight)
        self.queue_depth.set(waiting)
        self.abandoned.set(abandoned)

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)


class ObservabilityMiddleware:
    """Assigns a request id, logs one JSON line per request and records request metrics.

    The endpoint label is the route template (``/v1/classify``), or ``other`` for unknown
    paths, so a scanner cannot blow up the metric cardinality.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, stream: TextIO | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - start
            endpoint = _endpoint_label(scope)
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(duration)
            self._log(scope, status, duration, request_id)

    def _log(self, scope: Scope, status: int, duration: float, request_id: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        client = scope.get("client")
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(duration * 1000, 2),
            "client": f"{client[0]}:{client[1]}" if client else None,
            "request_id": request_id,
        }
        stream.write(json.dumps(record) + "\n")
        stream.flush()


def _endpoint_label(scope: Scope) -> str:
    """The matched route's template; static files share one label, anything else is ``other``."""
    route = scope.get("route")
    if getattr(route, "path", None):
        return route.path
    path = scope.get("path", "")
    if path == "/openapi.json":
        return path
    if path.startswith("/static/") or path.startswith("/static-offline-docs/"):
        return "/" + path.split("/", 2)[1]
    return "other"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
