"""The catalog's usage counts: how many predictions each model has served, so buyers can sort by "most used"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from app.services import catalog
from tests.api.routes.test_predictions import PREDICT, rows, top_up, wait_finished


def test_the_catalog_counts_each_models_succeeded_predictions(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=1)
    publish_model("iris-logistic", price=1)
    catalog.USAGE.forget()
    assert {m["name"]: m["predictions"] for m in client.get("/api/v1/models").json()} == {
        "diabetes-linear": 0,
        "iris-logistic": 0,
    }
    headers = make_user()
    top_up(client, headers, 100)
    for n in (1, 2, 3):
        r = client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows(n)}, headers=headers)
        assert r.status_code == 202, r.text
        assert wait_finished(client, headers, r.json()["id"])["status"] == "succeeded"
    # A refused request (too many columns missing) is no use of the model.
    assert client.post(PREDICT, json={"model": "iris-logistic", "rows": [{}]}, headers=headers).status_code == 422

    # Counted at most once a minute per process: the listing still shows the earlier count until then.
    assert client.get("/api/v1/models/diabetes-linear").json()["predictions"] == 0
    catalog.USAGE.forget()
    listed = {m["name"]: m["predictions"] for m in client.get("/api/v1/models").json()}
    assert listed == {"diabetes-linear": 3, "iris-logistic": 0}
    detail = client.get("/api/v1/models/diabetes-linear").json()
    assert detail["predictions"] == 3 and [v["predictions"] for v in detail["versions"]] == [3]
