"""Publishing: two authors racing for one new name end with one owner and a 409 for the other, never a 500."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_diabetes

from tests.http_clients import paying_user

NAMES = [f"race-{i}" for i in range(8)]


def _trained_job(base: str, headers: dict[str, str]) -> str:
    csv = load_diabetes(as_frame=True).frame.to_csv(index=False).encode()
    r = httpx.post(f"{base}/api/v1/datasets", files={"file": ("d.csv", csv, "text/csv")}, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    job = httpx.post(
        f"{base}/api/v1/training-jobs", json={"dataset_id": r.json()["id"], "algorithm": "Ridge"}, headers=headers
    )
    assert job.status_code == 202, job.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body: dict[str, Any] = httpx.get(f"{base}/api/v1/training-jobs/{job.json()['id']}", headers=headers).json()
        if body["status"] in ("succeeded", "failed"):
            assert body["status"] == "succeeded", body
            return str(body["id"])
        time.sleep(0.1)
    raise AssertionError("the training job did not finish")


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)  # SQLite runs one writer at a time anyway
def test_two_authors_racing_for_new_names_end_with_one_owner_each(live_server: str) -> None:
    authors = [paying_user(live_server, 100), paying_user(live_server, 100)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = list(pool.map(lambda h: _trained_job(live_server, h), authors))
    me = [httpx.get(f"{live_server}/api/v1/users/me", headers=h).json()["id"] for h in authors]

    def publish(who: int, name: str, start: threading.Barrier) -> int:
        body = {"training_job_id": jobs[who], "name": name, "price_per_row": 1, "description": f"by {who}"}
        start.wait()
        r = httpx.post(f"{live_server}/api/v1/models", json=body, headers=authors[who], timeout=60)
        assert r.status_code in (201, 409), r.text
        return r.status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        for name in NAMES:
            start = threading.Barrier(4)
            # each author publishes twice at once: the second publish of the owner is version 2, the other's is 409
            futures = [pool.submit(publish, who, name, start) for who in (0, 1, 0, 1)]
            statuses = sorted(f.result() for f in futures)
            assert statuses == [201, 201, 409, 409], (name, statuses)
            model = httpx.get(f"{live_server}/api/v1/models/{name}").json()
            owners = {v["author_id"] for v in model["versions"]}
            assert len(owners) == 1 and owners <= set(me), (name, model["versions"])
            assert [v["version"] for v in model["versions"]] == [2, 1]
            owner = authors[me.index(owners.pop())]
            # the owner can still publish and take the model off the catalog
            again = {"training_job_id": jobs[authors.index(owner)], "name": name, "price_per_row": 2}
            assert httpx.post(f"{live_server}/api/v1/models", json=again, headers=owner).status_code == 201
            assert httpx.post(f"{live_server}/api/v1/models/{name}/unpublish", headers=owner).status_code == 200


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_the_catalog_shows_authors_by_name_never_by_email(live_server: str) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    named = {"email": email, "password": "password-1", "full_name": "Ada Lovelace"}
    assert httpx.post(f"{live_server}/api/v1/auth/register", json=named).status_code == 201
    token = httpx.post(f"{live_server}/api/v1/auth/token", data={"username": email, "password": "password-1"})
    ada = {"Authorization": f"Bearer {token.json()['access_token']}"}
    httpx.post(f"{live_server}/api/v1/wallet/top-ups", json={"amount": 50}, headers={**ada, "Idempotency-Key": email})
    anonymous = paying_user(live_server, 50)
    for headers, name in ((ada, "by-ada"), (anonymous, "by-someone")):
        job = _trained_job(live_server, headers)
        body = {"training_job_id": job, "name": name, "price_per_row": 1}
        r = httpx.post(f"{live_server}/api/v1/models", json=body, headers=headers)
        assert r.status_code == 201, r.text
    someone_id = httpx.get(f"{live_server}/api/v1/users/me", headers=anonymous).json()["id"]
    listing = httpx.get(f"{live_server}/api/v1/models")
    assert "@" not in listing.text
    by_name = {m["name"]: m for m in listing.json()}
    assert by_name["by-ada"]["author_name"] == "Ada Lovelace"
    assert by_name["by-someone"]["author_name"] == f"author {someone_id}"
    assert by_name["by-someone"]["author_id"] == someone_id
    detail = httpx.get(f"{live_server}/api/v1/models/by-ada")
    assert "@" not in detail.text and detail.json()["versions"][0]["author_name"] == "Ada Lovelace"
