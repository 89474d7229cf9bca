"""The data plane's memory: who a token belongs to, and which model a name means, kept only as long as true."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import Engine

from app.core.config import Settings
from app.main import create_app
from app.models.user import User
from tests.conftest import make_settings
from tests.http_clients import paying_user
from tests.real_services import free_port

ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]
BODY = {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": ROW}]}


def _serve(settings: Settings) -> tuple[str, Callable[[], None]]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """Two API replicas on one database and store, each with its own caches (the catalog view kept for an hour)."""
    urls, stops = [], []
    for _ in range(2):
        settings = make_settings(database_url, tmp_path / "data", catalog_cache_seconds=3600.0, auth_cache_seconds=0.5)
        url, stop = _serve(settings)
        urls.append(url)
        stops.append(stop)
    yield urls
    for stop in stops:
        stop()


def _until(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_unpublishing_reaches_every_replica_at_once(
    replicas: list[str], publish_model: Callable[..., Any], engine: Engine
) -> None:
    first, second = replicas
    model = publish_model("diabetes-linear", price=1)
    buyer = paying_user(first, 100)
    for base in replicas:  # both replicas now hold the model in their catalog view
        r = httpx.post(f"{base}/v2/models/diabetes-linear/infer", json=BODY, headers=buyer, timeout=30)
        assert r.status_code == 200, r.text
    author = {"username": "author@example.com", "password": "author-password"}
    token = httpx.post(f"{first}/api/v1/auth/token", data=author, timeout=30).json()["access_token"]
    r = httpx.post(
        f"{first}/api/v1/models/diabetes-linear/unpublish", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert model.name == "diabetes-linear"

    def refused(base: str) -> bool:
        r = httpx.post(f"{base}/v2/models/diabetes-linear/infer", json=BODY, headers=buyer, timeout=30)
        return r.status_code == 404

    assert refused(first)  # the replica that unpublished drops its view on commit
    assert _until(lambda: refused(second), 3.0)  # the other hears it (LISTEN/NOTIFY on PostgreSQL)
    assert int(httpx.get(f"{second}/api/v1/wallet", headers=buyer, timeout=30).json()["balance"]) == 98


def test_another_process_hiding_a_model_is_heard_through_notify(
    replicas: list[str], publish_model: Callable[..., Any], db_backend: str, database_url: str
) -> None:
    if db_backend != "postgresql":
        pytest.skip("SQLite has one API process; LISTEN/NOTIFY is PostgreSQL's")
    publish_model("diabetes-linear", price=1)
    buyer = paying_user(replicas[0], 100)

    def status(base: str) -> int:
        r = httpx.post(f"{base}/v2/models/diabetes-linear/infer", json=BODY, headers=buyer, timeout=30)
        return r.status_code

    assert [status(base) for base in replicas] == [200, 200]
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:  # another process, which this one shares no memory with
        conn.execute("UPDATE model_versions SET status = 'unlisted' WHERE name = 'diabetes-linear'")
        time.sleep(0.3)
        assert [status(base) for base in replicas] == [200, 200]  # the views are kept until told
        conn.execute("SELECT pg_notify('mlmarket_catalog', '')")
    assert _until(lambda: [status(base) for base in replicas] == [404, 404], 3.0)


def test_a_deactivated_user_is_refused_within_the_token_cache_time(
    replicas: list[str], publish_model: Callable[..., Any], engine: Engine
) -> None:
    base = replicas[0]
    publish_model("diabetes-linear", price=1)
    buyer = paying_user(base, 100)
    assert httpx.post(f"{base}/v2/models/diabetes-linear/infer", json=BODY, headers=buyer, timeout=30).is_success
    me = httpx.get(f"{base}/api/v1/users/me", headers=buyer, timeout=30).json()
    with engine.begin() as conn:
        conn.execute(sa.update(User.__table__).where(User.__table__.c.id == me["id"]).values(is_active=False))  # type: ignore[attr-defined]
    time.sleep(0.6)  # auth_cache_seconds=0.5
    r = httpx.post(f"{base}/v2/models/diabetes-linear/infer", json=BODY, headers=buyer, timeout=30)
    assert r.status_code == 401 and set(r.json()) == {"error"}
