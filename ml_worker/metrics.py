"""Prometheus metrics of the worker (the model cache has its own in app.runtime.cache)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASKS = Counter("mlmarket_worker_tasks_total", "Task messages handled by this worker", ["queue", "outcome"])
TASK_SECONDS = Histogram(
    "mlmarket_worker_task_duration_seconds",
    "Time from taking a task to committing its result",
    ["queue"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
HEARTBEAT = Gauge("mlmarket_worker_heartbeat_timestamp_seconds", "Unix time of the worker's last heartbeat")
