"""Login throttling: per account and client address, shared by every replica through the database, and a client
address that a caller cannot choose with X-Forwarded-For unless the proxy is trusted."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.core.config import Settings
from app.main import create_app, uvicorn_proxy_options
from app.services.throttle import LoginThrottle

TOKEN = "/api/v1/auth/token"


def test_the_eleventh_failed_sign_in_within_a_minute_is_429(client: TestClient) -> None:
    client.post("/api/v1/auth/register", json={"email": "eve@example.com", "password": "right-password"})
    for _ in range(10):
        assert client.post(TOKEN, data={"username": "eve@example.com", "password": "wrong"}).status_code == 401
    r = client.post(TOKEN, data={"username": "EVE@example.com", "password": "right-password"})
    assert r.status_code == 429
    assert "too many failed sign-ins" in r.json()["detail"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # Another account from the same address is not affected.
    client.post("/api/v1/auth/register", json={"email": "frank@example.com", "password": "right-password"})
    assert client.post(TOKEN, data={"username": "frank@example.com", "password": "right-password"}).status_code == 200


def test_the_windows_slide_a_success_clears_its_pair_and_the_account_has_a_ceiling(engine: Engine) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    now = [start]
    throttle = LoginThrottle(engine, max_failures=10, window_seconds=60, max_account_failures=15, clock=lambda: now[0])
    account = f"{uuid.uuid4().hex[:8]}@example.com"
    for n in range(10):
        now[0] = start + timedelta(seconds=n)
        throttle.record_failure(account, "10.0.0.1")
    assert throttle.retry_after(account, "10.0.0.1") == 51
    assert throttle.retry_after(account, "10.0.0.2") is None  # someone else, elsewhere, may still sign in
    now[0] = start + timedelta(seconds=60.5)  # the first failure has left the window
    assert throttle.retry_after(account, "10.0.0.1") is None
    throttle.record_failure(account, "10.0.0.1")
    assert throttle.retry_after(account, "10.0.0.1") == 1
    throttle.reset(account, "10.0.0.1")
    assert throttle.retry_after(account, "10.0.0.1") is None
    # Tries spread over many addresses reach the account's looser ceiling.
    for n in range(15):
        throttle.record_failure(account, f"10.1.0.{n}")
    assert throttle.retry_after(account, "10.9.9.9") is not None


def test_replicas_share_one_count(settings: Settings) -> None:
    """Two API processes on one database: ten failures spread over both lock the pair on both."""
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        one.post("/api/v1/auth/register", json={"email": email, "password": "right-password"})
        for n in range(10):
            replica = one if n % 2 else two
            assert replica.post(TOKEN, data={"username": email, "password": "wrong"}).status_code == 401
        for replica in (one, two):
            assert replica.post(TOKEN, data={"username": email, "password": "right-password"}).status_code == 429


@pytest.fixture
def serve() -> Iterator[Any]:
    """Serves an app with uvicorn as `mlmarket serve` does (its proxy options from the settings)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings: Settings) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", **uvicorn_proxy_options(settings)
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted(settings: Settings, serve: Any) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    base = serve(settings)  # the default: no trusted proxy
    httpx.post(f"{base}/api/v1/auth/register", json={"email": email, "password": "right-password"})
    for n in range(10):
        forged = {"X-Forwarded-For": f"203.0.113.{n}"}
        r = httpx.post(f"{base}{TOKEN}", data={"username": email, "password": "wrong"}, headers=forged)
        assert r.status_code == 401
    forged = {"X-Forwarded-For": "198.51.100.7"}
    r = httpx.post(f"{base}{TOKEN}", data={"username": email, "password": "right-password"}, headers=forged)
    assert r.status_code == 429  # a new forged address per try changes nothing

    # Behind a trusted proxy (here: loopback), each client's own address counts: the locked-out one does not
    # lock the account for another client of the same proxy.
    trusted = serve(settings.model_copy(update={"forwarded_allow_ips": "127.0.0.1"}))
    other = f"{uuid.uuid4().hex[:8]}@example.com"
    httpx.post(f"{trusted}/api/v1/auth/register", json={"email": other, "password": "right-password"})
    attacker = {"X-Forwarded-For": "203.0.113.50"}
    for _ in range(10):
        r = httpx.post(f"{trusted}{TOKEN}", data={"username": other, "password": "wrong"}, headers=attacker)
        assert r.status_code == 401
    r = httpx.post(f"{trusted}{TOKEN}", data={"username": other, "password": "wrong"}, headers=attacker)
    assert r.status_code == 429
    owner = {"X-Forwarded-For": "198.51.100.20"}
    r = httpx.post(f"{trusted}{TOKEN}", data={"username": other, "password": "right-password"}, headers=owner)
    assert r.status_code == 200
