"""Price protection: a caller's ``max_price_per_row`` refuses a model that got dearer (409, nothing charged), on
every way in (JSON, CSV upload, /v2 REST, gRPC), and the catalog marks a version that raised the price."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from app.api.grpc import open_inference_pb2 as pb
from app.api.grpc import open_inference_pb2_grpc as pb_grpc
from app.core.config import Settings
from tests.conftest import make_settings
from tests.http_clients import balance, paying_user
from tests.real_services import free_port
from tests.samples import DIABETES_ROW

pytestmark = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)

PREDICT = "/api/v1/predictions"
INFER = "/v2/models/diabetes-linear/infer"
ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data", grpc_port=free_port())


def infer_body(cap: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": ROW}]}
    if cap is not None:
        body["parameters"] = {"max_price_per_row": cap}
    return body


def grpc_request(cap: int | None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="diabetes-linear")
    request.inputs.add(name="x", datatype="FP64", shape=[1, 10])
    request.raw_input_contents.append(np.asarray(ROW, dtype="<f8").tobytes())
    if cap is not None:
        request.parameters["max_price_per_row"].int64_param = cap
    return request


def csv_of(row: dict[str, Any]) -> bytes:
    return (",".join(row) + "\n" + ",".join(str(v) for v in row.values()) + "\n").encode()


def tasks_of(base: str, headers: dict[str, str]) -> int:
    return len(httpx.get(f"{base}{PREDICT}", headers=headers, params={"limit": 100}).json())


def test_a_price_cap_refuses_a_raised_price_everywhere_and_charges_nothing(
    live_server: str, settings: Settings, publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=2)
    headers = paying_user(live_server, 1000)
    key = httpx.post(f"{live_server}/api/v1/api-keys", json={"name": "service"}, headers=headers).json()["key"]
    as_key = {"Authorization": f"Bearer {key}"}
    http = httpx.Client(base_url=live_server, timeout=60)
    channel = grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    metadata = (("authorization", f"Bearer {key}"),)

    # at the price the buyer expects, every way in works (with a key, over gRPC too)
    json_body = {"model": "diabetes-linear", "rows": [DIABETES_ROW], "max_price_per_row": 2}
    assert http.post(PREDICT, json=json_body, headers=as_key).status_code == 202
    assert http.post(INFER, json=infer_body(2), headers=as_key).status_code == 200
    assert stub.ModelInfer(grpc_request(2), metadata=metadata).parameters["cost"].int64_param == 2
    spent = 2 + 2 + 2
    assert balance(live_server, headers) == 1000 - spent

    # the author publishes version 2 at 50 credits a row: the buyer's unpinned, capped calls are refused
    publish_model("diabetes-linear", price=50)
    before = tasks_of(live_server, headers)
    refusals = [
        http.post(PREDICT, json=json_body, headers=as_key),
        http.post(
            PREDICT,
            data={"model": "diabetes-linear", "max_price_per_row": "2"},
            files={"file": ("rows.csv", csv_of(DIABETES_ROW), "text/csv")},
            headers=as_key,
        ),
        http.post(INFER, json=infer_body(2), headers=as_key),
    ]
    for r in refusals:
        assert r.status_code == 409, r.text
        assert "costs 50 credits per row" in r.text and "max_price_per_row of 2" in r.text
    assert refusals[2].json().keys() == {"error"}  # the protocol's error shape
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(grpc_request(2), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.ABORTED and "costs 50 credits per row" in str(
        refused.value.details()
    )
    assert balance(live_server, headers) == 1000 - spent
    assert tasks_of(live_server, headers) == before
    (item,) = http.get("/api/v1/api-keys", headers=headers).json()
    assert item["spent_this_month"] == spent

    # a cap at or above the new price, or the old version pinned, is served and billed as before
    assert http.post(INFER, json=infer_body(50), headers=as_key).json()["parameters"]["cost"] == 50
    pinned = {**json_body, "version": 1}
    assert http.post(PREDICT, json=pinned, headers=as_key).json()["cost"] == 2
    assert http.post(PREDICT, json={**json_body, "max_price_per_row": 60}, headers=as_key).json()["cost"] == 50
    assert balance(live_server, headers) == 1000 - spent - 50 - 2 - 50

    # a malformed cap is the caller's error, free
    for cap in (0, -1, "two", 2.5, True):
        r = http.post(PREDICT, json={**json_body, "max_price_per_row": cap}, headers=as_key)
        assert r.status_code == 422, (cap, r.text)
    assert http.post(INFER, json=infer_body(0), headers=as_key).status_code == 400
    assert balance(live_server, headers) == 1000 - spent - 102
    channel.close()
    http.close()


def test_the_catalog_shows_each_versions_price_and_marks_a_raise(
    live_server: str, publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=2)
    publish_model("iris-logistic", price=3)
    catalog = {m["name"]: m for m in httpx.get(f"{live_server}/api/v1/models").json()}
    assert catalog["diabetes-linear"]["price_raised"] is False
    assert catalog["diabetes-linear"]["previous_price_per_row"] is None

    publish_model("diabetes-linear", price=50)
    publish_model("iris-logistic", price=1)
    catalog = {m["name"]: m for m in httpx.get(f"{live_server}/api/v1/models").json()}
    raised = catalog["diabetes-linear"]
    assert (raised["version"], raised["price_per_row"], raised["previous_price_per_row"]) == (2, 50, 2)
    assert raised["price_raised"] is True
    cheaper = catalog["iris-logistic"]
    assert (cheaper["price_per_row"], cheaper["previous_price_per_row"], cheaper["price_raised"]) == (1, 3, False)

    detail = httpx.get(f"{live_server}/api/v1/models/diabetes-linear").json()
    assert detail["version"] == 2 and detail["price_raised"] is True
    history = [(v["version"], v["price_per_row"], v["price_raised"]) for v in detail["versions"]]
    assert history == [(2, 50, True), (1, 2, False)]
