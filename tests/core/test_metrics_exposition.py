"""Both Prometheus outputs (the API's /metrics and the worker's) carry the operating metrics and pass promtool."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ml_worker.health import WorkerState, start_health_server
from tests.api.routes.test_predictions import PREDICT, rows, top_up, wait_finished
from tests.conftest import unavailable


def promtool_check(text: str) -> None:
    if shutil.which("promtool") is None:
        unavailable("promtool is not installed (scripts/install_promtool.sh installs Debian's prometheus)")
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_api_metrics_show_tasks_queue_money_and_requests_and_pass_promtool(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=2)
    headers = make_user()
    top_up(client, headers, 10)
    task_id = client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(1)}, headers=headers).json()["id"]
    wait_finished(client, headers, task_id)
    text = client.get("/metrics").text
    for line in (
        'mlmarket_tasks{status="succeeded"} 1.0',
        'mlmarket_queue_messages{queue="tasks.predict"} 0.0',
        "mlmarket_outbox_unsent_messages 0.0",
        "mlmarket_ledger_problems 0.0",
    ):
        assert line in text
    for name in (
        'mlmarket_ledger_credits_total{kind="charge"}',
        'mlmarket_ledger_credits_total{kind="refund"}',
        'mlmarket_http_requests_total{method="POST",route="/api/v1/predictions",status="202"}',
        "mlmarket_http_request_duration_seconds_bucket",
    ):
        assert name in text
    promtool_check(text)


def test_worker_metrics_pass_promtool() -> None:
    import ml_worker.metrics  # noqa: F401 - registers the worker's metrics

    server = start_health_server(WorkerState(), "127.0.0.1", 0)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_address[1]}/metrics").text
    finally:
        server.shutdown()
    for name in ("mlmarket_worker_tasks_total", "mlmarket_worker_heartbeat_timestamp_seconds", "mlmarket_model_cache"):
        assert name in text
    promtool_check(text)
