"""The gRPC Open Inference Protocol with a standard, unmodified client (tritonclient.grpc), billed per row.

The API runs for real (uvicorn, its lifespan starting the gRPC server on a port of its own); calls that
tritonclient cannot make (typed ``contents``, the metadata's price) go through mlmarket's own generated stub.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from app import __version__
from app.api.grpc import open_inference_pb2 as pb
from app.api.grpc import open_inference_pb2_grpc as pb_grpc
from app.core.config import Settings
from tests.conftest import make_settings
from tests.http_clients import balance, paying_user
from tests.real_services import free_port

IRIS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
SAMPLES = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
MAX_REQUEST_BYTES = 256 * 1024


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The conftest settings, with the gRPC server on (a free port) and a small message limit to test."""
    return make_settings(database_url, tmp_path / "data", grpc_port=free_port(), max_request_bytes=MAX_REQUEST_BYTES)


@pytest.fixture
def grpc_target(live_server: str, settings: Settings) -> str:
    return f"127.0.0.1:{settings.grpc_port}"


@pytest.fixture
def client(grpc_target: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=grpc_target) as client:
        yield client


@pytest.fixture
def stub(grpc_target: str) -> Iterator[Any]:
    with grpc.insecure_channel(grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
def iris(publish_model: Callable[..., Any], trained_demo_models: dict[str, Any]) -> Any:
    publish_model("iris-logistic", price=2)
    return trained_demo_models["iris-logistic"][1].pipeline


def account(base: str, credits: int) -> tuple[dict[str, str], dict[str, str]]:
    """A new user with ``credits``: their REST headers and their gRPC metadata (keys are lower case in gRPC)."""
    headers = paying_user(base, credits)
    return headers, {"authorization": headers["Authorization"]}


def history(base: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/api/v1/predictions", headers=headers, params={"limit": 100})
    assert r.status_code == 200
    return list(r.json())


def matrix_input(rows: np.ndarray[Any, Any], name: str = "input-0") -> triton.InferInput:
    tensor = triton.InferInput(name, list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)  # raw_input_contents, the client's only form
    return tensor


def labels(result: triton.InferResult) -> list[str]:
    return [v.decode() for v in result.as_numpy("predict").tolist()]


def status_of(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


def test_health_and_metadata_need_no_token(
    client: triton.InferenceServerClient, stub: Any, live_server: str, iris: Any
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "mlmarket" and server["version"] == __version__
    assert client.is_model_ready("iris-logistic")
    assert client.is_model_ready("iris-logistic", model_version="1")

    meta = client.get_model_metadata("iris-logistic", as_json=True)
    assert meta["name"] == "iris-logistic" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == IRIS
    assert {(i["datatype"], tuple(i["shape"])) for i in meta["inputs"]} == {("FP64", ("-1", "1"))}  # int64 as text
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("predict", "BYTES"), ("probabilities", "FP64")]

    # What tritonclient does not read: the price, as MLServer's metadata parameters.
    own = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris-logistic", version="1"))
    assert own.parameters["price_per_row"].int64_param == 2
    assert own.parameters["task"].string_param == "classification"
    assert own.parameters["version"].string_param == "1"


def test_a_matrix_in_raw_contents_is_predicted_billed_and_its_id_echoed(
    client: triton.InferenceServerClient, live_server: str, iris: Any
) -> None:
    headers, metadata = account(live_server, 100)
    result = client.infer("iris-logistic", [matrix_input(SAMPLES)], headers=metadata, request_id="req-1")

    assert labels(result) == iris.predict(pd.DataFrame(SAMPLES, columns=IRIS)).tolist()
    response = result.get_response()
    assert response.id == "req-1"
    assert response.model_name == "iris-logistic" and response.model_version == "1"
    assert response.parameters["cost"].int64_param == 2 * 3
    task_id = response.parameters["task_id"].string_param
    assert balance(live_server, headers) == 100 - 2 * 3
    [task] = history(live_server, headers)
    assert task["id"] == task_id and task["status"] == "succeeded" and task["cost"] == 6


def test_one_tensor_per_feature_and_a_pinned_version(
    client: triton.InferenceServerClient, live_server: str, iris: Any
) -> None:
    headers, metadata = account(live_server, 10)
    inputs = []
    for j, name in enumerate(IRIS):
        tensor = triton.InferInput(name, [3, 1], "FP32")
        tensor.set_data_from_numpy(SAMPLES[:, j : j + 1].astype(np.float32))
        inputs.append(tensor)
    result = client.infer("iris-logistic", inputs, model_version="1", headers=metadata)
    expected = iris.predict(pd.DataFrame(SAMPLES.astype(np.float32).astype(np.float64), columns=IRIS)).tolist()
    assert labels(result) == expected
    assert result.get_response().id == result.get_response().parameters["task_id"].string_param  # no id sent
    assert balance(live_server, headers) == 10 - 2 * 3


def test_regression_outputs_are_fp64_equal_to_the_bare_model(
    client: triton.InferenceServerClient,
    live_server: str,
    publish_model: Callable[..., Any],
    trained_demo_models: dict[str, Any],
) -> None:
    publish_model("diabetes-linear", price=1)
    pipeline = trained_demo_models["diabetes-linear"][1].pipeline
    names = [i["name"] for i in client.get_model_metadata("diabetes-linear", as_json=True)["inputs"]]
    rows = np.random.default_rng(7).normal(0.0, 0.05, size=(5, len(names)))
    headers, metadata = account(live_server, 5)

    result = client.infer("diabetes-linear", [matrix_input(rows)], headers=metadata)

    predicted = result.as_numpy("predict")
    assert predicted.dtype == np.float64 and predicted.shape == (5,)
    np.testing.assert_allclose(predicted, pipeline.predict(pd.DataFrame(rows, columns=names)), rtol=1e-4)
    assert balance(live_server, headers) == 0


def test_typed_contents_are_accepted_as_well(stub: Any, live_server: str, iris: Any) -> None:
    headers, metadata = account(live_server, 20)
    matrix = pb.ModelInferRequest(model_name="iris-logistic", id="typed")
    matrix.inputs.add(
        name="x", datatype="FP64", shape=[3, 4], contents=pb.InferTensorContents(fp64_contents=SAMPLES.ravel())
    )
    per_feature = pb.ModelInferRequest(model_name="iris-logistic")
    for j, name in enumerate(IRIS):
        texts = [repr(float(v)).encode() for v in SAMPLES[:, j]]  # numbers as decimal text, as CSV rows carry them
        per_feature.inputs.add(
            name=name, datatype="BYTES", shape=[3], contents=pb.InferTensorContents(bytes_contents=texts)
        )

    expected = iris.predict(pd.DataFrame(SAMPLES, columns=IRIS)).tolist()
    for request in (matrix, per_feature):
        response = stub.ModelInfer(request, metadata=tuple(metadata.items()))
        assert [o.name for o in response.outputs] == ["predict"] and list(response.outputs[0].shape) == [3]
        values = triton.InferResult(response).as_numpy("predict")
        assert [v.decode() for v in values.tolist()] == expected
    assert balance(live_server, headers) == 20 - 2 * 6


def test_errors_carry_their_status_and_move_no_money(
    client: triton.InferenceServerClient, stub: Any, live_server: str, iris: Any
) -> None:
    headers, metadata = account(live_server, 3)
    one_row = [matrix_input(SAMPLES[:1])]

    def refused(status: grpc.StatusCode, *args: Any, **kwargs: Any) -> str:
        with pytest.raises(InferenceServerException) as exc:
            client.infer(*args, **kwargs)
        assert status_of(exc) == str(status), exc.value.message()
        return str(exc.value.message())

    # Who: no token, a malformed header, a forged token.
    assert "not authenticated" in refused(grpc.StatusCode.UNAUTHENTICATED, "iris-logistic", one_row)
    refused(grpc.StatusCode.UNAUTHENTICATED, "iris-logistic", one_row, headers={"authorization": "Basic abc"})
    refused(grpc.StatusCode.UNAUTHENTICATED, "iris-logistic", one_row, headers={"authorization": "Bearer forged"})
    # Which model: unknown names and versions; a version that is not a version at all.
    for name, version in (("nope", ""), ("iris-logistic", "9"), ("Bad!", ""), ("", "")):
        refused(grpc.StatusCode.NOT_FOUND, name, one_row, model_version=version, headers=metadata)
    for version in ("0", "abc", "-1", "1.0", str(2**31)):
        refused(grpc.StatusCode.INVALID_ARGUMENT, "iris-logistic", one_row, model_version=version, headers=metadata)
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_metadata("nope")
    assert status_of(exc) == str(grpc.StatusCode.NOT_FOUND)
    with pytest.raises(InferenceServerException) as exc:
        client.is_model_ready("iris-logistic", model_version="2")
    assert status_of(exc) == str(grpc.StatusCode.NOT_FOUND)
    # What: tensors that do not fit the model or say one thing and carry another.
    refused(grpc.StatusCode.INVALID_ARGUMENT, "iris-logistic", [matrix_input(SAMPLES[:, :3])], headers=metadata)
    refused(grpc.StatusCode.INVALID_ARGUMENT, "iris-logistic", [matrix_input(SAMPLES[:0])], headers=metadata)
    refused(grpc.StatusCode.INVALID_ARGUMENT, "iris-logistic", one_row, headers=metadata, request_id="x" * 65)
    with_nan = SAMPLES[:1].copy()
    with_nan[0, 2] = np.nan
    assert "petal_length_cm" in refused(
        grpc.StatusCode.INVALID_ARGUMENT, "iris-logistic", [matrix_input(with_nan)], headers=metadata
    )
    calls = []
    lying = pb.ModelInferRequest(model_name="iris-logistic", raw_input_contents=[SAMPLES[:1].tobytes()])
    lying.inputs.add(name="x", datatype="FP64", shape=[2, 4])  # two rows declared, one sent
    calls.append(lying)
    mixed = pb.ModelInferRequest(model_name="iris-logistic", raw_input_contents=[SAMPLES[:1].tobytes()])
    mixed.inputs.add(name="x", datatype="FP64", shape=[1, 4], contents=pb.InferTensorContents(fp64_contents=[1.0]))
    calls.append(mixed)
    wrong_field = pb.ModelInferRequest(model_name="iris-logistic")
    wrong_field.inputs.add(
        name="x", datatype="FP64", shape=[1, 4], contents=pb.InferTensorContents(fp32_contents=[1, 2, 3, 4])
    )
    calls.append(wrong_field)
    calls.append(pb.ModelInferRequest(model_name="iris-logistic"))  # no inputs
    for request in calls:
        with pytest.raises(grpc.RpcError) as rpc:
            stub.ModelInfer(request, metadata=tuple(metadata.items()))
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc.value.details()
    # Too big for the API's message limit: refused by gRPC before anything is decoded.
    big = np.ones((MAX_REQUEST_BYTES // 32 + 1, 4))
    refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "iris-logistic", [matrix_input(big)], headers=metadata)
    # Money: two rows at 2 credits each on a balance of 3.
    message = refused(
        grpc.StatusCode.FAILED_PRECONDITION, "iris-logistic", [matrix_input(SAMPLES[:2])], headers=metadata
    )
    assert "insufficient balance" in message

    assert balance(live_server, headers) == 3
    assert history(live_server, headers) == []
    # The same caller can still pay for what their balance covers.
    client.infer("iris-logistic", one_row, headers=metadata)
    assert balance(live_server, headers) == 1
