"""Fault injection on the real services: PostgreSQL, RabbitMQ, S3, uvicorn APIs and `python -m ml_worker` processes.

2,000 paid single-row tasks from 50 users go in over HTTP while workers are
SIGKILLed, the broker drops every connection of the test's virtual host, the
database terminates the app's connections, an API replica (and its outbox
relay) is SIGKILLed mid-flush, task messages are published twice and the
waiting ones are purged from the queue (lost). Two API
replicas run, as in a cluster, so submissions go on while one restarts. Afterwards every
task must have ended exactly once, every credit must be accounted for and the
ledger must verify.

The broker is this machine's own RabbitMQ: ``rabbitmqctl close_all_connections
-p <vhost>`` closes only the connections of the test's own virtual host.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.core.db import make_engine
from app.models.user import Role
from app.queue.base import PREDICT_QUEUE
from app.queue.rabbitmq import RabbitBroker
from app.services import ledger, users
from tests.faults import injection
from tests.real_services import REPO, Workers, as_env, free_port, services_settings
from tests.s3_server import S3Server

pytestmark = [
    pytest.mark.faults,
    pytest.mark.timeout(420),
    pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True),
]

USERS = 50
TASKS_PER_USER = 40
WORKERS = 3
API_REPLICAS = 2
MIN_ROUNDS = 3
PRICE = 5
TOP_UP = 200
ADMIN_CREDIT = 100
FAULT_EVERY_SECONDS = (0.8, 2.0)
FINISH_DEADLINE_SECONDS = 150
PREDICT = "/api/v1/predictions"
ROW = {"age": 0.03, "sex": -0.04, "bmi": 0.06, "bp": 0.02, "s1": -0.04, "s2": -0.03, "s3": -0.04, "s4": 0.0}
ROW |= {"s5": 0.02, "s6": -0.01}
FAULT_KINDS = (
    "worker_sigkill",
    "broker_close_connections",
    "db_terminate_backends",
    "api_relay_sigkill",
    "duplicate",
    "messages_lost",
)


@pytest.fixture
def settings(database_url: str, rabbitmq_url: str, s3_server: S3Server, tmp_path: Path) -> Settings:
    return services_settings(
        database_url,
        rabbitmq_url,
        s3_server,
        tmp_path / "api-data",
        task_max_attempts=5,
        outbox_poll_seconds=0.2,
        task_stale_seconds=15,
        db_pool_size=5,
        log_level="warning",
    )


class ApiProcess:
    """The API (with its outbox relay) served by uvicorn in a process of its own, so it can be SIGKILLed."""

    def __init__(self, settings: Settings, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.env = as_env(settings, root / "data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (root / "api.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(command, env=self.env, cwd=REPO, stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/health/live", timeout=2).status_code == 200:
                    return
            assert self.proc is not None and self.proc.poll() is None, "the API process exited"
            time.sleep(0.1)
        raise AssertionError("the API did not start")

    def live(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def apis(settings: Settings, tmp_path: Path) -> Iterator[list[ApiProcess]]:
    replicas = [ApiProcess(settings, tmp_path / f"api-{n}") for n in range(API_REPLICAS)]
    for api in replicas:
        api.start()
    for api in replicas:
        api.wait_ready()
    yield replicas
    for api in replicas:
        api.stop()


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(settings, tmp_path)
    yield pool
    pool.stop_all()


@dataclass
class Figures:
    faults: Counter[str] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    backends_terminated: int = 0
    errors: list[str] = field(default_factory=list)


class FaultInjector:
    def __init__(
        self, settings: Settings, apis: list[ApiProcess], workers: Workers, engine: Engine, figures: Figures
    ) -> None:
        self.settings = settings
        self.apis = apis
        self.workers = workers
        self.engine = engine
        self.figures = figures
        self.vhost = injection.vhost_of(settings)
        self.database = injection.database_of(settings)
        self.random = random.Random(8)

    def worker_sigkill(self) -> None:
        live = injection.live_workers(self.workers)
        if len(live) < WORKERS:
            self.figures.errors.append(f"workers exited on their own: {[p.returncode for p in self.workers.procs]}")
        injection.kill_random_worker(self.workers, self.random, live)

    def broker_close_connections(self) -> None:
        injection.broker_close_connections(self.vhost)

    def db_terminate_backends(self) -> None:
        self.figures.backends_terminated += injection.db_terminate_backends(self.database)

    def api_relay_sigkill(self) -> None:
        # One replica at a time: the other must be serving, so submissions go on.
        victim, other = self.random.sample(self.apis, 2)
        if not other.live():
            victim, other = other, victim
        other.wait_ready()
        victim.kill()
        victim.start()

    def duplicate(self) -> None:
        with self.engine.connect() as conn:
            ids = list(conn.execute(sa.text("SELECT id FROM tasks ORDER BY random() LIMIT 3")).scalars())

        async def publish_twice() -> None:
            broker = RabbitBroker(self.settings.broker_url or "")
            try:
                for task_id in ids:
                    for _ in range(2):
                        await broker.publish(PREDICT_QUEUE, {"task_id": task_id}, message_id=task_id)
            finally:
                await broker.close()

        asyncio.run(publish_twice())

    def messages_lost(self) -> None:
        # The broker loses every waiting task message: only the relay's sweep for stale open tasks brings them back.
        command = ["rabbitmqctl", "-q", "purge_queue", "-p", self.vhost, PREDICT_QUEUE]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def inject(self, kind: str) -> None:
        getattr(self, kind)()
        self.figures.faults[kind] += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Injects faults in shuffled rounds of every kind until told to stop, and at least MIN_ROUNDS rounds."""
        schedule: list[str] = []
        while not stop.is_set() or min(self.figures.faults[kind] for kind in FAULT_KINDS) < MIN_ROUNDS:
            await asyncio.sleep(self.random.uniform(*FAULT_EVERY_SECONDS))
            if not schedule:
                schedule = list(FAULT_KINDS)
                self.random.shuffle(schedule)
            kind = schedule.pop()
            try:
                await asyncio.to_thread(self.inject, kind)
            except Exception as exc:  # an injection that could not be made is reported, not fatal
                self.figures.faults[f"{kind} (could not inject: {type(exc).__name__})"] += 1
                self.figures.errors.append(traceback.format_exc())


