"""Fault injection on training: PostgreSQL, RabbitMQ, S3 (SeaweedFS) and `python -m ml_worker` processes.

Several authors train sharded and unsharded jobs while workers are SIGKILLed in the middle of training a job or a
shard and in the middle of merging shards, the broker closes every connection of the test's virtual host and the
database terminates every connection to the test's database. One job is a poison job: whichever worker takes it is
killed, so it must be failed and refunded after a bounded number of takes instead of looping forever. Afterwards
every job must have ended succeeded (settled once) or failed (refunded once), `mlmarket ledger verify` must pass,
and once `mlmarket store gc` has run no object in the store is one that nothing uses, while everything in use is
still there.

Leases, sweeps and retries are short (settings below), so a dead worker's job is taken over within seconds.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.core.db import make_engine
from app.models.training import TrainingJobCreate
from app.services import ledger, training, training_leases, training_shards, users
from app.store import gc, make_store
from app.store.dvc_store import DvcStore
from tests.faults import injection
from tests.real_services import REPO, Workers, as_env, services_settings
from tests.s3_server import S3Server

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(400),
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
    pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning"),
]

JOBS = "/api/v1/training-jobs"
WORKERS = 3
TOP_UP = 200
LEASE_SECONDS = 3.0
MAX_ATTEMPTS = 3
FAULT_EVERY_SECONDS = (1.5, 3.0)
FAULT_KINDS = ("worker_sigkill_training", "broker_close_connections", "db_terminate_backends")
MIN_ROUNDS = 2
MAX_MERGE_KILLS = 3
FINISH_DEADLINE_SECONDS = 170
MERGING = training_shards.MERGING


@pytest.fixture
def settings(database_url: str, rabbitmq_url: str, s3_server: S3Server, tmp_path: Path) -> Settings:
    return services_settings(
        database_url,
        rabbitmq_url,
        s3_server,
        tmp_path / "api-data",
        task_max_attempts=MAX_ATTEMPTS,
        training_lease_seconds=LEASE_SECONDS,
        training_sweep_seconds=0.5,
        training_stale_seconds=20,
        outbox_poll_seconds=0.2,
        store_gc_interval_seconds=0,
        db_pool_size=5,
        log_level="warning",
    )


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(settings, tmp_path)
    yield pool
    pool.stop_all()


def frames() -> dict[str, pd.DataFrame]:
    cancer: pd.DataFrame = load_breast_cancer(as_frame=True).frame.iloc[:, -8:]  # 7 features and the target
    return {
        "iris": load_iris(as_frame=True).frame,
        "wine": load_wine(as_frame=True).frame,
        "cancer": cancer.head(300),
        "diabetes": load_diabetes(as_frame=True).frame,
    }


# (algorithm, hyperparameters, shards) per kind of dataset: sharded and unsharded, linear and forests.
CLASSIFICATION = [
    ("LogisticRegression", {}, 1),
    ("RandomForestClassifier", {"n_estimators": 8, "random_state": 1}, 3),
    ("LogisticRegression", {}, 2),
]
REGRESSION = [
    ("LinearRegression", {}, 1),
    ("RandomForestRegressor", {"n_estimators": 8, "random_state": 1}, 3),
    ("Ridge", {}, 2),
]


@dataclass
class Figures:
    faults: Counter[str] = field(default_factory=Counter)
    killed_jobs_in_merge: set[str] = field(default_factory=set)
    poison_kills: int = 0
    poison_takes: list[int] = field(default_factory=list)
    backends_terminated: int = 0
    errors: list[str] = field(default_factory=list)


def retrying(engine: Engine, read: Callable[[sa.Connection], Any]) -> Any:
    """A read that survives the injector terminating its connection."""
    for _ in range(20):
        try:
            with engine.connect() as conn:
                return read(conn)
        except sa.exc.OperationalError:
            time.sleep(0.2)
    raise AssertionError("the database stayed unreachable")


class Injector:
    def __init__(self, settings: Settings, workers: Workers, engine: Engine, poison: str, figures: Figures) -> None:
        self.settings = settings
        self.workers = workers
        self.engine = engine
        self.poison = poison
        self.figures = figures
        self.vhost = injection.vhost_of(settings)
        self.database = injection.database_of(settings)
        self.random = random.Random(18)
        self.stop = threading.Event()
        self.last_poison_owner: str | None = None

    def kill_owner(self, owner: str | None) -> bool:
        """SIGKILLs the worker process named ``owner`` (host-pid) and starts another in its place."""
        if not owner:
            return False
        pid = int(owner.rsplit("-", 1)[1])
        victim = next((p for p in self.workers.procs if p.pid == pid and p.poll() is None), None)
        if victim is None:
            return False
        injection.sigkill_and_replace(self.workers, victim)
        return True

    def worker_sigkill_training(self) -> None:
        def holders(conn: sa.Connection) -> list[str]:
            jobs = conn.execute(
                sa.text(
                    "SELECT lease_owner FROM training_jobs WHERE status = 'running' AND shards = 1 AND id <> :p "
                    "AND lease_owner IS NOT NULL"
                ),
                {"p": self.poison},
            ).scalars()
            shards = conn.execute(
                sa.text("SELECT lease_owner FROM training_shards WHERE status = 'running' AND lease_owner IS NOT NULL")
            ).scalars()
            return [*jobs, *shards]

        owners = retrying(self.engine, holders)
        if not (owners and self.kill_owner(self.random.choice(owners))):
            injection.kill_random_worker(self.workers, self.random)

    def broker_close_connections(self) -> None:
        injection.broker_close_connections(self.vhost)

    def db_terminate_backends(self) -> None:
        self.figures.backends_terminated += injection.db_terminate_backends(self.database)

    def merge_kills_left(self, job_id: str) -> bool:
        killed = self.figures.killed_jobs_in_merge
        return job_id not in killed and len(killed) < MAX_MERGE_KILLS

    def watch_targets(self) -> None:
        """Kills whoever takes the poison job, and the finalizers of the first merges seen."""

        def targets(conn: sa.Connection) -> list[Any]:
            return list(
                conn.execute(
                    sa.text(
                        "SELECT id, attempts, lease_owner FROM training_jobs WHERE status = 'running' "
                        "AND lease_owner IS NOT NULL AND (id = :p OR stage = :merging)"
                    ),
                    {"p": self.poison, "merging": MERGING},
                )
            )

        for job_id, attempts, owner in retrying(self.engine, targets):
            if job_id == self.poison:
                if owner != self.last_poison_owner and self.kill_owner(owner):
                    self.last_poison_owner = owner
                    self.figures.poison_kills += 1
                    self.figures.poison_takes.append(attempts)
            elif self.merge_kills_left(job_id) and self.kill_owner(owner):
                self.figures.killed_jobs_in_merge.add(job_id)
                self.figures.faults["worker_sigkill_merging"] += 1

    def run(self) -> None:
        schedule: list[str] = []
        next_fault = time.monotonic() + self.random.uniform(*FAULT_EVERY_SECONDS)
        while not self.stop.is_set():
            try:
                self.watch_targets()
                rounds_left = min(self.figures.faults[k] for k in FAULT_KINDS) < MIN_ROUNDS
                if rounds_left and time.monotonic() >= next_fault:
                    if not schedule:
                        schedule = list(FAULT_KINDS)
                        self.random.shuffle(schedule)
                    kind = schedule.pop()
                    getattr(self, kind)()
                    self.figures.faults[kind] += 1
                    next_fault = time.monotonic() + self.random.uniform(*FAULT_EVERY_SECONDS)
            except Exception as exc:  # an injection that could not be made is reported, not fatal
                self.figures.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.1)


def top_up(client: TestClient, headers: dict[str, str], amount: int) -> None:
    r = client.post(
        "/api/v1/wallet/top-ups", json={"amount": amount}, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert r.status_code == 201, r.text


def submit_jobs(client: TestClient, make_user: Callable[..., dict[str, str]]) -> tuple[list[str], str]:
    """Four authors, one dataset each, three jobs each (sharded and not); and the poison job."""
    jobs: list[str] = []
    poison = ""
    for n, (name, frame) in enumerate(frames().items()):
        author = make_user(f"author-{n}@example.com")
        top_up(client, author, TOP_UP)
        r = client.post("/api/v1/datasets", files={"file": (f"{name}.csv", frame.to_csv(index=False))}, headers=author)
        assert r.status_code == 201, r.text
        dataset = r.json()
        plans = REGRESSION if dataset["task"] == "regression" else CLASSIFICATION
        for algorithm, hyperparameters, shards in plans:
            body = {"dataset_id": dataset["id"], "algorithm": algorithm, "hyperparameters": hyperparameters}
            r = client.post(JOBS, json={**body, "shards": shards}, headers=author)
            assert r.status_code == 202, r.text
            jobs.append(r.json()["id"])
        if n == 0:
            r = client.post(JOBS, json={"dataset_id": dataset["id"], "algorithm": "LogisticRegression"}, headers=author)
            assert r.status_code == 202, r.text
            poison = r.json()["id"]
    return jobs, poison


def wait_for_workers(engine: Engine, count: int) -> None:
    deadline = time.monotonic() + 90
    while retrying(engine, lambda c: c.execute(sa.text("SELECT count(*) FROM worker_heartbeats")).scalar_one()) < count:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.2)


def cli(settings: Settings, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = as_env(settings, root / "cli-data")
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_every_training_job_ends_once_and_the_store_keeps_no_orphan_under_faults(
    settings: Settings,
    client: TestClient,
    make_user: Callable[..., dict[str, str]],
    workers: Workers,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    for _ in range(WORKERS):
        workers.start()
    engine = make_engine(settings)
    figures = Figures()
    try:
        wait_for_workers(engine, WORKERS)
        jobs, poison = submit_jobs(client, make_user)
        injector = Injector(settings, workers, engine, poison, figures)
        thread = threading.Thread(target=injector.run, daemon=True)
        thread.start()
        submitted = time.monotonic()

        def unfinished(conn: sa.Connection) -> int:
            query = "SELECT count(*) FROM training_jobs WHERE status IN ('queued', 'running')"
            return int(conn.execute(sa.text(query)).scalar_one())

        deadline = time.monotonic() + FINISH_DEADLINE_SECONDS
        while (left := retrying(engine, unfinished)) and time.monotonic() < deadline:
            time.sleep(0.5)
        injector.stop.set()
        thread.join(timeout=30)
        finished = time.monotonic()
        stranded = retrying(
            engine,
            lambda c: c.execute(
                sa.text("SELECT id, status, stage, shards, attempts, lease_owner, lease_until FROM training_jobs")
            ).all(),
        )
        assert left == 0, f"{left} jobs unfinished after {FINISH_DEADLINE_SECONDS}s: {stranded} {figures}"
        check_money(engine, [*jobs, poison], poison, figures)
        check_store(settings, engine, tmp_path, figures)
        print(
            f"\ntraining fault figures: {len(jobs) + 1} jobs, by status "
            f"{Counter(row.status for row in stranded)}; faults {dict(figures.faults)}; poison job kills "
            f"{figures.poison_kills}; database backends terminated {figures.backends_terminated}; "
            f"injection errors {figures.errors[:3]}; seconds: setting up {submitted - started:.1f}, "
            f"training under faults {finished - submitted:.1f}"
        )
        assert all(figures.faults[kind] >= MIN_ROUNDS for kind in FAULT_KINDS), figures.faults
        assert figures.faults["worker_sigkill_merging"] >= 1, figures.faults
    finally:
        engine.dispose()


def check_money(engine: Engine, jobs: list[str], poison: str, figures: Figures) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT j.id, j.status, j.cost, j.error, j.attempts, "
                "count(*) FILTER (WHERE e.kind = 'charge'), count(*) FILTER (WHERE e.kind = 'refund'), "
                "count(*) FILTER (WHERE e.kind = 'fee'), count(*) FILTER (WHERE e.kind = 'payout'), "
                "coalesce(sum(e.amount) FILTER (WHERE e.kind IN ('refund', 'fee')), 0) "
                "FROM training_jobs j LEFT JOIN ledger_entries e ON e.task_id = j.id "
                "GROUP BY j.id, j.status, j.cost, j.error, j.attempts"
            )
        ).all()
    assert {row[0] for row in rows} == set(jobs)
    problems = []
    for job_id, status, cost, _error, _attempts, charges, refunds, fees, payouts, returned in rows:
        settled = status == "succeeded" and (refunds, fees) == (0, 1)
        refunded = status == "failed" and (refunds, fees) == (1, 0)
        if not (charges == 1 and payouts == 0 and returned == cost and (settled or refunded)):
            problems.append(f"{job_id} {status}: charges {charges} refunds {refunds} fees {fees}")
    assert not problems, problems
    (poisoned,) = [row for row in rows if row[0] == poison]
    assert poisoned[1] == "failed" and "stopped its worker" in (poisoned[3] or ""), poisoned
    # A job that kills its workers is given up after task_max_attempts + 5 takes, not run forever.
    assert figures.poison_kills >= MAX_ATTEMPTS + training_leases.CRASH_ALLOWANCE
    assert poisoned[4] <= MAX_ATTEMPTS + training_leases.CRASH_ALLOWANCE + 2, poisoned
    for job_id in figures.killed_jobs_in_merge:  # another worker took the merge over and settled it once
        assert next(row for row in rows if row[0] == job_id)[1] == "succeeded"
    with Session(engine) as session:
        assert ledger.verify(session).ok


def check_store(settings: Settings, engine: Engine, tmp_path: Path, figures: Figures) -> None:
    verified = cli(settings, tmp_path, "ledger", "verify")
    assert verified.returncode == 0 and "ledger OK" in verified.stdout, verified.stdout + verified.stderr
    listed = cli(settings, tmp_path, "store", "gc", "--dry-run", "--grace-seconds", "0", "--json")
    assert listed.returncode == 0, listed.stderr
    would_remove = {o["md5"] for o in json.loads(listed.stdout)["orphans"]}
    removed = cli(settings, tmp_path, "store", "gc", "--grace-seconds", "0")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    figures.faults["orphans collected by store gc"] = len(would_remove)

    store = make_store(settings)
    assert isinstance(store, DvcStore)
    stored = {o.md5 for o in store.objects()}
    with Session(engine) as session:
        used = gc.in_use(session)
        needed = set(
            session.execute(
                sa.text(
                    "SELECT artifact_md5 FROM training_jobs WHERE status = 'succeeded' UNION "
                    "SELECT s.artifact_md5 FROM training_shards s JOIN training_jobs j ON j.id = s.job_id "
                    "WHERE j.status = 'succeeded' UNION SELECT artifact_md5 FROM dataset_versions"
                )
            ).scalars()
        )
    assert stored <= used, f"objects nothing uses: {sorted(stored - used)}"
    assert needed <= stored, f"files in use but missing from the store: {sorted(needed - stored)}"
    assert not (would_remove & used)


def test_ledger_counters_count_committed_entries_only(session: Session, settings: Settings) -> None:
    """A training charge rolled back (its transaction never committed) leaves /metrics as it was."""
    from app.models.dataset import Dataset, DatasetVersion

    def counted() -> tuple[float, float]:
        labels = {"kind": "charge"}
        entries = REGISTRY.get_sample_value("mlmarket_ledger_entries_total", labels)
        credits = REGISTRY.get_sample_value("mlmarket_ledger_credits_total", labels)
        return entries or 0.0, credits or 0.0

    author = users.create_user(session, email="counted@example.com", password="password-1")
    ledger.top_up(session, user_id=author.id or 0, amount=100, idempotency_key="counted")
    dataset = Dataset(user_id=author.id or 0, name="iris", target="target")
    session.add(dataset)
    session.flush()
    session.add(
        DatasetVersion(
            dataset_id=dataset.id or 0, version=1, rows=150, columns=["sepal", "target"],
            dtypes={"sepal": "number", "target": "integer"}, task="classification",
            artifact_md5="0" * 32, artifact_size=1, artifact_path="datasets/1/v1/data.csv",
        )
    )  # fmt: skip
    session.commit()
    before = counted()

    ledger.charge(session, user_id=author.id or 0, amount=10, task_id=str(uuid.uuid4()))
    session.rollback()
    assert counted() == before
    assert ledger.balance_of(session, author.id or 0) == 100

    request = TrainingJobCreate(dataset_id=dataset.id or 0, algorithm="LogisticRegression")
    with contextlib.suppress(Exception), Session(session.get_bind()) as failing:
        ledger.charge(failing, user_id=author.id or 0, amount=10, task_id=str(uuid.uuid4()))
        failing.execute(sa.text("SELECT 1/0"))  # the transaction dies before its commit
        failing.commit()
    assert counted() == before

    training.submit(session, settings, user_id=author.id or 0, request=request)
    assert counted() == (before[0] + 1, before[1] + 10)
