"""API keys: shown once, stored as a hash, scoped, revoked at once, and held to a monthly spend limit."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.models.api_key import ApiKey, ApiKeyCreate
from app.services import api_keys, catalog, ledger, predictions, submissions, task_runs, users
from tests.api.routes.test_predictions import PREDICT, balance, rows, top_up, wait_finished
from tests.concurrency import Tally, assert_ledger_verifies, hammer
from tests.http_clients import paying_user

KEYS = "/api/v1/api-keys"
ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]
INFER_BODY = {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": ROW}]}
INFER = "/v2/models/diabetes-linear/infer"
POSTGRES_ONLY = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_key(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = client.post(KEYS, json={"name": "my service", **body}, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_key_is_shown_once_stored_as_a_hash_listed_without_it_and_revoked_at_once(
    client: TestClient, engine: Engine, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=2)
    headers = make_user()
    top_up(client, headers, 100)
    created = new_key(client, headers, monthly_spend_limit=1000)
    secret = created["key"]
    assert secret.startswith("mlm_") and len(secret) >= 4 + 43  # 32 random bytes, URL-safe base64
    assert created["prefix"] == secret[:12] and created["scopes"] == ["predict", "read", "train", "publish"]
    with Session(engine) as s:
        stored = s.get(ApiKey, created["id"])
        assert stored is not None and stored.key_hash == hashlib.sha256(secret.encode()).hexdigest()

    listed = client.get(KEYS, headers=headers)
    assert listed.status_code == 200
    assert secret not in listed.text and secret[12:] not in listed.text and stored.key_hash not in listed.text
    (item,) = listed.json()
    assert item["prefix"] == secret[:12] and item["name"] == "my service" and "key" not in item
    assert item["monthly_spend_limit"] == 1000 and item["spent_this_month"] == 0

    # the key works wherever a token does: REST reads, queued predictions and /v2 (where it is now remembered)
    assert client.get("/api/v1/wallet", headers=bearer(secret)).json()["balance"] == 100
    r = client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(2)}, headers=bearer(secret))
    assert r.status_code == 202, r.text
    assert wait_finished(client, bearer(secret), r.json()["id"])["status"] == "succeeded"
    assert client.post(INFER, json=INFER_BODY, headers=bearer(secret)).status_code == 200
    (item,) = client.get(KEYS, headers=headers).json()
    assert item["spent_this_month"] == 6 and item["last_used_at"] is not None
    assert balance(client, headers) == 94

    # another user can neither see nor revoke it
    other = make_user()
    assert client.get(KEYS, headers=other).json() == []
    assert client.delete(f"{KEYS}/{created['id']}", headers=other).status_code == 404

    assert client.delete(f"{KEYS}/{created['id']}", headers=headers).status_code == 204
    for r in (
        client.get("/api/v1/wallet", headers=bearer(secret)),
        client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(1)}, headers=bearer(secret)),
        client.post(INFER, json=INFER_BODY, headers=bearer(secret)),
    ):
        assert r.status_code == 401, r.text
    assert balance(client, headers) == 94  # the refused calls charged nothing
    assert client.get(KEYS, headers=headers).json() == []
    assert client.delete(f"{KEYS}/{created['id']}", headers=headers).status_code == 404
    for bad in ("mlm_" + "x" * 43, "mlm_", "mlm_" + "y" * 500):
        assert client.get("/api/v1/wallet", headers=bearer(bad)).status_code == 401


def test_scopes_limit_what_a_key_may_do_and_name_what_is_missing(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=2)
    headers = make_user()
    top_up(client, headers, 100)
    reader = new_key(client, headers, scopes=["read"])["key"]
    assert client.get("/api/v1/wallet", headers=bearer(reader)).status_code == 200
    assert client.get(PREDICT, headers=bearer(reader)).status_code == 200
    for r in (
        client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(1)}, headers=bearer(reader)),
        client.post(INFER, json=INFER_BODY, headers=bearer(reader)),
    ):
        assert r.status_code == 403, r.text
        assert "'predict' scope" in r.text
    r = client.post("/api/v1/training-jobs", json={}, headers=bearer(reader))
    assert r.status_code == 403 and "'train' scope" in r.text

    predictor = new_key(client, headers, scopes=["predict"])["key"]
    assert client.post(INFER, json=INFER_BODY, headers=bearer(predictor)).status_code == 200
    r = client.get("/api/v1/wallet", headers=bearer(predictor))
    assert r.status_code == 403 and "'read' scope" in r.text
    assert balance(client, headers) == 98  # only the allowed call was charged

    r = client.post(KEYS, json={"name": "x", "scopes": ["predict", "sudo"]}, headers=headers)
    assert r.status_code == 422


def test_keys_cannot_manage_keys_wallets_or_administer(
    client: TestClient, make_user: Callable[..., dict[str, str]], admin_headers: dict[str, str]
) -> None:
    headers = make_user()
    created = new_key(client, headers)
    key = bearer(created["key"])
    for r in (
        client.post(KEYS, json={"name": "another"}, headers=key),
        client.get(KEYS, headers=key),
        client.delete(f"{KEYS}/{created['id']}", headers=key),
        client.post("/api/v1/wallet/top-ups", json={"amount": 10}, headers={**key, "Idempotency-Key": "k-1"}),
        client.get("/api/v1/webhooks/secret", headers=key),  # the secret that signs webhooks is the account's
        client.post("/api/v1/webhooks/secret/rotate", headers=key),
    ):
        assert r.status_code == 403, r.text
        assert "API keys cannot" in r.json()["detail"]
    assert balance(client, headers) == 0
    admins_key = bearer(new_key(client, admin_headers)["key"])
    r = client.get("/api/v1/admin/users", headers=admins_key)
    assert r.status_code == 403 and "API keys cannot" in r.text
    assert client.get("/api/v1/admin/users", headers=admin_headers).status_code == 200
    # the key was not revoked by its own failed attempt, and the login token still manages keys
    assert [k["id"] for k in client.get(KEYS, headers=headers).json()] == [created["id"]]
    r = client.post(KEYS, json={"name": "late", "expires_at": "2001-01-01T00:00:00Z"}, headers=headers)
    assert r.status_code == 422


@POSTGRES_ONLY
def test_concurrent_calls_stop_exactly_at_the_monthly_spend_limit(
    live_server: str, database_url: str, publish_model: Callable[..., Any], tmp_path: Path
) -> None:
    publish_model("diabetes-linear", price=2)
    headers = paying_user(live_server, 1000)
    limit = 51  # 25 calls of 2 credits fit, the 26th would pass it
    r = httpx.post(f"{live_server}{KEYS}", json={"name": "batch job", "monthly_spend_limit": limit}, headers=headers)
    assert r.status_code == 201, r.text
    key = bearer(r.json()["key"])
    outcomes: Tally[int] = Tally()

    def caller(k: int, http: httpx.Client) -> None:
        for _ in range(3):
            if k % 2:
                r = http.post(INFER, json=INFER_BODY, headers=key)
                ok = 200
            else:
                body = {"model": "diabetes-linear", "rows": [dict(rows(1)[0])]}
                r = http.post(PREDICT, json=body, headers=key)
                ok = 202
            assert r.status_code in (ok, 402), r.text
            if r.status_code == ok:
                outcomes.add(200)
            else:
                outcomes.add(402, r.text)

    hammer(live_server, 20, caller)

    assert outcomes.counts[200] == 25 and outcomes.counts[402] == 60 - 25
    assert all("monthly spend limit of 51 credits" in d for d in outcomes.details)
    assert int(httpx.get(f"{live_server}/api/v1/wallet", headers=headers).json()["balance"]) == 1000 - 50
    (item,) = httpx.get(f"{live_server}{KEYS}", headers=headers).json()
    assert item["spent_this_month"] == 50
    # the login token is not held to the key's limit
    assert httpx.post(f"{live_server}{INFER}", json=INFER_BODY, headers=headers).status_code == 200
    assert_ledger_verifies(database_url, tmp_path)


@POSTGRES_ONLY
def test_a_refunded_task_gives_its_cost_back_to_the_keys_monthly_spend(
    engine: Engine, publish_model: Callable[..., Any]
) -> None:
    model = publish_model("diabetes-linear", price=5)
    with Session(engine, expire_on_commit=False) as s:
        user = users.create_user(s, email="buyer@example.com", password="password-123")
        ledger.top_up(s, user_id=user.id or 0, amount=100, idempotency_key="t-1")
        created = api_keys.create(s, user_id=user.id or 0, body=ApiKeyCreate(name="k", monthly_spend_limit=10))
        features = catalog.features_of(model)
    prepared = predictions.prepare_rows(features, rows(2), max_rows=100)

    def submit() -> Any:
        sub = submissions.Submission(
            user_id=user.id or 0,
            model=submissions.priced(model),
            features=features,
            rows=prepared,
            api_key_id=created.id,
        )
        (result,) = submissions.submit_many(engine, [sub])
        return result

    first = submit()
    assert first.cost == 10
    refused = submit()
    assert isinstance(refused, api_keys.SpendLimitReached) and refused.status_code == 402
    with Session(engine) as s:
        assert task_runs.fail(s, task_id=first.task_id, reason="the model could not be loaded")
    with Session(engine) as s:
        key = s.get(ApiKey, created.id)
        assert key is not None and api_keys.spent_this_month(key) == 0
        assert ledger.balance_of(s, user.id or 0) == 100
        assert not task_runs.fail(s, task_id=first.task_id, reason="again")  # refunded once only
    again = submit()
    assert not isinstance(again, BaseException) and again.cost == 10
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT spent FROM api_keys")).scalar_one() == 10