async def submit_all(base_urls: list[str], tokens: list[str], figures: Figures) -> None:
    limits = httpx.Limits(max_connections=USERS, max_keepalive_connections=USERS)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one_user(n: int, token: str) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            for _ in range(TASKS_PER_USER):
                for attempt in range(60):
                    request_id = uuid.uuid4().hex
                    # Like a load balancer: users spread over the replicas; a failed try moves to the next one.
                    base_url = base_urls[(n + attempt) % len(base_urls)]
                    try:
                        r = await client.post(
                            base_url + PREDICT,
                            json={"model": "diabetes-linear", "rows": [ROW]},
                            headers={**headers, "X-Request-ID": request_id},
                        )
                    except httpx.HTTPError as exc:
                        figures.responses[type(exc).__name__] += 1
                        await asyncio.sleep(min(0.05 * 2**attempt, 1))
                        continue
                    figures.responses[str(r.status_code)] += 1
                    if r.status_code == 202:
                        figures.accepted.add(r.json()["id"])
                        break
                    assert r.status_code >= 500, r.text  # a fault may cost a request, never a wrong answer
                    await asyncio.sleep(min(0.05 * 2**attempt, 1))

        await asyncio.gather(*(one_user(n, t) for n, t in enumerate(tokens)))


def sign_up(api: ApiProcess, engine: Engine) -> list[str]:
    """50 users, each topped up over HTTP and credited by an admin."""
    with Session(engine) as s:
        users.create_user(s, email="faults-admin@example.com", password="admin-password-1", role=Role.admin)
    with httpx.Client(base_url=api.url, timeout=30) as client:
        admin = client.post(
            "/api/v1/auth/token", data={"username": "faults-admin@example.com", "password": "admin-password-1"}
        )
        admin_headers = {"Authorization": f"Bearer {admin.json()['access_token']}"}
        tokens = []
        for n in range(USERS):
            email = f"faults-{n}@example.com"
            user = client.post("/api/v1/auth/register", json={"email": email, "password": "password-1"}).json()
            token = client.post("/api/v1/auth/token", data={"username": email, "password": "password-1"}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            r = client.post(
                "/api/v1/wallet/top-ups", json={"amount": TOP_UP}, headers={**headers, "Idempotency-Key": email}
            )
            assert r.status_code == 201, r.text
            r = client.post(
                f"/api/v1/admin/users/{user['id']}/credits", json={"amount": ADMIN_CREDIT}, headers=admin_headers
            )
            assert r.status_code == 201, r.text
            tokens.append(token["access_token"])
    return tokens


def unfinished(engine: Engine) -> int:
    for _ in range(5):  # the monitor's own connections are terminated too
        try:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        sa.text("SELECT count(*) FROM tasks WHERE status IN ('queued', 'running')")
                    ).scalar_one()
                )
        except sa.exc.OperationalError:
            time.sleep(0.2)
    raise AssertionError("the database stayed unreachable")


