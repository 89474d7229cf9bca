"""The worker's own small HTTP endpoint for probes and Prometheus: /health/live, /health/ready, /metrics.

It runs in a daemon thread (standard library server) so it answers even while
the event loop is busy with a long prediction.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

# A worker whose loop has not ticked for this long is reported not live.
STALL_SECONDS = 60.0


class WorkerState:
    def __init__(self) -> None:
        self.consuming = False
        self.last_tick = time.monotonic()

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def live(self) -> bool:
        return time.monotonic() - self.last_tick < STALL_SECONDS

    def ready(self) -> bool:
        return self.consuming and self.live()


def _handler(state: WorkerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path == "/health/live":
                self._json(200 if state.live() else 503, {"status": "ok" if state.live() else "stalled"})
            elif self.path == "/health/ready":
                ok = state.ready()
                self._json(200 if ok else 503, {"status": "ok" if ok else "unavailable", "consuming": state.consuming})
            else:
                self._json(404, {"detail": "not found"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds would flood the log

    return Handler


def start_health_server(state: WorkerState, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), _handler(state))
    threading.Thread(target=server.serve_forever, name="worker-health", daemon=True).start()
    return server
