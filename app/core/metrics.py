"""Prometheus gauges of mlmarket's state (tasks, queues, outbox, ledger); the HTTP metrics are in app.api.metrics."""

from __future__ import annotations

from prometheus_client import Gauge

# Read from the database and the broker when /metrics is scraped (see app.main).
TASKS_BY_STATUS = Gauge("mlmarket_tasks", "Prediction tasks in the database by status", ["status"])
QUEUE_DEPTH = Gauge("mlmarket_queue_messages", "Messages waiting in a broker queue", ["queue"])
OUTBOX_UNSENT = Gauge("mlmarket_outbox_unsent_messages", "Committed task messages not yet confirmed by the broker")
LEDGER_MISMATCHES = Gauge(
    "mlmarket_ledger_problems", "Problems found by the last ledger verification (0 when the ledger holds)"
)
LEDGER_VERIFIED = Gauge("mlmarket_ledger_verified_timestamp_seconds", "Unix time of the last ledger verification")
