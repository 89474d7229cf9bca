"""One user's tasks, ledger, datasets and models are never readable or writable by another user, on any endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.api.routes.test_predictions import PREDICT, rows, top_up, wait_finished

CSV = b"a,b,target\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n"


def test_another_users_ids_are_404_everywhere_and_change_nothing(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", owner_email="alice@example.com")
    token = client.post("/api/v1/auth/token", data={"username": "alice@example.com", "password": "author-password"})
    alice = {"Authorization": f"Bearer {token.json()['access_token']}"}  # the author of the model
    mallory = make_user()
    top_up(client, alice, 50)
    task_id = client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(2)}, headers=alice).json()["id"]
    wait_finished(client, alice, task_id)
    r = client.post(
        "/api/v1/datasets", files={"file": ("a.csv", CSV, "text/csv")}, data={"target": "target"}, headers=alice
    )
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    alice_ledger = client.get("/api/v1/wallet/ledger", headers=alice).json()

    reads = [
        f"{PREDICT}/{task_id}",
        f"{PREDICT}/{task_id}/results.csv",
        f"{PREDICT}/{task_id}/events",
        f"/api/v1/datasets/{dataset_id}",
        f"/api/v1/datasets/{dataset_id}/info",
        f"/api/v1/datasets/{dataset_id}/rows",
    ]
    for path in reads:
        r = client.get(path, headers=mallory)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert task_id not in r.text or path.startswith(PREDICT)  # the 404 names only what was asked for
    writes = [
        ("POST", f"/api/v1/datasets/{dataset_id}/rows", {"json": {"rows": [{"a": 1, "b": 2, "target": 0}]}}),
        ("POST", f"/api/v1/datasets/{dataset_id}/reset", {}),
        ("POST", f"/api/v1/datasets/{dataset_id}/restore", {}),
        ("DELETE", f"/api/v1/datasets/{dataset_id}", {}),
        ("POST", "/api/v1/models/diabetes-linear/unpublish", {}),
    ]
    for method, path, extra in writes:
        r = client.request(method, path, headers=mallory, **extra)
        assert r.status_code in (403, 404), (method, path, r.status_code, r.text)

    # Nothing of Alice's shows up in Mallory's lists, and everything of hers is unchanged.
    assert client.get(PREDICT, headers=mallory).json() == []
    assert client.get("/api/v1/datasets", headers=mallory).json() == []
    assert client.get("/api/v1/wallet/ledger", headers=mallory).json() == []
    assert client.get("/api/v1/wallet/ledger", headers=alice).json() == alice_ledger
    assert client.get(f"/api/v1/datasets/{dataset_id}/info", headers=alice).status_code == 200
    assert client.get(f"{PREDICT}/{task_id}", headers=alice).json()["status"] == "succeeded"
    assert [m["name"] for m in client.get("/api/v1/models").json()] == ["diabetes-linear"]


def test_admin_endpoints_are_403_for_users(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    user = make_user()
    for method, path in [
        ("GET", "/api/v1/admin/users"),
        ("POST", "/api/v1/admin/users/1/credits"),
        ("GET", "/api/v1/admin/ledger/verify"),
    ]:
        r = client.request(method, path, headers=user, json={"amount": 100})
        assert r.status_code == 403, (path, r.text)
