"""Class probabilities on the services path: a real ``mlmarket serve`` on PostgreSQL, RabbitMQ and S3 queues
tasks, a real ``python -m ml_worker`` process runs a task that asked for probabilities and one that did not in
one batch, and both are charged and settled exactly as without."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.services import ledger
from tests.http_clients import balance, paying_user
from tests.ml_worker.test_batched_tasks import (  # noqa: F401 - the fixtures of the services path
    ApiProcess,
    real_engine,
    real_settings,
    serve,
    settings,
    worker_ready,
    workers,
)
from tests.real_services import Workers
from tests.samples import DIABETES_ROW

pytestmark = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)

PREDICT = "/api/v1/predictions"
IRIS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
SAMPLES = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
ROWS = [dict(zip(IRIS, row, strict=True)) for row in SAMPLES]


def finished(base: str, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}{PREDICT}/{task_id}", headers=headers, timeout=30).json()
        if body["status"] in ("succeeded", "failed"):
            return dict(body)
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish within 120 s")


def test_a_worker_stores_probabilities_only_for_the_task_that_asked(
    publish_model: Callable[..., Any],
    trained_demo_models: dict[str, Any],
    serve: Callable[[], ApiProcess],  # noqa: F811
    workers: Workers,  # noqa: F811
    real_engine: Engine,  # noqa: F811
) -> None:
    publish_model("iris-logistic", owner_email="iris-author@example.com", price=2)
    publish_model("diabetes-linear", owner_email="diabetes-author@example.com", price=3)
    iris = trained_demo_models["iris-logistic"][1].pipeline
    api = serve()
    base = api.base_url
    headers = paying_user(base, 100)

    # a regressor asked for probabilities: refused before anything is charged or queued
    r = httpx.post(
        f"{base}{PREDICT}",
        json={"model": "diabetes-linear", "rows": [DIABETES_ROW], "probabilities": True},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 422 and "only classifiers give class probabilities" in r.json()["detail"]
    assert balance(base, headers) == 100

    # both queued before any worker runs: the worker takes them in one batch
    sent = [ROWS[0], {**ROWS[1], "sepal_width_cm": "wide"}, ROWS[2]]  # the second row is rejected
    asked = httpx.post(
        f"{base}{PREDICT}", json={"model": "iris-logistic", "rows": sent, "probabilities": True}, headers=headers
    )
    plain = httpx.post(f"{base}{PREDICT}", json={"model": "iris-logistic", "rows": sent}, headers=headers)
    assert asked.status_code == plain.status_code == 202, asked.text
    assert asked.json()["cost"] == plain.json()["cost"] == 2 * 2
    workers.start()
    worker_ready(workers, 0)

    done = finished(base, headers, asked.json()["id"])
    other = finished(base, headers, plain.json()["id"])
    assert done["status"] == other["status"] == "succeeded", (done, other)
    expected = iris.predict(pd.DataFrame([ROWS[0], ROWS[2]], columns=IRIS)).tolist()
    classes = list(iris.classes_)
    assert done["results"] == other["results"] == [expected[0], None, expected[1]]
    assert done["classes"] == classes
    assert done["probabilities"][1] is None
    matrix = np.asarray([done["probabilities"][0], done["probabilities"][2]])
    assert np.allclose(matrix.sum(axis=1), 1.0)
    assert [classes[i] for i in matrix.argmax(axis=1)] == expected
    assert other["classes"] is None and other["probabilities"] is None

    r = httpx.get(f"{base}{PREDICT}/{asked.json()['id']}/results.csv", headers=headers, timeout=30)
    table = list(csv.reader(io.StringIO(r.text)))
    at = table[0].index("prediction")
    assert table[0][at + 1 : at + 1 + len(classes)] == [f"probability_{c}" for c in classes]
    assert np.allclose([[float(v) for v in table[i][at + 1 : at + 4]] for i in (1, 3)], matrix)
    assert table[2][at + 1 : at + 4] == ["", "", ""]

    with real_engine.connect() as conn:
        stored = {row[0]: row[1] for row in conn.execute(sa.text("SELECT id, probability_data IS NOT NULL FROM tasks"))}
    assert stored == {asked.json()["id"]: True, plain.json()["id"]: False}
    assert balance(base, headers) == 100 - 2 * 4
    with Session(real_engine) as session:
        report = ledger.verify(session)
    assert report.ok and report.total_held == 0, report
