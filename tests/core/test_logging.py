"""JSON log lines with a request id that follows a prediction from the HTTP request to the worker."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.logging import JsonFormatter, RequestIdFilter, set_request_id
from tests.api.routes.test_predictions import PREDICT, rows, top_up, wait_finished


def test_a_log_line_is_one_json_object_with_the_request_id_and_extras() -> None:
    set_request_id("req-1")
    record = logging.LogRecord("mlmarket.worker", logging.INFO, __file__, 1, "task %s done", ("t1",), None)
    record.task_id = "t1"
    RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "task t1 done"
    assert line["level"] == "info"
    assert line["request_id"] == "req-1"
    assert line["task_id"] == "t1"
    set_request_id(None)


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_the_request_id_travels_from_the_request_to_the_task_and_the_workers_log(
    client: TestClient,
    make_user: Callable[..., dict[str, str]],
    publish_model: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    publish_model("diabetes-linear")
    headers = make_user()
    top_up(client, headers, 10)
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="mlmarket.worker"):
        r = client.post(
            PREDICT, json={"model": "diabetes-linear", "rows": rows(1)}, headers={**headers, "X-Request-ID": "trace-42"}
        )
        assert r.headers["x-request-id"] == "trace-42"
        wait_finished(client, headers, r.json()["id"])
    done = [rec for rec in caplog.records if rec.name == "mlmarket.worker" and r.json()["id"] in rec.getMessage()]
    assert done and all(getattr(rec, "request_id", None) == "trace-42" for rec in done)


@pytest.mark.parametrize("header", ["x" * 65, "bad id with spaces", "<script>"])
def test_an_unusable_request_id_is_replaced_by_a_generated_one(client: TestClient, header: str) -> None:
    r = client.get("/api/health/live", headers={"X-Request-ID": header})
    assert r.headers["x-request-id"] != header
    assert len(r.headers["x-request-id"]) == 32
