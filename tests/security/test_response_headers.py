"""Safety headers on every answer, /metrics behind a token, and the API docs switch for production."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Environment
from app.main import create_app
from tests.conftest import make_settings

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)


def test_every_answer_carries_the_safety_headers(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    headers = make_user()
    for r in (
        client.get("/api/health/live"),
        client.get("/api/v1/wallet", headers=headers),
        client.get("/api/v1/no-such-thing"),
        client.post("/api/v1/auth/register", json={"email": "x"}),
        client.get("/api/v1/predictions/a%00b", headers=headers),
    ):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "strict-transport-security" not in r.headers  # plain http, and not configured
    assert client.get("/api/v1/wallet", headers=headers).headers["cache-control"] == "no-store"
    assert "no-store" not in client.get("/api/health/live").headers.get("cache-control", "")
    https = TestClient(client.app, base_url="https://testserver")
    assert "max-age=" in https.get("/api/health/live").headers["strict-transport-security"]


def test_metrics_need_the_token_when_one_is_set(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, metrics_token="scrape-token-0123456789")
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"})
        assert r.status_code == 200 and "mlmarket_tasks" in r.text


def test_a_scrape_never_runs_the_full_ledger_check(client: TestClient) -> None:
    for _ in range(3):
        assert client.get("/metrics").status_code == 200
    assert client.app.state.ledger_verified_at == 0.0  # type: ignore[attr-defined]


def test_the_docs_can_be_turned_off_and_are_off_in_production(database_url: str, tmp_path: Path) -> None:
    off = make_settings(database_url, tmp_path, docs_enabled=False)
    production = make_settings(database_url, tmp_path).model_copy(update={"env": Environment.production})
    for settings in (off, production):
        with TestClient(create_app(settings)) as client:
            for path in ("/docs", "/redoc", "/openapi.json"):
                assert client.get(path).status_code == 404, path
            assert client.get("/api/health/live").status_code == 200
    assert make_settings(database_url, tmp_path).docs_on
