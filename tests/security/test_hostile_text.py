"""NUL bytes, lone surrogates and over-long text anywhere a client can put text: a 4xx JSON answer, never a 500.

PostgreSQL refuses to store a NUL character and no UTF-8 encoder takes a lone
surrogate, so each of these once reached the database and came back as a 500.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient

TASK_ID = "0" * 8 + "-0000-0000-0000-" + "0" * 12
DATASET = b"a,target\n" + b"".join(f"{i},{i * 2}\n".encode() for i in range(50))
HOSTILE_IDS = ["abc%00def", "%ED%A0%80", "x" * 5000, "%00"]


def _assert_refused(r: Any, where: str) -> None:
    assert 400 <= r.status_code < 500, (where, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), where
    assert r.json().get("detail") or r.json().get("error"), where


def test_hostile_ids_in_paths_are_refused(client: TestClient, make_user: Callable[..., Any]) -> None:
    headers = make_user()
    for bad in HOSTILE_IDS:
        _probe_paths(client, headers, bad)


def _probe_paths(client: TestClient, headers: dict[str, str], bad: str) -> None:
    probes = [
        ("GET", f"/api/v1/predictions/{bad}"),
        ("GET", f"/api/v1/predictions/{bad}/results.csv"),
        ("GET", f"/api/v1/predictions/{bad}/events"),
        ("GET", f"/api/v1/training-jobs/{bad}"),
        ("GET", f"/api/v1/training-jobs/{bad}/report"),
        ("GET", f"/api/v1/training-jobs/{bad}/report.pdf"),
        ("GET", f"/api/v1/training-jobs/{bad}/artifact"),
        ("GET", f"/api/v1/training-jobs/{bad}/events"),
        ("POST", f"/api/v1/training-jobs/{bad}/retrain"),
        ("POST", f"/api/v1/training-jobs/{bad}/restore"),
        ("DELETE", f"/api/v1/training-jobs/{bad}"),
        ("GET", f"/api/v1/datasets/{bad}"),
        ("DELETE", f"/api/v1/datasets/{bad}"),
        ("GET", f"/api/v1/models/{bad}"),
        ("POST", f"/api/v1/models/{bad}/unpublish"),
        ("GET", f"/api/v1/algorithms/{bad}"),
        ("GET", f"/api/v1/predictions?status={bad}"),
        ("GET", f"/v2/models/{bad}"),
    ]
    for method, path in probes:
        _assert_refused(client.request(method, path, headers=headers), f"{method} {path}")


def test_hostile_text_in_bodies_and_forms_is_refused(client: TestClient, make_user: Callable[..., Any]) -> None:
    headers = make_user()
    for bad in ("a\x00b", "\ud800", "\udfff x"):
        _probe_bodies(client, headers, bad)


def _probe_bodies(client: TestClient, headers: dict[str, str], bad: str) -> None:

    def post_json(path: str, body: dict[str, Any]) -> Any:
        # json.dumps escapes the NUL and the surrogate as \u0000 and \udXXX, as a client's JSON encoder would.
        return client.post(path, content=json.dumps(body), headers={**headers, "Content-Type": "application/json"})

    register = {"email": "nul@example.com", "password": "long-enough-1", "full_name": bad}
    _assert_refused(post_json("/api/v1/auth/register", register), "register full_name")
    username = quote(f"a{bad}@example.com".encode("utf-8", "surrogatepass"))
    token = client.post(
        "/api/v1/auth/token",
        content=f"username={username}&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if "\x00" in bad:  # an encoded surrogate is not UTF-8: the form decoder makes it a replacement character
        _assert_refused(token, "login username")
    else:
        assert token.status_code == 401
    _assert_refused(post_json("/api/v1/predictions", {"model": f"m{bad}", "rows": [{"a": 1}]}), "predict model")
    files = {"file": ("x.csv", io.BytesIO(b"a,b\n1,2\n"), "text/csv")}
    form = client.post(
        "/api/v1/predictions",
        data={"model": f"m{bad}".encode("utf-8", "surrogatepass")},
        files=files,
        headers=headers,
    )
    _assert_refused(form, "predict model (multipart)")
    for field in ("name", "description", "training_job_id"):
        body = {"training_job_id": TASK_ID, "name": "fine-name", "description": "", "price_per_row": 1}
        body[field] = f"v{bad}"
        _assert_refused(post_json("/api/v1/models", body), f"publish {field}")
    upload = client.post(
        "/api/v1/datasets",
        data={"name": f"d{bad}".encode("utf-8", "surrogatepass")},
        files={"file": ("d.csv", io.BytesIO(DATASET), "text/csv")},
        headers=headers,
    )
    if "\x00" in bad:
        _assert_refused(upload, "dataset name")
    else:  # a surrogate's bytes are not UTF-8: the form decoder reads them as Latin-1, which stores fine
        assert upload.status_code == 201 and "\ufffd" not in upload.json()["name"]
    # The same upload with a plain name is taken: the refusal above was the name's.
    files = {"file": ("d.csv", io.BytesIO(DATASET), "text/csv")}
    assert client.post("/api/v1/datasets", data={"name": "plain"}, files=files, headers=headers).status_code == 201
