"""The Open Inference Protocol with a standard, unmodified client (tritonclient), billed per row."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.http_clients import balance, paying_user

IRIS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
SAMPLES = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])


@pytest.fixture
def iris(publish_model: Callable[..., Any], trained_demo_models: dict[str, Any]) -> Any:
    publish_model("iris-logistic", price=2)
    return trained_demo_models["iris-logistic"][1].pipeline


def test_tritonclient_health_metadata_and_billed_infer(live_server: str, iris: Any) -> None:
    client = triton.InferenceServerClient(url=live_server.removeprefix("http://"))
    headers = paying_user(live_server, 100)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris-logistic")
    meta = client.get_model_metadata("iris-logistic")
    assert [i["name"] for i in meta["inputs"]] == IRIS
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},  # a classifier's class probabilities
    ]

    tensor = triton.InferInput("input-0", list(SAMPLES.shape), "FP64")
    tensor.set_data_from_numpy(SAMPLES)  # binary tensor extension, the client's default
    result = client.infer("iris-logistic", [tensor], headers=dict(headers), request_id="req-1")
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict").tolist()]
    expected = iris.predict(pd.DataFrame(SAMPLES, columns=IRIS)).tolist()
    assert labels == expected
    assert result.get_response()["id"] == "req-1"
    assert balance(live_server, headers) == 100 - 2 * 3


def test_one_tensor_per_feature_in_json_and_a_pinned_version(live_server: str, iris: Any) -> None:
    client = triton.InferenceServerClient(url=live_server.removeprefix("http://"))
    headers = paying_user(live_server, 10)
    inputs = []
    for j, name in enumerate(IRIS):
        t = triton.InferInput(name, [3, 1], "FP32")
        t.set_data_from_numpy(SAMPLES[:, j : j + 1].astype(np.float32), binary_data=False)
        inputs.append(t)
    result = client.infer("iris-logistic", inputs, model_version="1", headers=dict(headers))
    assert len(result.as_numpy("predict")) == 3
    assert balance(live_server, headers) == 4


def test_errors_follow_the_protocol_and_move_no_money(live_server: str, iris: Any) -> None:
    headers = paying_user(live_server, 3)
    url = f"{live_server}/v2/models/iris-logistic/infer"
    good = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
    r = httpx.post(url, json=good)
    assert r.status_code == 401 and "error" in r.json()
    two = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2] * 2}]}
    r = httpx.post(url, json=two, headers=headers)
    assert r.status_code == 402
    assert r.json() == {"error": "insufficient balance: need 4, have 3"}
    cases = [
        (b"{", 400),
        (b'{"inputs": []}', 400),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}).encode(), 400),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2]}]}).encode(), 400),
        (
            json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "XX", "data": [1, 2, 3, 4]}]}).encode(),
            400,
        ),
        (
            json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]}).encode(),
            400,
        ),
        (json.dumps({"inputs": "nope", "outputs": 5}).encode(), 400),
    ]
    for body, status in cases:
        r = httpx.post(url, content=body, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == status, (body, r.text)
        assert set(r.json()) == {"error"}
    r = httpx.post(url, content=b'{"inputs":[]}', headers={**headers, "Inference-Header-Content-Length": "999"})
    assert r.status_code == 400
    for path in ("/v2/models/nope/infer", "/v2/models/iris-logistic/versions/9/infer", "/v2/models/Bad!/infer"):
        r = httpx.post(f"{live_server}{path}", json=good, headers=headers)
        assert r.status_code == 404, path
        assert set(r.json()) == {"error"}
    assert httpx.get(f"{live_server}/v2/models/nope").status_code == 404
    assert balance(live_server, headers) == 3
    with pytest.raises(InferenceServerException):
        triton.InferenceServerClient(url=live_server.removeprefix("http://")).get_model_metadata("nope")


def test_concurrent_single_rows_are_batched_and_each_billed(live_server: str, iris: Any) -> None:
    headers = paying_user(live_server, 1000)
    url = f"{live_server}/v2/models/iris-logistic/infer"

    def one(i: int) -> str:
        row = SAMPLES[i % 3].tolist()
        body = {"id": str(i), "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": row}]}
        r = httpx.post(url, json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == str(i)
        return str(r.json()["outputs"][0]["data"][0])

    with ThreadPoolExecutor(max_workers=16) as pool:
        labels = list(pool.map(one, range(48)))
    expected = iris.predict(pd.DataFrame(SAMPLES, columns=IRIS)).tolist()
    assert labels == [expected[i % 3] for i in range(48)]
    assert balance(live_server, headers) == 1000 - 48 * 2
    history = httpx.get(f"{live_server}/api/v1/predictions", headers=headers, params={"limit": 100}).json()
    assert len(history) == 48 and all(t["status"] == "succeeded" and t["cost"] == 2 for t in history)
