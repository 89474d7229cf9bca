from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

WALLET = "/api/v1/wallet"
TOP_UPS = "/api/v1/wallet/top-ups"
LEDGER = "/api/v1/wallet/ledger"


def top_up(client: TestClient, headers: dict[str, str], amount: object, key: str | None = None):  # type: ignore[no-untyped-def]
    h = dict(headers)
    h["Idempotency-Key"] = key or str(uuid.uuid4())
    return client.post(TOP_UPS, json={"amount": amount}, headers=h)


def test_new_wallet_is_empty(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    headers = make_user()
    assert client.get(WALLET, headers=headers).json() == {"balance": 0}
    assert client.get(LEDGER, headers=headers).json() == []


def test_top_ups_add_up_and_show_in_the_ledger_newest_first(
    client: TestClient, make_user: Callable[..., dict[str, str]]
) -> None:
    headers = make_user()
    first = top_up(client, headers, 100)
    assert first.status_code == 201
    assert first.json()["balance"] == 100
    assert first.json()["entry"]["kind"] == "top_up"
    assert first.json()["entry"]["amount"] == 100
    second = top_up(client, headers, 25)
    assert second.json()["balance"] == 125
    assert second.json()["entry"]["balance_after"] == 125
    assert client.get(WALLET, headers=headers).json() == {"balance": 125}

    entries = client.get(LEDGER, headers=headers).json()
    assert [e["amount"] for e in entries] == [25, 100]
    assert [e["balance_after"] for e in entries] == [125, 100]
    page = client.get(LEDGER, headers=headers, params={"limit": 1, "offset": 1}).json()
    assert [e["amount"] for e in page] == [100]


def test_replayed_top_up_returns_the_first_result_and_credits_once(
    client: TestClient, make_user: Callable[..., dict[str, str]]
) -> None:
    headers = make_user()
    key = str(uuid.uuid4())
    first = top_up(client, headers, 40, key)
    again = top_up(client, headers, 40, key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert client.get(WALLET, headers=headers).json() == {"balance": 40}
    assert len(client.get(LEDGER, headers=headers).json()) == 1


def test_same_key_with_another_amount_is_422_and_moves_nothing(
    client: TestClient, make_user: Callable[..., dict[str, str]]
) -> None:
    headers = make_user()
    key = str(uuid.uuid4())
    top_up(client, headers, 40, key)
    r = top_up(client, headers, 41, key)
    assert r.status_code == 422
    assert "Idempotency-Key" in r.json()["detail"]
    assert client.get(WALLET, headers=headers).json() == {"balance": 40}


def test_idempotency_keys_belong_to_one_user(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    alice, bob = make_user(), make_user()
    key = str(uuid.uuid4())
    assert top_up(client, alice, 10, key).json()["balance"] == 10
    assert top_up(client, bob, 10, key).json()["balance"] == 10


@pytest.mark.parametrize(
    ("amount", "status"),
    [
        (0, 422),
        (-5, 422),
        (1.5, 422),
        ("abc", 422),
        ("10", 422),
        (10**12, 422),
        (1_000_001, 422),
        (None, 422),
        ([5], 422),
        (True, 422),
    ],
)
def test_bad_amounts_are_refused_and_move_nothing(
    client: TestClient, make_user: Callable[..., dict[str, str]], amount: object, status: int
) -> None:
    headers = make_user()
    r = top_up(client, headers, amount)
    assert r.status_code == status
    assert "amount" in r.json()["detail"]
    assert client.get(WALLET, headers=headers).json() == {"balance": 0}
    assert client.get(LEDGER, headers=headers).json() == []


def test_the_largest_allowed_top_up_is_accepted(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    headers = make_user()
    assert top_up(client, headers, 1_000_000).json()["balance"] == 1_000_000


def test_top_up_without_idempotency_key_is_400(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    headers = make_user()
    r = client.post(TOP_UPS, json={"amount": 10}, headers=headers)
    assert r.status_code == 400
    assert "Idempotency-Key" in r.json()["detail"]
    r = client.post(TOP_UPS, json={"amount": 10}, headers={**headers, "Idempotency-Key": "x" * 201})
    assert r.status_code == 400
    assert client.get(WALLET, headers=headers).json() == {"balance": 0}


def test_malformed_top_up_bodies_are_422(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    headers = {**make_user(), "Idempotency-Key": "k1", "Content-Type": "application/json"}
    for raw in (b"{", b"[]", b"null", b'{"amount": }', b"\xff\xfe", b'"amount"'):
        r = client.post(TOP_UPS, content=raw, headers=headers)
        assert r.status_code == 422, (raw, r.text)
        assert isinstance(r.json()["detail"], str)
    assert client.get(WALLET, headers=headers).json() == {"balance": 0}


def test_wallet_needs_a_token(client: TestClient) -> None:
    assert client.get(WALLET).status_code == 401
    assert client.post(TOP_UPS, json={"amount": 5}, headers={"Idempotency-Key": "k"}).status_code == 401


def test_ledger_paging_is_validated(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    headers = make_user()
    for params in ({"limit": 0}, {"limit": 100000}, {"offset": -1}, {"limit": "x"}):
        r = client.get(LEDGER, headers=headers, params=params)
        assert r.status_code == 422, params
