"""Prometheus metrics of the API's HTTP traffic, labelled by route template (never by raw path) and status."""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "mlmarket_http_requests_total",
    "HTTP requests handled by the API",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "mlmarket_http_request_duration_seconds",
    "Time to handle an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


UNMATCHED_ROUTE = "<unmatched>"


class RouteTemplates:
    """Maps a request path to the template of the route that serves it (``/api/v1/users/{user_id}``).

    Built from the application's own routes on first use, so labels never carry
    raw ids and never depend on how the router nests its sub-routers.
    """

    MAX_REMEMBERED_PATHS = 4096

    def __init__(self) -> None:
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None
        self._seen: dict[str, str] = {}  # path -> template: the serving path is one path per model, matched once

    def _build(self, app: Any) -> list[tuple[re.Pattern[str], str]]:
        templates = set(app.openapi().get("paths", {}))
        templates.update(p for r in app.routes if isinstance(p := getattr(r, "path", None), str) and p)
        # Literal paths first, so /models/{name} never shadows /models/popular.
        ordered = sorted(templates, key=lambda t: (t.count("{"), -len(t)))
        return [(compile_path(t)[0], t) for t in ordered]

    def lookup(self, scope: Scope) -> str:
        if self._compiled is None:
            self._compiled = self._build(scope["app"])
        path = scope.get("path", "")
        template = self._seen.get(path)
        if template is not None:
            return template
        template = next((t for pattern, t in self._compiled if pattern.match(path)), UNMATCHED_ROUTE)
        if len(self._seen) >= self.MAX_REMEMBERED_PATHS:
            self._seen.clear()
        self._seen[path] = template
        return template


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.templates = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = self.templates.lookup(scope)
            method = str(scope.get("method", ""))
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
