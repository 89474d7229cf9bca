"""Fixtures: every database test runs on SQLite and on a fresh PostgreSQL database.

PostgreSQL is found at MLMARKET_TEST_POSTGRES_URL (default: the machine's
server on 127.0.0.1:5432). With CI=true an unreachable server fails the run;
elsewhere its tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from app import migrations
from app.core.config import Environment, Settings
from app.core.db import make_engine
from app.main import create_app
from app.models.user import Role
from app.services import users

pytest_plugins = ["tests.s3_server"]

TEST_SECRET = "test-secret-key-for-mlmarket-tests-only-0123456789"
POSTGRES_ADMIN_URL = os.environ.get("MLMARKET_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Tables emptied between tests (every table of the models, so a new one is never forgotten). The platform
# account is re-seeded.
TABLES = tuple(table.name for table in reversed(SQLModel.metadata.sorted_tables))


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    name = f"mlmarket_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    base = sa.engine.make_url(POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    yield base.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def migrated_database(db_backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    """A database at the newest migration: a template file for SQLite, the session database for PostgreSQL."""
    if db_backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite-template') / 'template.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
    migrations.upgrade(make_settings(url, Path(tmp_path_factory.mktemp("migrate-data"))))
    return url


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        env=Environment.test,
        database_url=database_url,
        secret_key=TEST_SECRET,
        data_dir=data_dir,
        **{"grpc_port": 0, **overrides},
    )


@pytest.fixture
def database_url(db_backend: str, migrated_database: str, tmp_path: Path) -> str:
    """A migrated, empty database for one test."""
    if db_backend == "sqlite":
        template = Path(sa.engine.make_url(migrated_database).database or "")
        target = tmp_path / "mlmarket.db"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    engine = sa.create_engine(migrated_database)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        conn.execute(
            sa.text("INSERT INTO accounts (name, user_id, balance, created_at) VALUES ('platform', NULL, 0, now())")
        )
    engine.dispose()
    return migrated_database


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def make_user(client: TestClient) -> Callable[..., dict[str, str]]:
    """Registers a user over the API and returns headers carrying their token."""

    def make(email: str | None = None, password: str = "correct horse battery") -> dict[str, str]:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        r = client.post("/api/v1/auth/register", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        r = client.post("/api/v1/auth/token", data={"username": email, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    return make


@pytest.fixture
def admin_headers(client: TestClient, engine: Engine) -> dict[str, str]:
    email, password = "admin@example.com", "admin-password-123"
    with Session(engine) as s:
        users.create_user(s, email=email, password=password, role=Role.admin)
    r = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def rabbitmq_vhost(prefix: str) -> Iterator[str]:
    """A RabbitMQ virtual host of its own on the machine's broker, named ``prefix-<random>`` and open to guest;
    yields its AMQP URL and deletes the vhost afterwards. Skips (fails with CI=true) when RabbitMQ is unusable."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is not installed: RabbitMQ is needed")
    vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        unavailable(f"RabbitMQ is not usable through rabbitmqctl: {exc}")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ virtual host of its own for one test, on the machine's broker, deleted afterwards."""
    with rabbitmq_vhost("mlmarket-test") as url:
        yield url


@pytest.fixture(scope="session")
def trained_demo_models() -> dict[str, Any]:
    """The demo specs trained once per test session: name -> (spec, TrainResult)."""
    from app.services.demo import demo_models

    wanted = {"diabetes-linear", "iris-logistic"}
    return {spec.name: (spec, spec.train()) for spec in demo_models() if spec.name in wanted}


@pytest.fixture
def publish_model(engine: Engine, settings: Settings, trained_demo_models: dict[str, Any]) -> Callable[..., Any]:
    """Publishes a trained demo model to this test's catalog and store; returns the ModelVersion."""
    from app.models.catalog import ModelTask
    from app.services.demo import publish_trained
    from app.store import make_store

    store = make_store(settings)

    def publish(name: str = "diabetes-linear", owner_email: str = "author@example.com", price: int = 0) -> Any:
        spec, result = trained_demo_models[name]
        with Session(engine, expire_on_commit=False) as s:
            owner = users.get_user_by_email(s, owner_email) or users.create_user(
                s, email=owner_email, password="author-password"
            )
            return publish_trained(
                s,
                store,
                name=name,
                result=result,
                task=ModelTask(spec.task),
                algorithm=spec.algorithm,
                price_per_row=price or spec.price_per_row,
                owner_id=owner.id,
                description=spec.description,
            )

    return publish


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, for real HTTP clients. Yields its base URL."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
