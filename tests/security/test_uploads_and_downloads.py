"""Uploads are cut off at the limit before they are read whole; CSV downloads cannot smuggle spreadsheet formulas."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pandas as pd
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.api.middleware import BodySizeLimitMiddleware
from app.core.config import Settings
from app.models.catalog import ModelTask
from tests.api.routes.test_predictions import PREDICT, top_up, wait_finished
from tests.models import train_and_publish

MIB = 1024 * 1024


def test_a_streamed_body_over_the_limit_is_413_after_reading_only_the_limit() -> None:
    pulled = 0
    sent: list[dict[str, Any]] = []
    app_saw = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal app_saw
        while True:  # an endpoint that reads the whole body
            message = await receive()
            app_saw += len(message.get("body", b""))
            if not message.get("more_body"):
                break

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * MIB, "more_body": pulled < 100}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/v1/datasets", "headers": []}
    asyncio.run(BodySizeLimitMiddleware(app, max_bytes=5 * MIB)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"larger than the limit" in sent[1]["body"]
    assert pulled == 6  # 100 MiB offered, 6 MiB read: the middleware stopped at the first chunk past the limit


def test_declared_oversized_uploads_are_refused_before_any_byte_is_read(client: TestClient, make_user: Any) -> None:
    headers = {**make_user(), "Content-Length": str(50 * MIB), "Content-Type": "multipart/form-data; boundary=x"}
    r = client.post("/api/v1/datasets", headers=headers, content=b"--x--")
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]


def test_results_csv_neutralises_formulas_in_author_controlled_labels(
    client: TestClient, make_user: Callable[..., dict[str, str]], engine: Engine, settings: Settings
) -> None:
    # An author controls the class labels of a model: make them spreadsheet formulas.
    frame = pd.DataFrame({"x": [float(n) for n in range(40)]})
    frame["label"] = ['=HYPERLINK("http://evil")' if n < 20 else "@SUM(A1)" for n in range(40)]
    train_and_publish(
        engine,
        settings,
        name="labels",
        frame=frame,
        target="label",
        algorithm="LogisticRegression",
        task=ModelTask.classification,
        description="formula labels",
    )
    headers = make_user()
    top_up(client, headers, 10)
    task_id = client.post(PREDICT, json={"model": "labels", "rows": [{"x": 1.0}, {"x": 39.0}]}, headers=headers).json()[
        "id"
    ]
    assert wait_finished(client, headers, task_id)["status"] == "succeeded"
    lines = client.get(f"{PREDICT}/{task_id}/results.csv", headers=headers).text.strip().splitlines()
    cells = [line.rsplit(",", 3)[-3] for line in lines[1:]]
    assert not any(cell.lstrip('"').startswith(("=", "@", "+", "-")) for cell in cells), lines
    assert {cell.strip('"') for cell in cells} <= {'\'=HYPERLINK(""http://evil"")', "'@SUM(A1)"}, lines
