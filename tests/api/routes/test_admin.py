from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/admin/users"),
        ("POST", "/api/v1/admin/users/1/credits"),
        ("GET", "/api/v1/admin/ledger/verify"),
    ],
)
def test_clients_get_403_on_admin_endpoints(
    client: TestClient, make_user: Callable[..., dict[str, str]], method: str, path: str
) -> None:
    headers = make_user()
    r = client.request(method, path, headers=headers, json={"amount": 5})
    assert r.status_code == 403
    assert "administrators" in r.json()["detail"]
    assert client.request(method, path, json={"amount": 5}).status_code == 401


def test_admin_lists_users_with_balances_and_credits_them(
    client: TestClient, make_user: Callable[..., dict[str, str]], admin_headers: dict[str, str]
) -> None:
    user = make_user("eve@example.com")
    listed = client.get("/api/v1/admin/users", headers=admin_headers).json()
    eve = next(u for u in listed if u["email"] == "eve@example.com")
    assert eve["balance"] == 0
    assert "hashed_password" not in eve

    r = client.post(
        f"/api/v1/admin/users/{eve['id']}/credits",
        headers={**admin_headers, "Idempotency-Key": "grant-1"},
        json={"amount": 70, "memo": "welcome"},
    )
    assert r.status_code == 201
    assert r.json()["entry"]["kind"] == "admin_credit"
    replay = client.post(
        f"/api/v1/admin/users/{eve['id']}/credits",
        headers={**admin_headers, "Idempotency-Key": "grant-1"},
        json={"amount": 70, "memo": "welcome"},
    )
    assert replay.json() == r.json()
    assert client.get("/api/v1/wallet", headers=user).json() == {"balance": 70}

    report = client.get("/api/v1/admin/ledger/verify", headers=admin_headers).json()
    assert report["ok"] is True
    assert report["total_minted"] == 70
    assert report["total_balance"] == 70


def test_crediting_an_unknown_user_is_404(client: TestClient, admin_headers: dict[str, str]) -> None:
    r = client.post("/api/v1/admin/users/424242/credits", headers=admin_headers, json={"amount": 5})
    assert r.status_code == 404
    assert "424242" in r.json()["detail"]
    for bad in ("abc", "0", "-1", "99999999999999999999"):
        assert (
            client.post(f"/api/v1/admin/users/{bad}/credits", headers=admin_headers, json={"amount": 5}).status_code
            == 422
        )


def test_admin_sees_queue_depths_and_the_outbox(
    client: TestClient, make_user: Callable[..., dict[str, str]], admin_headers: dict[str, str]
) -> None:
    assert client.get("/api/v1/admin/queues", headers=make_user()).status_code == 403
    body = client.get("/api/v1/admin/queues", headers=admin_headers).json()
    assert body["broker"] == "embedded"
    assert body["outbox_unsent"] == 0
    assert [q["queue"] for q in body["queues"]] == ["tasks.predict", "tasks.train"]
    assert all(q["ready"] == 0 and q["dead"] == 0 for q in body["queues"])
