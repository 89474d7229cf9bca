"""The real-services pipeline: PostgreSQL, RabbitMQ, S3 (SeaweedFS) and `python -m ml_worker` processes.

These tests kill workers, corrupt artifacts and hide the broker, and check that
every task still ends exactly once, charged once, and that the ledger holds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.core.db import make_engine
from app.main import create_app
from app.models.task import Task
from app.queue.base import PREDICT_QUEUE, dead_queue
from app.queue.rabbitmq import RabbitBroker
from app.services import ledger, predictions
from app.services.outbox import OutboxRelay
from tests.models import publish_slow_forest
from tests.real_services import Workers, services_settings
from tests.s3_server import S3Server
from tests.samples import DIABETES_ROW

PREDICT = "/api/v1/predictions"
ROW = DIABETES_ROW


pytestmark = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)


@pytest.fixture
def real_settings(database_url: str, rabbitmq_url: str, s3_server: S3Server, tmp_path: Path) -> Settings:
    return services_settings(database_url, rabbitmq_url, s3_server, tmp_path / "api-data", task_max_attempts=3)


@pytest.fixture
def settings(real_settings: Settings) -> Settings:
    """Everything in these tests, the published models included, uses the real services."""
    return real_settings


@pytest.fixture
def workers(real_settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(real_settings, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
def api(real_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(real_settings), raise_server_exceptions=False) as client:
        yield client


def signed_in(client: TestClient, credits: int) -> dict[str, str]:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    client.post("/api/v1/auth/register", json={"email": email, "password": "password-1"})
    token = client.post("/api/v1/auth/token", data={"username": email, "password": "password-1"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    r = client.post("/api/v1/wallet/top-ups", json={"amount": credits}, headers={**headers, "Idempotency-Key": email})
    assert r.status_code == 201
    return headers


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def task_row(engine: Engine, task_id: str) -> Task:
    with Session(engine) as s:
        task = s.get(Task, task_id)
        assert task is not None
        return task


def finished(engine: Engine, task_id: str) -> Task | None:
    task = task_row(engine, task_id)
    return task if task.status in ("succeeded", "failed") else None


def entries_for(engine: Engine, task_id: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(sa.text("SELECT kind FROM ledger_entries WHERE task_id = :t"), {"t": task_id}).scalars()
        )


def queue_depth(url: str, queue: str) -> int:
    async def depth() -> int:
        broker = RabbitBroker(url)
        try:
            return await broker.queue_depth(queue)
        finally:
            await broker.close()

    return asyncio.run(depth())


@pytest.fixture
def real_engine(real_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(real_settings)
    yield engine
    engine.dispose()


def test_paid_prediction_through_rabbitmq_s3_and_a_worker_process(
    api: TestClient,
    workers: Workers,
    real_engine: Engine,
    publish_model: Callable[..., Any],
    trained_demo_models: dict[str, Any],
) -> None:
    model = publish_model("diabetes-linear", price=3)
    workers.start()
    headers = signed_in(api, 50)
    sent = [ROW, {**ROW, "bmi": 0.1}]
    r = api.post(
        PREDICT, json={"model": "diabetes-linear", "rows": sent}, headers={**headers, "X-Request-ID": "trace-7"}
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    assert api.get("/api/v1/wallet", headers=headers).json()["balance"] == 44

    task = wait_for(lambda: finished(real_engine, task_id), what="the task to finish")
    assert task.status == "succeeded"
    _, result = trained_demo_models["diabetes-linear"]
    expected = result.pipeline.predict(pd.DataFrame(sent)[[f.name for f in result.features]])
    assert api.get(f"{PREDICT}/{task_id}", headers=headers).json()["results"] == pytest.approx(list(expected))
    assert entries_for(real_engine, task_id) == ["charge", "fee", "payout"]
    with Session(real_engine) as s:
        assert ledger.balance_of(s, model.owner_id) == 4  # 70 % of 6
        assert ledger.verify(s).ok
    assert api.get("/api/health/ready").json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}
    worker = f"http://127.0.0.1:{workers.health_ports[0]}"
    assert httpx.get(f"{worker}/health/live").json() == {"status": "ok"}
    assert httpx.get(f"{worker}/health/ready").status_code == 200
    metrics_text = httpx.get(f"{worker}/metrics").text
    assert 'mlmarket_worker_tasks_total{outcome="succeeded",queue="tasks.predict"} 1.0' in metrics_text
    assert "mlmarket_model_cache_misses_total 1.0" in metrics_text
    # The request id travelled with the task message to the worker's JSON log line.
    lines = [
        json.loads(line) for line in (workers.root / "worker-0.log").read_text().splitlines() if line.startswith("{")
    ]
    assert any(line.get("request_id") == "trace-7" and task_id in line["message"] for line in lines)


def test_a_redelivered_message_for_a_finished_task_is_ignored(
    api: TestClient,
    workers: Workers,
    real_engine: Engine,
    real_settings: Settings,
    publish_model: Callable[..., Any],
) -> None:
    publish_model("diabetes-linear", price=3)
    workers.start()
    headers = signed_in(api, 20)
    task_id = api.post(PREDICT, json={"model": "diabetes-linear", "rows": [ROW]}, headers=headers).json()["id"]
    wait_for(lambda: finished(real_engine, task_id), what="the task to finish")

    async def publish_twice() -> None:
        broker = RabbitBroker(real_settings.broker_url or "")
        for _ in range(2):
            await broker.publish(PREDICT_QUEUE, {"task_id": task_id}, message_id=task_id)
        await broker.close()

    asyncio.run(publish_twice())
    wait_for(lambda: queue_depth(real_settings.broker_url or "", PREDICT_QUEUE) == 0, what="the duplicates to be acked")
    time.sleep(0.5)
    assert entries_for(real_engine, task_id) == ["charge", "fee", "payout"]
    assert task_row(real_engine, task_id).attempts == 1
    with Session(real_engine) as s:
        assert ledger.verify(s).ok


def test_a_worker_killed_mid_task_loses_nothing_and_charges_once(
    api: TestClient,
    workers: Workers,
    real_engine: Engine,
    real_settings: Settings,
    engine: Engine,
    settings: Settings,
) -> None:
    frame = trained_frame()
    publish_slow_forest(real_engine, real_settings, frame)
    victim = workers.start()
    headers = signed_in(api, 10_000)
    rows = frame.drop(columns="target").sample(5000, replace=True, random_state=0).to_dict("records")
    task_id = api.post(PREDICT, json={"model": "slow-forest", "rows": rows}, headers=headers).json()["id"]

    wait_for(lambda: task_row(real_engine, task_id).status == "running", what="the worker to take the task")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert task_row(real_engine, task_id).status == "running", "the kill should land before the task finished"

    workers.start()
    task = wait_for(lambda: finished(real_engine, task_id), timeout=120, what="the redelivered task to finish")
    assert task.status == "succeeded"
    assert task.attempts >= 2
    assert len(predictions.aligned_results(task) or []) == 5000
    assert entries_for(real_engine, task_id) == ["charge", "fee"]
    assert api.get("/api/v1/wallet", headers=headers).json()["balance"] == 5000
    with Session(real_engine) as s:
        assert ledger.verify(s).ok


def trained_frame() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    frame: pd.DataFrame = load_diabetes(as_frame=True).frame
    return frame


def test_a_corrupted_artifact_is_retried_dead_lettered_failed_and_refunded_once(
    api: TestClient,
    workers: Workers,
    real_engine: Engine,
    real_settings: Settings,
    s3_server: S3Server,
    publish_model: Callable[..., Any],
) -> None:
    model = publish_model("diabetes-linear", price=2)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_server.bucket, Prefix=real_settings.s3_prefix)["Contents"]]
    served = model.onnx_md5 or model.artifact_md5  # the compiled model when there is one: what a worker fetches
    target = [k for k in keys if k.replace("/", "").endswith(served)]
    assert len(target) == 1, keys
    s3.put_object(Bucket=s3_server.bucket, Key=target[0], Body=b"not the model you are looking for")

    workers.start()
    headers = signed_in(api, 30)
    task_id = api.post(PREDICT, json={"model": "diabetes-linear", "rows": [ROW, ROW]}, headers=headers).json()["id"]
    assert api.get("/api/v1/wallet", headers=headers).json()["balance"] == 26

    task = wait_for(lambda: finished(real_engine, task_id), what="the task to fail")
    assert task.status == "failed"
    assert task.attempts == 3
    assert "md5" in (task.error or "").lower()
    assert entries_for(real_engine, task_id) == ["charge", "refund"]
    assert api.get("/api/v1/wallet", headers=headers).json()["balance"] == 30
    assert queue_depth(real_settings.broker_url or "", dead_queue(PREDICT_QUEUE)) == 1
    body = api.get(f"{PREDICT}/{task_id}", headers=headers).json()
    assert body["status"] == "failed" and body["error"]
    with Session(real_engine) as s:
        assert ledger.verify(s).ok


def test_tasks_wait_in_the_outbox_while_the_broker_is_unreachable(
    real_settings: Settings, workers: Workers, real_engine: Engine, publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=3)
    # Nothing listens on port 9 of loopback: to the relay the broker is down (the machine's broker keeps running).
    cut_off = real_settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:9/"})
    with TestClient(create_app(cut_off)) as client:
        headers = signed_in(client, 20)
        r = client.post(PREDICT, json={"model": "diabetes-linear", "rows": [ROW]}, headers=headers)
        assert r.status_code == 202
        task_id = r.json()["id"]
        time.sleep(1)
        assert task_row(real_engine, task_id).status == "queued"
        relay_down = OutboxRelay(real_engine, RabbitBroker("amqp://guest:guest@127.0.0.1:9/"))
        assert relay_down.unsent_count() == 1

    workers.start()
    relay = OutboxRelay(real_engine, RabbitBroker(real_settings.broker_url or ""))

    async def flush() -> int:
        try:
            return await relay.flush_once()
        finally:
            await relay.broker.close()

    assert asyncio.run(flush()) == 1
    assert relay.unsent_count() == 0
    task = wait_for(lambda: finished(real_engine, task_id), what="the delivered task to finish")
    assert task.status == "succeeded"
    assert entries_for(real_engine, task_id) == ["charge", "fee", "payout"]
