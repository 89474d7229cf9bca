"""Training jobs, reports, publishing and the job lifecycle on the embedded default (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from app.core.errors import ArtifactMissing
from app.models.ledger import ChargeHold, LedgerEntry
from app.runtime.model import ModelRuntime
from app.services import ledger
from app.store import ArtifactRef, make_store

JOBS = "/api/v1/training-jobs"
DATASETS = "/api/v1/datasets"


def csv_of(loader: Any, rows: int | None = None) -> bytes:
    frame: pd.DataFrame = loader(as_frame=True).frame
    return (frame if rows is None else frame.head(rows)).to_csv(index=False).encode()


def top_up(client: TestClient, headers: dict[str, str], amount: int) -> None:
    r = client.post(
        "/api/v1/wallet/top-ups", json={"amount": amount}, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert r.status_code == 201, r.text


def balance(client: TestClient, headers: dict[str, str]) -> int:
    return int(client.get("/api/v1/wallet", headers=headers).json()["balance"])


def upload(client: TestClient, headers: dict[str, str], data: bytes) -> int:
    r = client.post(DATASETS, files={"file": ("data.csv", data, "text/csv")}, headers=headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def wait_job(client: TestClient, headers: dict[str, str], job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"{JOBS}/{job_id}", headers=headers).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"training job {job_id} did not finish: {body}")


def verify_ledger(engine: Engine) -> None:
    with Session(engine) as s:
        report = ledger.verify(s)
        assert report.ok, report


def test_train_report_pdf_events_and_artifact(
    client: TestClient, make_user: Callable[..., dict[str, str]], engine: Engine
) -> None:
    headers = make_user()
    top_up(client, headers, 100)
    dataset_id = upload(client, headers, csv_of(load_breast_cancer))  # 569 rows: one started 1,000
    r = client.post(
        JOBS,
        json={"dataset_id": dataset_id, "algorithm": "LogisticRegression", "hyperparameters": {"max_iter": 3000}},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["cost"] == 10 and job["rows"] == 569
    assert job["task"] == "classification" and job["test_size"] == 0.2 and job["random_state"] == 42
    assert balance(client, headers) == 90

    with client.stream("GET", f"{JOBS}/{job['id']}/events", headers=headers) as stream:
        events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1]["status"] == "succeeded" and events[-1]["progress"] == 100
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)

    done = wait_job(client, headers, job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["duration_seconds"] > 0
    assert {"test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc", "train_f1"} <= set(
        done["metrics"]
    )
    assert balance(client, headers) == 90  # settled: the platform earns the fee, nothing comes back

    report = client.get(f"{JOBS}/{job['id']}/report", headers=headers).json()
    assert report["classes"] == [0, 1]
    assert sum(map(sum, report["confusion_matrix"])) == report["rows"]["test"] == 114
    assert report["feature_importance"]["method"] == "permutation"
    assert len(report["feature_importance"]["values"]) == 30
    assert report["durations"]["fit_seconds"] > 0 and report["hyperparameters"]["max_iter"] == 3000

    pdf = client.get(f"{JOBS}/{job['id']}/report.pdf", headers=headers)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    pages = PdfReader(io.BytesIO(pdf.content)).pages
    assert len(pages) == 3  # summary, confusion matrix, feature importance
    assert "LogisticRegression" in pages[0].extract_text()
    name = client.get(f"{DATASETS}/{dataset_id}", headers=headers).json()["name"]
    assert f"{name}," in pages[0].extract_text() or f"{name} " in pages[0].extract_text(), name  # named as given

    artifact = client.get(f"{JOBS}/{job['id']}/artifact", headers=headers)
    assert artifact.status_code == 200
    path = written_to_file(artifact.content)
    runtime = ModelRuntime.load(path)
    assert runtime.classes == [0, 1] and len(runtime.features) == 30
    verify_ledger(engine)


def written_to_file(content: bytes) -> Any:
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "model.skops"
    path.write_bytes(content)
    return path


def test_bad_requests_move_no_money(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    headers, other = make_user(), make_user()
    top_up(client, headers, 50)
    dataset_id = upload(client, headers, csv_of(load_iris))
    others_dataset = upload(client, other, csv_of(load_iris))
    cases = [
        ({"algorithm": "RandomForestClassifier", "hyperparameters": {"n_estimators": 0}}, 422,
         "hyperparameter 'n_estimators' of RandomForestClassifier must be int (an integer from 1 to 1000), got 0"),
        ({"algorithm": "RandomForestClassifier", "hyperparameters": {"depth": 3}}, 422,
         "RandomForestClassifier has no hyperparameter 'depth'; allowed: max_depth, min_samples_leaf, "
         "n_estimators, random_state"),
        ({"algorithm": "SVC"}, 422, "unknown algorithm 'SVC'"),
        ({"algorithm": "LogisticRegression", "target": "nope"}, 422, "the target column 'nope' is not in dataset"),
        ({"algorithm": "GradientBoostingRegressor", "shards": 2, "target": "sepal length (cm)"}, 422,
         "GradientBoostingRegressor cannot be trained in shards: its shards cannot be merged; algorithms that can: "
         "LinearRegression, Ridge, RandomForestRegressor, LogisticRegression, RandomForestClassifier"),
        ({"algorithm": "KNeighborsClassifier", "shards": 2}, 422, "KNeighborsClassifier cannot be trained in shards"),
        ({"algorithm": "CatBoostClassifier", "shards": 3}, 422, "CatBoostClassifier cannot be trained in shards"),
        ({"algorithm": "RandomForestClassifier", "shards": 9}, 422, "shards"),
        ({"algorithm": "LogisticRegression", "dataset_id": 999999}, 404, "dataset 999999 not found"),
        ({"algorithm": "LogisticRegression", "dataset_id": others_dataset}, 404, f"dataset {others_dataset} not found"),
        ({"algorithm": "LogisticRegression", "test_size": 0.9}, 422, "test_size"),
    ]  # fmt: skip
    for body, code, detail in cases:
        r = client.post(JOBS, json={"dataset_id": dataset_id, **body}, headers=headers)
        assert r.status_code == code, (body, r.text)
        assert detail in r.json()["detail"], (body, r.text)
    assert balance(client, headers) == 50
    assert client.get(JOBS, headers=headers).json() == []

    poor = make_user()
    poor_dataset = upload(client, poor, csv_of(load_iris))
    r = client.post(JOBS, json={"dataset_id": poor_dataset, "algorithm": "LogisticRegression"}, headers=poor)
    assert r.status_code == 402 and r.json()["detail"] == "insufficient balance: need 10, have 0"
    assert client.get(JOBS, headers=poor).json() == []


def test_a_job_that_cannot_train_fails_and_is_refunded_once(
    client: TestClient, make_user: Callable[..., dict[str, str]], engine: Engine
) -> None:
    headers = make_user()
    top_up(client, headers, 30)
    one_class = upload(client, headers, b"a,b,target\n" + b"1,2,1\n3,4,1\n5,6,1\n7,8,1\n9,1,1\n2,2,1\n")
    job = client.post(JOBS, json={"dataset_id": one_class, "algorithm": "LogisticRegression"}, headers=headers).json()
    # charged 10; the in-process trainer may already have failed and refunded it by the time we look
    assert balance(client, headers) in (20, 30)
    done = wait_job(client, headers, job["id"])
    assert done["status"] == "failed"
    assert done["error"] == "the target 'target' needs at least two classes for classification"
    assert balance(client, headers) == 30
    assert client.get(f"{JOBS}/{job['id']}/report", headers=headers).status_code == 409
    verify_ledger(engine)


def test_publish_predict_and_the_author_earns(
    client: TestClient, make_user: Callable[..., dict[str, str]], engine: Engine
) -> None:
    author, buyer = make_user(), make_user()
    top_up(client, author, 20)
    dataset_id = upload(client, author, csv_of(load_diabetes))
    job = client.post(JOBS, json={"dataset_id": dataset_id, "algorithm": "Ridge"}, headers=author).json()
    assert wait_job(client, author, job["id"])["status"] == "succeeded"
    assert balance(client, author) == 10

    assert client.post(
        "/api/v1/models",
        json={"training_job_id": job["id"], "name": "my-diabetes", "price_per_row": 10},
        headers=buyer,
    ).status_code == 404  # fmt: skip
    r = client.post(
        "/api/v1/models",
        json={"training_job_id": job["id"], "name": "my-diabetes", "description": "Ridge", "price_per_row": 10},
        headers=author,
    )
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["version"] == 1 and model["algorithm"] == "Ridge" and model["task"] == "regression"
    assert [f["name"] for f in model["input_schema"]] == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert model["artifact_md5"] == job_md5(client, author, job["id"])
    assert "my-diabetes" in [m["name"] for m in client.get("/api/v1/models").json()]
    # the job compiled the pipeline and checked it on the held-out rows; the published version is served by it
    assert model["runtime"] == "onnxruntime" and "matched scikit-learn on 89 held-out rows" in model["compile_note"]
    meta = client.get("/v2/models/my-diabetes").json()
    assert meta["platform"] == "mlmarket-onnxruntime" and meta["parameters"]["runtime"] == "onnxruntime"

    top_up(client, buyer, 100)
    row = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.01)
    task = client.post("/api/v1/predictions", json={"model": "my-diabetes", "rows": [row, row]}, headers=buyer).json()
    deadline = time.monotonic() + 30
    while client.get(f"/api/v1/predictions/{task['id']}", headers=buyer).json()["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert balance(client, buyer) == 80
    assert balance(client, author) == 10 + 14  # 70 % of 20
    verify_ledger(engine)

    taken = client.post(
        "/api/v1/models", json={"training_job_id": job["id"], "name": "diabetes-x", "price_per_row": 1}, headers=author
    )
    assert taken.status_code == 201
    r = client.post("/api/v1/models/my-diabetes/unpublish", headers=author)
    assert r.status_code == 200 and r.json()[0]["status"] == "unlisted"
    assert "my-diabetes" not in [m["name"] for m in client.get("/api/v1/models").json()]
    assert client.get("/api/v1/models/my-diabetes").status_code == 404
    for version in (None, 1):
        r = client.post(
            "/api/v1/predictions", json={"model": "my-diabetes", "version": version, "rows": [row]}, headers=buyer
        )
        assert r.status_code == 404, r.text
    assert balance(client, buyer) == 80  # refused before any charge
    assert client.get("/api/v1/models/diabetes-x").status_code == 200  # the other name is still for sale
    history = client.get(f"/api/v1/predictions/{task['id']}", headers=buyer).json()
    assert history["status"] == "succeeded" and history["model"] == "my-diabetes"
    assert history["results"] and len(history["results"]) == 2
    assert client.post("/api/v1/models/diabetes-x/unpublish", headers=buyer).status_code == 404


def job_md5(client: TestClient, headers: dict[str, str], job_id: str) -> str:
    return str(client.get(f"{JOBS}/{job_id}", headers=headers).json()["artifact_md5"])


def test_lifecycle_list_soft_delete_restore_retrain_hard_delete(
    client: TestClient, make_user: Callable[..., dict[str, str]], settings: Any
) -> None:
    headers, other = make_user(), make_user()
    top_up(client, headers, 100)
    first = upload(client, headers, csv_of(load_iris))
    second = upload(client, headers, csv_of(load_iris, rows=120))
    job = client.post(
        JOBS,
        json={"dataset_id": first, "algorithm": "RandomForestClassifier", "hyperparameters": {"n_estimators": 10}},
        headers=headers,
    ).json()
    wait_job(client, headers, job["id"])

    for method, path in [("GET", ""), ("GET", "/report"), ("GET", "/report.pdf"), ("GET", "/artifact"),
                         ("POST", "/retrain"), ("DELETE", ""), ("GET", "/events")]:  # fmt: skip
        r = client.request(method, f"{JOBS}/{job['id']}{path}", headers=other)
        assert r.status_code == 404, (method, path)
        assert r.json() == {"detail": f"training job {job['id']} not found"}

    retrained = client.post(f"{JOBS}/{job['id']}/retrain", json={"dataset_id": second}, headers=headers).json()
    assert retrained["retrain_of"] == job["id"] and retrained["dataset_id"] == second and retrained["rows"] == 120
    assert retrained["hyperparameters"]["n_estimators"] == 10
    assert wait_job(client, headers, retrained["id"])["status"] == "succeeded"
    listed = client.get(JOBS, headers=headers).json()
    assert [j["id"] for j in listed] == [retrained["id"], job["id"]]
    assert all(j["metrics"] and j["duration_seconds"] for j in listed)

    assert client.delete(f"{JOBS}/{job['id']}", headers=headers).status_code == 204
    assert [j["id"] for j in client.get(JOBS, headers=headers).json()] == [retrained["id"]]
    assert client.get(f"{JOBS}/{job['id']}", headers=headers).json()["deleted"] is True
    assert client.post(f"{JOBS}/{job['id']}/restore", headers=headers).json()["deleted"] is False
    assert len(client.get(JOBS, headers=headers).json()) == 2

    md5 = job_md5(client, headers, job["id"])
    assert client.delete(f"{JOBS}/{job['id']}", params={"hard": True}, headers=headers).status_code == 204
    assert client.get(f"{JOBS}/{job['id']}", headers=headers).status_code == 404
    with pytest.raises(ArtifactMissing):
        make_store(settings).fetch(ArtifactRef(md5=md5, size=1, path="training/x/model.skops"))


def entries_of(engine: Engine, task_id: str) -> list[tuple[str, int]]:
    with Session(engine) as s:
        rows = s.exec(select(LedgerEntry).where(LedgerEntry.task_id == task_id).order_by(LedgerEntry.id)).all()
        return [(e.kind, e.amount) for e in rows]


def hold_status(engine: Engine, task_id: str) -> str:
    with Session(engine) as s:
        hold = s.get(ChargeHold, task_id)
        assert hold is not None
        return hold.status


def test_sharded_training_merges_the_shards_and_settles_once(
    client: TestClient, make_user: Callable[..., dict[str, str]], engine: Engine
) -> None:
    headers = make_user()
    top_up(client, headers, 100)
    wine = load_wine(as_frame=True).frame
    dataset_id = upload(client, headers, wine.to_csv(index=False).encode())  # 178 rows: 142 to train, 36 to test
    forest = client.post(
        JOBS,
        json={
            "dataset_id": dataset_id,
            "algorithm": "RandomForestClassifier",
            "hyperparameters": {"n_estimators": 7, "random_state": 5},
            "shards": 2,
        },
        headers=headers,
    )
    assert forest.status_code == 202, forest.text
    assert forest.json()["shards"] == 2 and [s["status"] for s in forest.json()["shard_status"]] == ["queued"] * 2
    logistic = client.post(
        JOBS,
        json={
            "dataset_id": dataset_id,
            "algorithm": "LogisticRegression",
            "hyperparameters": {"max_iter": 2000},
            "shards": 2,
        },
        headers=headers,
    ).json()
    assert balance(client, headers) == 80  # 10 per job, charged once however many shards

    for job in (forest.json(), logistic):
        done = wait_job(client, headers, job["id"])
        assert done["status"] == "succeeded", done
        assert done["progress"] == 100 and done["metrics"]["test_accuracy"] > 0.8
        shards = done["shard_status"]
        assert [s["index"] for s in shards] == [0, 1] and {s["status"] for s in shards} == {"succeeded"}
        assert all(s["worker"] and s["attempts"] == 1 and s["duration_seconds"] > 0 for s in shards)
        report = client.get(f"{JOBS}/{job['id']}/report", headers=headers).json()
        assert sum(s["rows"] for s in shards) == report["rows"]["train"] == 142 and report["rows"]["test"] == 36
        assert sum(map(sum, report["confusion_matrix"])) == 36
        # The charge is settled once: one charge, one fee to the platform, no refund.
        assert entries_of(engine, job["id"]) == [("charge", -10), ("fee", 10)]
        assert hold_status(engine, job["id"]) == "settled"
    assert balance(client, headers) == 80

    runtime = ModelRuntime.load(
        written_to_file(client.get(f"{JOBS}/{forest.json()['id']}/artifact", headers=headers).content)
    )
    model = runtime.estimator.named_steps["model"]
    assert model.n_estimators == len(model.estimators_) == 14  # 7 trees from each of the 2 shards
    rows = wine.drop(columns="target").head(5).to_dict("records")
    assert runtime.predict(rows) == wine["target"].head(5).tolist()
    report = client.get(f"{JOBS}/{forest.json()['id']}/report", headers=headers).json()
    assert report["feature_importance"]["method"] == "native"

    linear = ModelRuntime.load(
        written_to_file(client.get(f"{JOBS}/{logistic['id']}/artifact", headers=headers).content)
    )
    assert linear.estimator.named_steps["model"].coef_.shape == (3, 13)
    assert linear.predict(rows) == wine["target"].head(5).tolist()

    r = client.post(
        "/api/v1/models",
        json={"training_job_id": forest.json()["id"], "name": "wine-sharded", "price_per_row": 1},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    task = client.post("/api/v1/predictions", json={"model": "wine-sharded", "rows": rows}, headers=headers).json()
    deadline = time.monotonic() + 30
    while (done_task := client.get(f"/api/v1/predictions/{task['id']}", headers=headers).json())[
        "status"
    ] != "succeeded":
        assert time.monotonic() < deadline, done_task
        time.sleep(0.05)
    assert done_task["results"] == wine["target"].head(5).tolist()
    verify_ledger(engine)


def test_a_failing_shard_fails_the_job_and_refunds_once(
    client: TestClient, make_user: Callable[..., dict[str, str]], engine: Engine
) -> None:
    headers = make_user()
    top_up(client, headers, 30)
    # Class 2 has two rows: one lands in the training part, too few for every one of 3 shards to see it.
    data = b"a,b,target\n" + b"".join(f"{i},{i % 7},{i % 2}\n".encode() for i in range(60)) + b"5,5,2\n6,6,2\n"
    dataset_id = upload(client, headers, data)
    job = client.post(
        JOBS, json={"dataset_id": dataset_id, "algorithm": "LogisticRegression", "shards": 3}, headers=headers
    ).json()
    assert balance(client, headers) == 20
    done = wait_job(client, headers, job["id"])
    assert done["status"] == "failed"
    assert "fewer than the 3 shards" in done["error"], done
    assert {s["status"] for s in done["shard_status"]} == {"failed"}
    assert balance(client, headers) == 30
    assert entries_of(engine, job["id"]) == [("charge", -10), ("refund", 10)]
    verify_ledger(engine)
