"""Paid predictions through the API on the embedded default (in-process queue and worker, local DVC remote)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.main import create_app
from app.services import ledger
from tests.conftest import make_settings
from tests.samples import DIABETES_ROW

PREDICT = "/api/v1/predictions"


def top_up(client: TestClient, headers: dict[str, str], amount: int) -> None:
    r = client.post(
        "/api/v1/wallet/top-ups", json={"amount": amount}, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert r.status_code == 201, r.text


def balance(client: TestClient, headers: dict[str, str]) -> int:
    return int(client.get("/api/v1/wallet", headers=headers).json()["balance"])


def wait_finished(client: TestClient, headers: dict[str, str], task_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"{PREDICT}/{task_id}", headers=headers).json()
        if body["status"] in ("succeeded", "failed"):
            return dict(body)
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {body}")


def rows(n: int, **changes: Any) -> list[dict[str, Any]]:
    return [{**DIABETES_ROW, "age": 0.01 * i, **changes} for i in range(n)]


def test_a_paid_prediction_end_to_end(
    client: TestClient,
    make_user: Callable[..., dict[str, str]],
    publish_model: Callable[..., Any],
    trained_demo_models: dict[str, Any],
    admin_headers: dict[str, str],
) -> None:
    publish_model("diabetes-linear", price=5)
    headers = make_user()
    top_up(client, headers, 100)
    sent = rows(3)
    r = client.post(PREDICT, json={"model": "diabetes-linear", "rows": sent}, headers=headers)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["cost"] == 15
    assert accepted["rows_accepted"] == 3 and accepted["rows_rejected"] == 0 and accepted["errors"] == []
    assert accepted["status"] == "queued"
    assert balance(client, headers) == 85

    done = wait_finished(client, headers, accepted["id"])
    assert done["status"] == "succeeded"
    _, result = trained_demo_models["diabetes-linear"]
    expected = result.pipeline.predict(pd.DataFrame(sent)[[f.name for f in result.features]])
    assert done["results"] == pytest.approx(list(expected))

    author = client.get("/api/v1/admin/users", headers=admin_headers).json()
    balances = {u["email"]: u["balance"] for u in author}
    assert balances["author@example.com"] == 10  # 70 % of 15, rounded down
    report = client.get("/api/v1/admin/ledger/verify", headers=admin_headers).json()
    assert report["ok"] is True
    assert report["total_minted"] == 100 == report["total_balance"]
    kinds = [e["kind"] for e in client.get("/api/v1/wallet/ledger", headers=headers).json()]
    assert kinds == ["charge", "top_up"]


def test_short_balance_is_402_and_leaves_no_task(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=4)
    headers = make_user()
    top_up(client, headers, 10)
    r = client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(3)}, headers=headers)
    assert r.status_code == 402
    assert r.json()["detail"] == "insufficient balance: need 12, have 10"
    assert balance(client, headers) == 10
    assert client.get(PREDICT, headers=headers).json() == []


def test_invalid_rows_are_reported_and_not_charged(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=2)
    headers = make_user()
    top_up(client, headers, 50)
    sent: list[Any] = [DIABETES_ROW, {**DIABETES_ROW, "bmi": "heavy"}, DIABETES_ROW, {"age": 1}, "not a row"]
    r = client.post(PREDICT, json={"model": "diabetes-linear", "rows": sent}, headers=headers)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["rows_accepted"], body["rows_rejected"], body["cost"]) == (2, 3, 4)
    assert [e["row"] for e in body["errors"]] == [2, 4, 5]
    assert "bmi" in body["errors"][0]["reason"]
    assert balance(client, headers) == 46
    done = wait_finished(client, headers, body["id"])
    assert [r is None for r in done["results"]] == [False, True, False, True, True]


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "diabetes-linear", "rows": [{"age": "x"}]},
        {"model": "diabetes-linear", "rows": [[1, 2, 3]]},
        {"model": "diabetes-linear", "rows": []},
        {"model": "diabetes-linear"},
        {"rows": [DIABETES_ROW]},
        {"model": "diabetes-linear", "rows": [{**DIABETES_ROW, "age": float("nan")}]},
    ],
)
def test_requests_without_a_valid_row_are_422_and_free(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any], payload: Any
) -> None:
    publish_model("diabetes-linear")
    headers = make_user()
    top_up(client, headers, 50)
    r = client.post(
        PREDICT, content=json.dumps(payload, allow_nan=True), headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], str)
    assert balance(client, headers) == 50


def test_unknown_models_and_versions_are_404(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear")
    headers = make_user()
    top_up(client, headers, 50)
    r = client.post(PREDICT, json={"model": "no-such-model", "rows": [DIABETES_ROW]}, headers=headers)
    assert r.status_code == 404
    assert "no-such-model" in r.json()["detail"]
    r = client.post(PREDICT, json={"model": "diabetes-linear", "version": 7, "rows": [DIABETES_ROW]}, headers=headers)
    assert r.status_code == 404
    assert client.get("/api/v1/models/no-such-model").status_code == 404
    assert client.get("/api/v1/models/Bad%20Name!").status_code == 404
    assert balance(client, headers) == 50


def _csv(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_csv_uploads_are_predicted_and_bad_files_refused(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=1)
    headers = make_user()
    top_up(client, headers, 50)
    header = ",".join(DIABETES_ROW)
    good = ",".join(str(v) for v in DIABETES_ROW.values())
    bad = good.replace("0.06", "fat", 1)
    r = client.post(
        PREDICT,
        headers=headers,
        data={"model": "diabetes-linear"},
        files={"file": ("rows.csv", _csv([header, good, bad, good]), "text/csv")},
    )
    assert r.status_code == 202, r.text
    assert (r.json()["rows_accepted"], r.json()["rows_rejected"], r.json()["cost"]) == (2, 1, 2)
    assert r.json()["errors"][0]["row"] == 2
    done = wait_finished(client, headers, r.json()["id"])
    assert done["results"][1] is None and done["results"][0] == done["results"][2]

    refusals = [
        (b"", 400, "file is empty"),
        (b"\xff\xfe\x00garbage", 400, "utf-8"),
        (_csv(["age,sex", "1,2"]), 422, "bmi"),
        (_csv([header + ",extra", good + ",1"]), 422, "extra"),
    ]
    for content, status, words in refusals:
        r = client.post(
            PREDICT,
            headers=headers,
            data={"model": "diabetes-linear"},
            files={"file": ("rows.csv", content, "text/csv")},
        )
        assert r.status_code == status, (content, r.text)
        assert words in r.json()["detail"]
    r = client.post(PREDICT, headers=headers, files={"file": ("rows.csv", _csv([header, good]), "text/csv")})
    assert r.status_code == 422 and "model" in r.json()["detail"]
    assert balance(client, headers) == 48


def test_row_and_byte_limits_are_413(
    settings: Settings, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear")
    small = make_settings(settings.database_url or "", settings.data_dir, predict_max_rows=5, predict_max_bytes=4096)
    with TestClient(create_app(small)) as client:
        r = client.post("/api/v1/auth/register", json={"email": "lim@example.com", "password": "password-1"})
        token = client.post("/api/v1/auth/token", data={"username": "lim@example.com", "password": "password-1"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        top_up(client, headers, 100)
        r = client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(6)}, headers=headers)
        assert r.status_code == 413
        assert "at most 5 rows" in r.json()["detail"]
        big = ("age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n" + "0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1\n" * 200).encode()
        r = client.post(
            PREDICT, headers=headers, data={"model": "diabetes-linear"}, files={"file": ("a.csv", big, "text/csv")}
        )
        assert r.status_code == 413
        assert balance(client, headers) == 100


def test_another_users_prediction_is_404_everywhere(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear")
    alice, mallory = make_user(), make_user()
    top_up(client, alice, 20)
    task_id = client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(1)}, headers=alice).json()["id"]
    wait_finished(client, alice, task_id)
    for path in (f"{PREDICT}/{task_id}", f"{PREDICT}/{task_id}/results.csv", f"{PREDICT}/{task_id}/events"):
        r = client.get(path, headers=mallory)
        assert r.status_code == 404, path
        assert client.get(path).status_code == 401
    assert client.get(PREDICT, headers=mallory).json() == []
    assert client.get(f"{PREDICT}/{'x' * 500}", headers=alice).status_code == 404


def test_history_is_newest_first_with_filters(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear")
    headers = make_user()
    top_up(client, headers, 50)
    ids = []
    for n in (1, 2, 3):
        ids.append(
            client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(n)}, headers=headers).json()["id"]
        )
        wait_finished(client, headers, ids[-1])
    history = client.get(PREDICT, headers=headers).json()
    assert [t["id"] for t in history] == ids[::-1]
    assert [t["cost"] for t in history] == [3, 2, 1]
    assert all(t["model"] == "diabetes-linear" and t["results"] is None for t in history)
    assert [t["id"] for t in client.get(PREDICT, headers=headers, params={"limit": 1, "offset": 1}).json()] == [ids[1]]
    assert len(client.get(PREDICT, headers=headers, params={"status": "succeeded"}).json()) == 3
    assert client.get(PREDICT, headers=headers, params={"status": "failed"}).json() == []
    assert client.get(PREDICT, headers=headers, params={"status": "bogus"}).status_code == 422


def test_results_download_as_csv_and_events_stream(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("iris-logistic")
    headers = make_user()
    top_up(client, headers, 20)
    row = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
    task_id = client.post(PREDICT, json={"model": "iris-logistic", "rows": [row, row]}, headers=headers).json()["id"]
    with client.stream("GET", f"{PREDICT}/{task_id}/events", headers=headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        statuses = [json.loads(line[5:])["status"] for line in stream.iter_lines() if line.startswith("data:")]
    assert statuses[-1] == "succeeded"
    assert statuses[0] in ("queued", "running", "succeeded")
    r = client.get(f"{PREDICT}/{task_id}/results.csv", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0] == "row,sepal_length_cm,sepal_width_cm,petal_length_cm,petal_width_cm,prediction,status,error"
    assert lines[1] == "1,5.1,3.5,1.4,0.2,setosa,ok,"


def test_catalog_lists_published_models_with_price_schema_and_owner(
    client: TestClient, publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=2)
    publish_model("diabetes-linear", price=3)
    publish_model("iris-logistic")
    catalog = client.get("/api/v1/models").json()
    assert [m["name"] for m in catalog] == ["diabetes-linear", "iris-logistic"]
    linear = catalog[0]
    assert (linear["version"], linear["price_per_row"], linear["task"]) == (2, 3, "regression")
    assert linear["author_name"] == linear["owner"] == f"author {linear['author_id']}"
    assert [f["name"] for f in linear["input_schema"]][:3] == ["age", "sex", "bmi"]
    assert catalog[1]["classes"] == ["setosa", "versicolor", "virginica"]
    one = client.get("/api/v1/models/diabetes-linear").json()
    assert [v["version"] for v in one["versions"]] == [2, 1]


def test_a_pinned_version_is_used_and_billed_at_its_price(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=2)
    publish_model("diabetes-linear", price=3)
    headers = make_user()
    top_up(client, headers, 20)
    r = client.post(PREDICT, json={"model": "diabetes-linear", "version": 1, "rows": rows(2)}, headers=headers)
    assert (r.json()["version"], r.json()["cost"]) == (1, 4)


def test_failed_tasks_are_refunded_exactly_once(
    engine: Engine, client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    from app.services import task_runs

    publish_model("diabetes-linear")
    headers = make_user()
    top_up(client, headers, 10)
    task_id = client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(3)}, headers=headers).json()["id"]
    done = wait_finished(client, headers, task_id)
    assert done["status"] == "succeeded"
    with Session(engine) as s:
        assert task_runs.fail(s, task_id=task_id, reason="late failure") is False
        assert ledger.verify(s).ok
    assert balance(client, headers) == 7


def test_prefer_wait_returns_the_finished_task(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=1)
    headers = make_user()
    top_up(client, headers, 10)
    r = client.post(
        PREDICT, json={"model": "diabetes-linear", "rows": rows(2)}, headers={**headers, "Prefer": "wait=20"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["Preference-Applied"] == "wait=20"
    body = r.json()
    assert body["status"] == "succeeded"
    assert len(body["results"]) == 2 and body["cost"] == 2
    assert client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(1)}, headers=headers).status_code == 202
    assert balance(client, headers) == 7


def test_prefer_header_parsing() -> None:
    from app.api.routes.predictions import requested_wait

    assert requested_wait("wait=5") == 5
    assert requested_wait("respond-async, wait=100") == 60
    assert requested_wait("wait") == 30
    assert requested_wait("Wait = 2.5") == 2.5
    assert requested_wait("handling=lenient") is None
    assert requested_wait("waiting=3") is None
    assert requested_wait(None) is None
