from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings


def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/api/health/live").json() == {"status": "ok"}
    r = client.get("/api/health/ready")
    assert r.status_code == 200
    assert r.json()["checks"]["database"] == "ok"


def test_ready_is_503_when_the_database_is_down(tmp_path: Path) -> None:
    # Port 9 on loopback has nothing listening: the database is unreachable.
    settings = make_settings("postgresql://nobody@127.0.0.1:9/none", tmp_path)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/health/live").status_code == 200
        r = client.get("/api/health/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert r.json()["checks"]["database"].startswith("unavailable")


def test_metrics_count_requests_by_route_template_and_status(
    client: TestClient, make_user: Callable[..., dict[str, str]]
) -> None:
    headers = make_user()
    client.get("/api/v1/wallet", headers=headers)
    client.post("/api/v1/admin/users/12345/credits", headers=headers, json={"amount": 1})
    client.get("/no/such/path/8f3a")
    text = client.get("/metrics").text
    assert 'mlmarket_http_requests_total{method="GET",route="/api/v1/wallet",status="200"}' in text
    assert 'route="/api/v1/admin/users/{user_id}/credits",status="403"' in text
    # the raw id is in no label (a sample's value, e.g. a timestamp, may contain the same digits)
    labels = [line.partition("}")[0] for line in text.splitlines() if "{" in line]
    assert not any("12345" in label for label in labels)
    assert "8f3a" not in text
    assert 'mlmarket_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/v1/wallet"}' in text


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/auth/register",
        "/api/v1/auth/token",
        "/api/v1/users/me",
        "/api/v1/wallet",
        "/api/v1/wallet/top-ups",
        "/api/v1/wallet/ledger",
        "/api/v1/admin/users",
        "/api/v1/admin/users/{user_id}/credits",
        "/api/v1/admin/ledger/verify",
        "/api/health/live",
        "/api/health/ready",
    ):
        assert path in paths


def test_ready_stays_200_while_the_broker_is_briefly_down_then_503(tmp_path: Path, database_url: str) -> None:
    # Port 9 on loopback has nothing listening: the broker is unreachable, the database is fine.
    down = "amqp://guest:guest@127.0.0.1:9/"
    settings = make_settings(database_url, tmp_path, broker_url=down, readiness_grace_seconds=60)
    with TestClient(create_app(settings)) as client:
        r = client.get("/api/health/ready")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "degraded"
        assert r.json()["checks"]["broker"].startswith("unavailable")
        assert client.get("/api/health/live").status_code == 200
    settings = make_settings(database_url, tmp_path, broker_url=down, readiness_grace_seconds=0)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/health/ready").status_code == 503
        assert client.get("/api/health/live").status_code == 200
