"""Prometheus metrics of one process: requests by route and status, their latency, queries."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "heroes_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "heroes_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.reveals = Counter("heroes_reveals", "clear thumbnails served", registry=self.registry)
        self.searches = Counter(
            "heroes_searches", "image searches by kind", ["kind"], registry=self.registry
        )
        self.jobs_started = Counter(
            "heroes_jobs_started", "triage jobs started", registry=self.registry
        )
        self.up = Gauge("heroes_up", "1 while the service runs", registry=self.registry)
        self.up.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.requests.labels(request.method, name, str(status)).inc()
            self.latency.labels(name).observe(time.perf_counter() - t0)
