"""One live mlmarket for the client tests: the API under uvicorn on PostgreSQL, RabbitMQ and S3, with a
`python -m ml_worker` process running the predictions, and two demo models in its catalog.

The client is used as a buyer's program would: over HTTP, installed from clients/python, knowing nothing of
the server's code. The stack is started once for the package; each test signs up buyers of its own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from sqlmodel import Session

from app import migrations
from app.core.config import Settings
from app.main import create_app
from app.models.catalog import ModelTask
from app.services import users
from app.services.demo import publish_trained
from app.store import make_store
from tests.conftest import POSTGRES_ADMIN_URL, rabbitmq_vhost, unavailable
from tests.http_clients import paying_user
from tests.real_services import Workers, free_port, services_settings
from tests.s3_server import S3Server

# Credits per row: a price above 1 lets a price cap below it be tried.
PRICES = {"diabetes-linear": 1, "iris-logistic": 2}


@dataclass
class Stack:
    url: str
    settings: Settings
    trained: dict[str, Any]
    workers: Workers

    def buyer(self, credits: int = 1000) -> str:
        """A new signed-up buyer with ``credits``; their login token."""
        headers = paying_user(self.url, credits)
        return headers["Authorization"].removeprefix("Bearer ")

    def has_operation(self, method: str, path: str) -> bool:
        schema = httpx.get(f"{self.url}/openapi.json", timeout=30).json()
        return method.lower() in schema.get("paths", {}).get(path, {})

    def predictions_accept(self, field: str) -> bool:
        """Whether POST /api/v1/predictions documents ``field`` in its JSON body."""
        schema = httpx.get(f"{self.url}/openapi.json", timeout=30).json()
        body = schema["paths"]["/api/v1/predictions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return field in body.get("properties", {})


@pytest.fixture(scope="package")
def postgres_url() -> Iterator[str]:
    name = f"mlmarket_clients_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    base = sa.engine.make_url(POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    yield base.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="package")
def amqp_url() -> Iterator[str]:
    with rabbitmq_vhost("mlmarket-clients") as url:
        yield url


@pytest.fixture(scope="package")
def stack(
    postgres_url: str,
    amqp_url: str,
    s3_server: S3Server,
    trained_demo_models: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("client-stack")
    settings = services_settings(postgres_url, amqp_url, s3_server, root / "api-data")
    migrations.upgrade(settings)
    workers = Workers(settings, root)
    workers.start()  # it starts up while the models are published
    _publish(settings, trained_demo_models)
    port = free_port()
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield Stack(f"http://127.0.0.1:{port}", settings, trained_demo_models, workers)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        workers.stop_all()


def _publish(settings: Settings, trained: dict[str, Any]) -> None:
    from app.core.db import make_engine

    engine = make_engine(settings)
    store = make_store(settings)
    try:
        with Session(engine, expire_on_commit=False) as session:
            author = users.create_user(session, email="author@example.com", password="author-password")
            for name, price in PRICES.items():
                spec, result = trained[name]
                publish_trained(
                    session,
                    store,
                    name=name,
                    result=result,
                    task=ModelTask(spec.task),
                    algorithm=spec.algorithm,
                    price_per_row=price,
                    owner_id=author.id,
                    description=spec.description,
                )
    finally:
        engine.dispose()


@pytest.fixture
def url(stack: Stack) -> str:
    return stack.url


def expected_predictions(stack: Stack, name: str, frame: Any) -> list[Any]:
    """What the trained pipeline itself predicts for ``frame`` (its feature columns)."""
    _, result = stack.trained[name]
    features = [f.name for f in result.features]
    return list(result.pipeline.predict(frame[features]).tolist())


def demo_frame(stack: Stack, name: str, rows: int) -> Any:
    """``rows`` rows of the model's own data set, its target column included (the client must leave it out)."""
    spec, _ = stack.trained[name]
    return spec.load_frame().sample(n=rows, random_state=7).reset_index(drop=True)


@dataclass
class Credential:
    kind: str  # "api key" or "token"
    secret: str
    owner_token: str
    key_id: int | None = None


@pytest.fixture
def api_key_or_token(stack: Stack) -> Credential:
    """A credential of a new buyer with 1000 credits: an API key when the server has POST /api/v1/api-keys,
    else their login token."""
    token = stack.buyer(1000)
    if not stack.has_operation("post", "/api/v1/api-keys"):
        return Credential("token", token, token)
    r = httpx.post(
        f"{stack.url}/api/v1/api-keys",
        json={"name": "client tests"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return Credential("api key", str(r.json()["key"]), token, int(r.json()["id"]))
