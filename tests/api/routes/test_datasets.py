"""Datasets of the training studio on the embedded default (SQLite and PostgreSQL, local DVC remote)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from app.core.errors import ArtifactMissing
from app.main import create_app
from app.store import ArtifactRef, make_store
from tests.conftest import make_settings

DATASETS = "/api/v1/datasets"


def iris_csv(rows: int | None = None) -> bytes:
    frame: pd.DataFrame = load_iris(as_frame=True).frame
    if rows is not None:
        frame = frame.head(rows)
    return frame.to_csv(index=False).encode()


def upload(
    client: TestClient, headers: dict[str, str], data: bytes, target: str | None = None, name: str = "data.csv"
) -> Any:
    form = {"target": target} if target is not None else {}
    return client.post(DATASETS, files={"file": (name, data, "text/csv")}, data=form, headers=headers)


@pytest.mark.parametrize(
    ("data", "target", "detail"),
    [
        (b"", None, "file is empty"),
        (b"  \n\n ", None, "file is empty"),
        ("a,target\n1,caf\u00e9\n".encode("latin-1"), None, "file must be utf-8 csv"),
        (b"1,2,3\n4,5,6\n", None, "csv must contain header row"),
        (b"a,,target\n1,2,3\n", None, "csv must contain header row"),
        (b"a,b\n1,2\n", None, "csv must contain target column"),
        (b"a,target\n1,2\n", "label", "csv must contain target column"),
        (",".join(f"c{i}" for i in range(50)).encode() + b",target\n" + b"1," * 50 + b"1\n", None,
         "csv must have at most 50 columns"),
        (b"a,target\n" + b"1,2\n" * 10_001, None, "csv must have at most 10000 rows"),
    ],
)  # fmt: skip
def test_each_validation_message_byte_for_byte(
    client: TestClient, make_user: Callable[..., dict[str, str]], data: bytes, target: str | None, detail: str
) -> None:
    r = upload(client, make_user(), data, target)
    assert r.status_code == 400
    assert r.content == b'{"detail":"' + detail.encode() + b'"}'


def test_limits_come_from_the_settings(tmp_path: Any, database_url: str) -> None:
    settings = make_settings(database_url, tmp_path / "data", dataset_max_columns=3, dataset_max_rows=2)
    with TestClient(create_app(settings)) as client:
        client.post("/api/v1/auth/register", json={"email": "x@example.com", "password": "password-123"})
        token = client.post("/api/v1/auth/token", data={"username": "x@example.com", "password": "password-123"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert upload(client, headers, b"a,b,c,target\n1,2,3,4\n").json() == {
            "detail": "csv must have at most 3 columns"
        }
        assert upload(client, headers, b"a,target\n1,2\n1,2\n1,2\n").json() == {
            "detail": "csv must have at most 2 rows"
        }
        assert upload(client, headers, b"a,target\n1,2\n1,2\n").status_code == 201


def test_a_file_over_the_byte_limit_is_413(tmp_path: Any, database_url: str) -> None:
    settings = make_settings(database_url, tmp_path / "data", dataset_max_bytes=2048)
    with TestClient(create_app(settings)) as client:
        client.post("/api/v1/auth/register", json={"email": "x@example.com", "password": "password-123"})
        token = client.post("/api/v1/auth/token", data={"username": "x@example.com", "password": "password-123"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        r = upload(client, headers, b"a,target\n" + b"1,2\n" * 1000)
        assert r.status_code == 413


def test_upload_records_metadata_and_guesses_the_task(
    client: TestClient, make_user: Callable[..., dict[str, str]]
) -> None:
    headers = make_user()
    r = upload(client, headers, iris_csv(), name="iris.csv")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "iris.csv"
    assert body["rows"] == 150
    assert body["version"] == 1
    assert body["target"] == "target"
    assert body["task"] == "classification"
    assert body["columns"][-1] == "target" and len(body["columns"]) == 5
    assert body["dtypes"]["sepal length (cm)"] == "number"
    assert body["dtypes"]["target"] == "integer"
    assert len(body["artifact_md5"]) == 32

    regression = upload(client, headers, b"x,y\n1,1.5\n2,2.25\n3,3.75\n4,4.1\n5,5.9\n", target="y").json()
    assert regression["task"] == "regression" and regression["target"] == "y"
    text = upload(client, headers, b"size,colour\n1,red\n2,blue\n", target="colour").json()
    assert text["task"] == "classification" and text["dtypes"]["colour"] == "string"

    listed = client.get(DATASETS, headers=headers).json()
    assert [d["id"] for d in listed] == [text["id"], regression["id"], body["id"]]


def test_rows_info_append_and_reset(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    headers = make_user()
    dataset = upload(client, headers, b"a,b,target\n1,x,0\n2,y,1\n3,,0\n").json()
    url = f"{DATASETS}/{dataset['id']}"

    page = client.get(f"{url}/rows", params={"offset": 1, "limit": 5}, headers=headers).json()
    assert page["total"] == 3 and page["version"] == 1
    assert page["rows"] == [{"a": 2, "b": "y", "target": 1}, {"a": 3, "b": None, "target": 0}]

    r = client.post(
        f"{url}/rows", json={"rows": [{"a": 4, "b": "z", "target": 1}, {"a": 5, "target": 0}]}, headers=headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2 and r.json()["rows"] == 5
    assert client.get(f"{url}/rows", params={"offset": 3}, headers=headers).json()["rows"] == [
        {"a": 4, "b": "z", "target": 1},
        {"a": 5, "b": None, "target": 0},
    ]
    bad = client.post(f"{url}/rows", json={"rows": [{"nope": 1}]}, headers=headers)
    assert bad.status_code == 400 and "unknown column" in bad.json()["detail"]

    info = client.get(f"{url}/info", headers=headers).json()
    assert info["version"] == 2 and [v["version"] for v in info["versions"]] == [1, 2]
    assert info["target_summary"]["classes"] == {"0": 3, "1": 2}
    by_name = {c["name"]: c for c in info["column_summary"]}
    assert by_name["b"]["missing"] == 2 and by_name["a"]["max"] == 5.0

    reset = client.post(f"{url}/reset", headers=headers).json()
    assert reset["version"] == 3 and reset["rows"] == 3
    assert reset["artifact_md5"] == dataset["artifact_md5"]
    old = client.get(f"{url}/rows", params={"version": 2}, headers=headers).json()
    assert old["total"] == 5


def test_appending_past_the_row_limit_is_refused(tmp_path: Any, database_url: str) -> None:
    settings = make_settings(database_url, tmp_path / "data", dataset_max_rows=3)
    with TestClient(create_app(settings)) as client:
        client.post("/api/v1/auth/register", json={"email": "x@example.com", "password": "password-123"})
        token = client.post("/api/v1/auth/token", data={"username": "x@example.com", "password": "password-123"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        dataset = upload(client, headers, b"a,target\n1,2\n3,4\n").json()
        r = client.post(f"{DATASETS}/{dataset['id']}/rows", json={"rows": [{"a": 1}, {"a": 2}]}, headers=headers)
        assert r.json() == {"detail": "csv must have at most 3 rows"}
        assert client.get(f"{DATASETS}/{dataset['id']}", headers=headers).json()["version"] == 1


def test_another_users_dataset_is_404(client: TestClient, make_user: Callable[..., dict[str, str]]) -> None:
    owner, other = make_user(), make_user()
    dataset = upload(client, owner, iris_csv(20)).json()
    url = f"{DATASETS}/{dataset['id']}"
    for method, path in [("get", ""), ("get", "/info"), ("get", "/rows"), ("post", "/reset"), ("delete", "")]:
        r = client.request(method.upper(), f"{url}{path}", headers=other)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json() == {"detail": f"dataset {dataset['id']} not found"}
    assert client.get(f"{DATASETS}/999999", headers=owner).status_code == 404
    assert client.get(url, headers=owner).status_code == 200


def test_soft_delete_hides_and_restore_brings_back(
    client: TestClient, make_user: Callable[..., dict[str, str]]
) -> None:
    headers = make_user()
    dataset = upload(client, headers, iris_csv(20)).json()
    url = f"{DATASETS}/{dataset['id']}"
    assert client.delete(url, headers=headers).status_code == 204
    assert client.get(DATASETS, headers=headers).json() == []
    assert [d["id"] for d in client.get(DATASETS, params={"include_deleted": True}, headers=headers).json()] == [
        dataset["id"]
    ]
    assert client.get(url, headers=headers).json()["deleted"] is True
    restored = client.post(f"{url}/restore", headers=headers).json()
    assert restored["deleted"] is False
    assert len(client.get(DATASETS, headers=headers).json()) == 1


def test_hard_delete_removes_the_files_from_the_store(
    client: TestClient, make_user: Callable[..., dict[str, str]], settings: Any
) -> None:
    headers, other = make_user(), make_user()
    data = iris_csv(30)
    dataset = upload(client, headers, data).json()
    twin = upload(client, other, data).json()  # the same bytes: one object in the content-addressed store
    url = f"{DATASETS}/{dataset['id']}"
    client.post(f"{url}/rows", json={"rows": [{"target": 1}]}, headers=headers)
    versions = client.get(f"{url}/info", headers=headers).json()["versions"]
    assert client.delete(url, params={"hard": True}, headers=headers).status_code == 204
    assert client.get(url, headers=headers).status_code == 404

    store = make_store(settings)
    appended = ArtifactRef(md5=versions[1]["artifact_md5"], size=1, path="datasets/x/v2/data.csv")
    with pytest.raises(ArtifactMissing):
        store.fetch(appended)
    # The other user's identical file is still there.
    rows = client.get(f"{DATASETS}/{twin['id']}/rows", headers=other).json()
    assert rows["total"] == 30