def test_no_credit_is_lost_or_counted_twice_under_faults(
    settings: Settings, apis: list[ApiProcess], workers: Workers, publish_model: Any
) -> None:
    started = time.monotonic()
    publish_model("diabetes-linear", price=PRICE)
    for _ in range(WORKERS):
        workers.start()
    engine = make_engine(settings)
    try:
        tokens = sign_up(apis[0], engine)
        signed_up = time.monotonic()
        figures = Figures()
        injector = FaultInjector(settings, apis, workers, engine, figures)

        async def load_under_faults() -> None:
            stop = asyncio.Event()
            faults = asyncio.create_task(injector.run(stop))
            await submit_all([api.url for api in apis], tokens, figures)
            stop.set()
            await faults

        asyncio.run(load_under_faults())
        submitted_at = time.monotonic()
        for api in apis:  # a replica restarted last must be up to relay what it left in the outbox
            api.wait_ready()

        deadline = time.monotonic() + FINISH_DEADLINE_SECONDS
        while (left := unfinished(engine)) and time.monotonic() < deadline:
            time.sleep(0.5)
        finished_at = time.monotonic()
        report(engine, figures, [started, signed_up, submitted_at, finished_at])
        assert left == 0, f"{left} tasks did not finish within {FINISH_DEADLINE_SECONDS}s"
    finally:
        engine.dispose()


def report(engine: Engine, figures: Figures, times: list[float]) -> None:
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT status, count(*) FROM tasks GROUP BY status")).all())
        per_task = conn.execute(
            sa.text(
                "SELECT t.id, t.status, t.cost, "
                "count(*) FILTER (WHERE e.kind = 'charge'), count(*) FILTER (WHERE e.kind = 'refund'), "
                "count(*) FILTER (WHERE e.kind = 'payout'), count(*) FILTER (WHERE e.kind = 'fee'), "
                "coalesce(sum(e.amount) FILTER (WHERE e.kind IN ('payout', 'fee', 'refund')), 0) "
                "FROM tasks t LEFT JOIN ledger_entries e ON e.task_id = t.id GROUP BY t.id, t.status, t.cost"
            )
        ).all()
        minted = conn.execute(
            sa.text("SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE kind IN ('top_up', 'admin_credit')")
        ).scalar_one()
        balances = conn.execute(sa.text("SELECT coalesce(sum(balance), 0) FROM accounts")).scalar_one()
        moved = dict(conn.execute(sa.text("SELECT kind, sum(abs(amount)) FROM ledger_entries GROUP BY kind")).all())
    mismatches = []
    for task_id, status, cost, charges, refunds, payouts, fees, returned in per_task:
        ok = charges == 1 and returned == cost and payouts <= 1 and fees <= 1
        ok = ok and (
            (status == "succeeded" and refunds == 0) or (status == "failed" and refunds == 1 and not payouts + fees)
        )
        if not ok:
            mismatches.append(f"{task_id} {status}: charges {charges} refunds {refunds} payouts {payouts} fees {fees}")
    with Session(engine) as s:
        verified = ledger.verify(s)
    lost = figures.accepted - {row[0] for row in per_task}
    print(
        "\nfault injection figures:"
        f"\n  tasks: {len(per_task)} in the database, {len(figures.accepted)} accepted over HTTP, by status {statuses}"
        f"\n  HTTP answers and errors while submitting: {dict(figures.responses)}"
        f"\n  faults injected: {dict(figures.faults)}; database backends terminated: {figures.backends_terminated}"
        f"\n  credits moved by kind: {moved}"
        f"\n  credits minted {minted}, sum of all balances {balances}"
        f"\n  ledger verify ok: {verified.ok} ({verified.entries_checked} entries)"
        f"\n  mismatches: {len(mismatches)}; accepted tasks missing: {len(lost)}"
        f"\n  injection errors: {figures.errors[:2]}"
        f"\n  seconds: setting up {times[1] - times[0]:.1f}, submitting under faults {times[2] - times[1]:.1f}, "
        f"draining {times[3] - times[2]:.1f}"
    )
    assert not lost, f"tasks accepted over HTTP but missing: {sorted(lost)[:5]}"
    assert len(per_task) >= USERS * TASKS_PER_USER
    assert all(n > 0 for kind, n in figures.faults.items() if kind in FAULT_KINDS)
    assert set(FAULT_KINDS) <= set(figures.faults), figures.faults
    assert not mismatches, mismatches[:10]
    assert verified.ok, verified
    assert int(minted) == int(balances)
