"""The training studio on the real services: PostgreSQL, RabbitMQ, S3 (SeaweedFS) and a `python -m ml_worker` process.

Upload → train on the worker → report → publish → another user predicts → the author earns; the worker's
heartbeat shows in GET /api/v1/admin/workers.
"""

from __future__ import annotations

import io
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sklearn.datasets import load_wine
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.runtime.model import ModelRuntime
from app.services import ledger
from tests.real_services import Workers, services_settings
from tests.s3_server import S3Server

JOBS = "/api/v1/training-jobs"

pytestmark = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)


@pytest.fixture
def settings(database_url: str, rabbitmq_url: str, s3_server: S3Server, tmp_path: Path) -> Settings:
    """The API of these tests runs no worker: jobs go through RabbitMQ to a worker process, files through S3."""
    return services_settings(database_url, rabbitmq_url, s3_server, tmp_path / "api-data")


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    pool = Workers(settings, tmp_path)
    yield pool.start()
    pool.stop_all()


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    pool = Workers(settings, tmp_path)
    yield [pool.start(), pool.start()]
    pool.stop_all()


def top_up(client: TestClient, headers: dict[str, str], amount: int) -> None:
    r = client.post(
        "/api/v1/wallet/top-ups", json={"amount": amount}, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert r.status_code == 201, r.text


def balance(client: TestClient, headers: dict[str, str]) -> int:
    return int(client.get("/api/v1/wallet", headers=headers).json()["balance"])


def wait_for(fetch: Callable[[], dict[str, Any]], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body = fetch()
    while body["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
        body = fetch()
    return body


def test_train_publish_predict_and_the_author_earns_on_real_services(
    client: TestClient,
    make_user: Callable[..., dict[str, str]],
    admin_headers: dict[str, str],
    worker: subprocess.Popen[bytes],
    engine: Engine,
) -> None:
    author, buyer = make_user(), make_user()
    top_up(client, author, 15)
    frame: pd.DataFrame = load_wine(as_frame=True).frame
    r = client.post("/api/v1/datasets", files={"file": ("wine.csv", frame.to_csv(index=False))}, headers=author)
    assert r.status_code == 201, r.text
    dataset = r.json()
    assert dataset["rows"] == 178 and dataset["task"] == "classification"

    bad = client.post(
        JOBS,
        json={"dataset_id": dataset["id"], "algorithm": "RandomForestClassifier", "hyperparameters": {"max_depth": -1}},
        headers=author,
    )
    assert bad.status_code == 422 and "max_depth" in bad.json()["detail"]
    assert balance(client, author) == 15

    job = client.post(
        JOBS,
        json={
            "dataset_id": dataset["id"],
            "algorithm": "RandomForestClassifier",
            "hyperparameters": {"n_estimators": 25, "random_state": 3},
        },
        headers=author,
    ).json()
    assert balance(client, author) == 5
    done = wait_for(lambda: client.get(f"{JOBS}/{job['id']}", headers=author).json())
    assert done["status"] == "succeeded", done
    report = client.get(f"{JOBS}/{job['id']}/report", headers=author).json()
    assert report["feature_importance"]["method"] == "native" and report["classes"] == [0, 1, 2]
    assert len(PdfReader(io.BytesIO(client.get(f"{JOBS}/{job['id']}/report.pdf", headers=author).content)).pages) == 3

    r = client.post(
        "/api/v1/models",
        json={"training_job_id": job["id"], "name": "wine-forest", "description": "wine", "price_per_row": 5},
        headers=author,
    )
    assert r.status_code == 201, r.text
    top_up(client, buyer, 50)
    rows = frame.drop(columns="target").head(3).to_dict("records")
    task = client.post("/api/v1/predictions", json={"model": "wine-forest", "rows": rows}, headers=buyer).json()
    predicted = wait_for(lambda: client.get(f"/api/v1/predictions/{task['id']}", headers=buyer).json())
    assert predicted["status"] == "succeeded"
    assert predicted["results"] == frame["target"].head(3).tolist()
    assert balance(client, buyer) == 35
    assert balance(client, author) == 5 + 10  # 70 % of 15
    with Session(engine) as s:
        assert ledger.verify(s).ok

    def listed() -> list[dict[str, Any]]:
        return list(client.get("/api/v1/admin/workers", headers=admin_headers).json())

    deadline = time.monotonic() + 30
    while not (listed() and listed()[0]["tasks_done"] >= 2):
        assert time.monotonic() < deadline, listed()
        time.sleep(0.5)
    (seen,) = listed()
    assert seen["queues"] == ["tasks.predict", "tasks.train"]
    assert seen["memory_bytes"] > 10_000_000 and seen["current_task"] is None
    assert client.get("/api/v1/admin/workers", headers=author).status_code == 403


def test_sharded_random_forest_on_two_worker_processes(
    client: TestClient,
    make_user: Callable[..., dict[str, str]],
    admin_headers: dict[str, str],
    two_workers: list[subprocess.Popen[bytes]],
    engine: Engine,
) -> None:
    author = make_user()
    top_up(client, author, 30)
    frame: pd.DataFrame = load_wine(as_frame=True).frame
    r = client.post("/api/v1/datasets", files={"file": ("wine.csv", frame.to_csv(index=False))}, headers=author)
    assert r.status_code == 201, r.text

    # Both workers consume tasks.train once their first heartbeat is in (it is written after they subscribe).
    deadline = time.monotonic() + 60
    while len(names := {w["name"] for w in client.get("/api/v1/admin/workers", headers=admin_headers).json()}) < 2:
        assert time.monotonic() < deadline, names
        time.sleep(0.2)

    r = client.post(
        JOBS,
        json={
            "dataset_id": r.json()["id"],
            "algorithm": "RandomForestClassifier",
            "hyperparameters": {"n_estimators": 15, "random_state": 7},
            "shards": 2,
        },
        headers=author,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    done = wait_for(lambda: client.get(f"{JOBS}/{job['id']}", headers=author).json())
    assert done["status"] == "succeeded", done
    shards = done["shard_status"]
    assert [s["status"] for s in shards] == ["succeeded", "succeeded"]
    assert sum(s["rows"] for s in shards) == 142
    # Each worker takes one training message at a time (prefetch 1) and the two shard messages go out together,
    # so while one worker trains the first shard the broker hands the second to the other.
    assert {s["worker"] for s in shards} == names

    artifact = client.get(f"{JOBS}/{job['id']}/artifact", headers=author)
    assert artifact.status_code == 200
    path = tmp_model(artifact.content)
    runtime = ModelRuntime.load(path)
    model = runtime.estimator.named_steps["model"]
    assert model.n_estimators == len(model.estimators_) == 15 * 2
    rows = frame.drop(columns="target").head(4).to_dict("records")
    assert runtime.predict(rows) == frame["target"].head(4).tolist()

    r = client.post(
        "/api/v1/models",
        json={"training_job_id": job["id"], "name": "wine-sharded", "price_per_row": 1},
        headers=author,
    )
    assert r.status_code == 201, r.text
    task = client.post("/api/v1/predictions", json={"model": "wine-sharded", "rows": rows}, headers=author).json()
    predicted = wait_for(lambda: client.get(f"/api/v1/predictions/{task['id']}", headers=author).json())
    assert predicted["status"] == "succeeded" and predicted["results"] == frame["target"].head(4).tolist()
    # 10 for the training (settled once) and 4 rows at 1 credit; the author earns their share of their own rows.
    assert balance(client, author) == 30 - 10 - 4 + 2
    with Session(engine) as s:
        assert ledger.verify(s).ok


def tmp_model(content: bytes) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "model.skops"
    path.write_bytes(content)
    return path


def test_a_dead_workers_lease_runs_out_and_its_job_shard_and_merge_are_taken_over_once(
    settings: Settings, engine: Engine
) -> None:
    """The leases on PostgreSQL, step by step: a live lease keeps a duplicate message away, a lease that ran out lets
    the training sweep publish the work again and another worker take it, the first holder's hands are then empty,
    and a job whose takes pass the bound is failed and refunded once."""
    from app.models.training import TrainingJobCreate
    from app.queue.embedded import EmbeddedBroker
    from app.services import datasets, training, training_leases, training_shards, users
    from app.services.outbox import OutboxRelay
    from app.store import ArtifactRef, make_store

    relay = OutboxRelay(engine, EmbeddedBroker())
    frame: pd.DataFrame = load_wine(as_frame=True).frame
    with Session(engine, expire_on_commit=False) as s:
        author = users.create_user(s, email="leases@example.com", password="password-1")
        ledger.top_up(s, user_id=author.id or 0, amount=100, idempotency_key="leases")
        dataset, _ = datasets.create(
            s, make_store(settings), settings, user_id=author.id or 0, name="wine.csv",
            data=frame.to_csv(index=False).encode(), target="target",
        )  # fmt: skip

        def submit(shards: int) -> str:
            request = TrainingJobCreate(dataset_id=dataset.id or 0, algorithm="LogisticRegression", shards=shards)
            return training.submit(s, settings, user_id=author.id or 0, request=request).id

        def unsent() -> set[str]:
            rows = s.execute(sa.text("SELECT task_id FROM outbox WHERE sent_at IS NULL")).scalars()
            s.rollback()
            return set(rows)

        s.execute(sa.text("UPDATE outbox SET sent_at = now()"))
        s.commit()
        job_id = submit(1)
        s.execute(sa.text("UPDATE outbox SET sent_at = now()"))  # published and delivered
        s.commit()
        assert training_leases.start(s, job_id, worker="a", lease_seconds=0.5) is not None
        assert training_leases.start(s, job_id, worker="b", lease_seconds=0.5) is None  # a duplicate while "a" lives
        assert training_leases.renew(s, job_id=job_id, worker="a", lease_seconds=0.5)
        assert relay.requeue_stale_training(300) == 0
        time.sleep(0.6)  # "a" died: nobody renews its lease
        assert relay.requeue_stale_training(300) == 1 and unsent() == {job_id}
        assert relay.requeue_stale_training(300) == 0  # once, not at every sweep
        taken = training_leases.start(s, job_id, worker="b", lease_seconds=30)
        assert taken is not None and taken.attempts == 2 and taken.lease_owner == "b"
        assert not training_leases.renew(s, job_id=job_id, worker="a", lease_seconds=30)

        # A sharded job: "a" trains shard 0 and dies; "b" trains both shards, claims the merge and dies in it.
        sharded = submit(2)
        s.execute(sa.text("UPDATE outbox SET sent_at = now()"))
        s.commit()
        first, second = training_shards.shards_of(s, sharded)
        fake = ArtifactRef(md5="0" * 32, size=1, path="training/x/shard.skops")
        assert (
            take := training_shards.start_shard(s, job_id=sharded, shard_id=first.id, worker="a", lease_seconds=0.5)
        )
        assert take.taken
        time.sleep(0.6)
        assert relay.requeue_stale_training(300) == 1 and unsent() == {first.id}
        s.execute(sa.text("UPDATE outbox SET sent_at = now()"))
        s.commit()
        for shard in (first, second):
            take = training_shards.start_shard(s, job_id=sharded, shard_id=shard.id, worker="b", lease_seconds=30)
            assert take is not None and take.taken
            assert training_shards.complete_shard(
                s, shard_id=shard.id, rows=70, artifact=fake, duration_seconds=0.1, worker="b"
            )
        assert not training_shards.complete_shard(
            s, shard_id=first.id, rows=70, artifact=fake, duration_seconds=0.1, worker="a"
        )
        assert training_shards.claim_merge(s, sharded, worker="b", lease_seconds=0.5) is not None
        assert training_shards.claim_merge(s, sharded, worker="c", lease_seconds=30) is None  # "b" holds the merge
        time.sleep(0.6)
        assert relay.requeue_stale_training(300) == 1 and unsent() == {min(first.id, second.id)}
        merged = training_shards.claim_merge(s, sharded, worker="c", lease_seconds=30)
        assert merged is not None and merged.lease_owner == "c"
        training_shards.release_merge(s, sharded, worker="b")  # "b" let go of nothing: it no longer holds the merge
        assert training_shards.claim_merge(s, sharded, worker="d", lease_seconds=30) is None

        # A job that kills every worker: the take after the bound fails and refunds it, once.
        poison = submit(1)
        for n in range(3):
            took = training_leases.start(s, poison, worker=f"w{n}", lease_seconds=0.01, max_takes=2)
            assert took is not None
            time.sleep(0.02)
        assert took is not None and took.status == "failed" and "stopped its worker 2 times" in (took.error or "")
        assert training_leases.start(s, poison, worker="w9", lease_seconds=0.01, max_takes=2) is None
        assert not training_leases.fail(s, job_id=poison, reason="again")
        refunds = s.execute(
            sa.text("SELECT count(*) FROM ledger_entries WHERE task_id = :t AND kind = 'refund'"), {"t": poison}
        ).scalar_one()
        assert refunds == 1
        assert ledger.verify(s).ok
