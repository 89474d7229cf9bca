"""Class probabilities for classifiers: REST tasks, the Open Inference Protocol over REST and gRPC, the
downloads, and the coalesced synchronous batch; the same price as without, nothing charged when refused."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import tritonclient.grpc as triton_grpc
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from tritonclient.utils import InferenceServerException

from app.core.config import Settings
from app.models.catalog import ModelVersion
from app.models.task import Task
from app.runtime.cache import ModelCache
from app.services import billing, ledger, users
from app.services.dataplane import ServedModel, load_predictor
from app.store import make_store
from tests.conftest import make_settings
from tests.http_clients import balance as live_balance
from tests.http_clients import paying_user
from tests.real_services import free_port
from tests.samples import DIABETES_ROW

PREDICT = "/api/v1/predictions"
IRIS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
SAMPLES = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.8, 5.1, 1.5]])
ROWS = [dict(zip(IRIS, map(float, row), strict=True)) for row in SAMPLES]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The conftest settings, with the gRPC server on a free port."""
    return make_settings(database_url, tmp_path / "data", grpc_port=free_port())


@pytest.fixture
def iris(publish_model: Callable[..., Any], trained_demo_models: dict[str, Any]) -> Any:
    publish_model("iris-logistic", price=2)
    return trained_demo_models["iris-logistic"][1].pipeline


def buyer(client: TestClient, credits: int = 100) -> dict[str, str]:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    client.post("/api/v1/auth/register", json={"email": email, "password": "password-123"})
    token = client.post("/api/v1/auth/token", data={"username": email, "password": "password-123"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    r = client.post(
        "/api/v1/wallet/top-ups", json={"amount": credits}, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert r.status_code == 201, r.text
    return headers


def balance(client: TestClient, headers: dict[str, str]) -> int:
    return int(client.get("/api/v1/wallet", headers=headers).json()["balance"])


def finished(client: TestClient, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = client.get(f"{PREDICT}/{task_id}", headers=headers).json()
        if body["status"] in ("succeeded", "failed"):
            return dict(body)
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


def check_probabilities(probabilities: Any, classes: list[Any], predictions: list[Any]) -> None:
    """One row of probabilities per prediction, each summing to 1, its largest the predicted class."""
    matrix = np.asarray(probabilities, dtype=np.float64)
    assert matrix.shape == (len(predictions), len(classes))
    assert np.allclose(matrix.sum(axis=1), 1.0)
    assert [classes[int(i)] for i in matrix.argmax(axis=1)] == list(predictions)


def serve_with_pipeline(engine: Engine) -> None:
    """Serves the published models by their scikit-learn pipeline instead of their compiled ONNX graph."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(ModelVersion.__table__).values(  # type: ignore[attr-defined]
                runtime="sklearn", onnx_md5=None, onnx_size=None, onnx_path=None
            )
        )


# -- tasks --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["onnxruntime", "sklearn"])
def test_a_task_asking_for_probabilities_gets_them_at_the_same_price(
    client: TestClient, engine: Engine, iris: Any, runtime: str
) -> None:
    if runtime == "sklearn":
        serve_with_pipeline(engine)
    headers = buyer(client)
    sent = [ROWS[0], {**ROWS[1], "petal_width_cm": "wide"}, ROWS[2], ROWS[3]]  # the second row is rejected
    asked = client.post(PREDICT, json={"model": "iris-logistic", "rows": sent, "probabilities": True}, headers=headers)
    plain = client.post(PREDICT, json={"model": "iris-logistic", "rows": sent}, headers=headers)
    assert asked.status_code == plain.status_code == 202, asked.text
    assert asked.json()["cost"] == plain.json()["cost"] == 2 * 3
    assert balance(client, headers) == 100 - 2 * 6

    done = finished(client, headers, asked.json()["id"])
    assert done["status"] == "succeeded", done
    accepted = [ROWS[0], ROWS[2], ROWS[3]]
    expected = iris.predict(pd.DataFrame(accepted, columns=IRIS)).tolist()
    classes = list(iris.classes_)
    assert done["classes"] == classes
    assert done["results"] == [expected[0], None, expected[1], expected[2]]
    assert len(done["probabilities"]) == len(done["results"]) and done["probabilities"][1] is None
    kept = [p for p in done["probabilities"] if p is not None]
    check_probabilities(kept, classes, expected)
    assert np.allclose(kept, iris.predict_proba(pd.DataFrame(accepted, columns=IRIS)), atol=1e-6)

    other = finished(client, headers, plain.json()["id"])
    assert other["results"] == done["results"]
    assert other["classes"] is None and other["probabilities"] is None
    with Session(engine) as session:
        stored = session.get(Task, plain.json()["id"])
        assert stored is not None and stored.probability_data is None and not stored.wants_probabilities
    # the history does not carry them
    listed = {t["id"]: t for t in client.get(PREDICT, headers=headers).json()}
    assert listed[asked.json()["id"]]["probabilities"] is None

    r = client.get(f"{PREDICT}/{asked.json()['id']}/results.csv", headers=headers)
    assert r.status_code == 200
    table = list(csv.reader(io.StringIO(r.text)))
    names = [f"probability_{c}" for c in classes]
    assert table[0] == ["row", *IRIS, "prediction", *names, "status", "error"]
    at = table[0].index("prediction")
    assert [row[at] for row in table[1:]] == [expected[0], "", expected[1], expected[2]]
    assert table[2][at + 1 : at + 1 + len(classes)] == [""] * len(classes)  # the rejected row
    from_csv = [[float(v) for v in row[at + 1 : at + 1 + len(classes)]] for row in (table[1], table[3], table[4])]
    assert np.allclose(from_csv, kept)
    r = client.get(f"{PREDICT}/{plain.json()['id']}/results.csv", headers=headers)
    assert not any(name.startswith("probability_") for name in next(csv.reader(io.StringIO(r.text))))

    body = client.get(f"{PREDICT}/{asked.json()['id']}/results.json", headers=headers).json()
    assert body["columns"] == table[0]
    assert body["rows"][1][at + 1 : at + 1 + len(classes)] == [None] * len(classes)
    import pyarrow.parquet as pq

    parquet = client.get(f"{PREDICT}/{asked.json()['id']}/results.parquet", headers=headers)
    frame = pq.read_table(io.BytesIO(parquet.content)).to_pandas()
    assert list(frame.columns) == table[0]
    assert np.allclose(frame.loc[[0, 2, 3], names].to_numpy(), kept)


def test_a_csv_upload_asks_for_probabilities_with_a_form_field(client: TestClient, iris: Any) -> None:
    headers = buyer(client)
    text = pd.DataFrame(ROWS, columns=IRIS).to_csv(index=False)
    files = {"file": ("rows.csv", text, "text/csv")}
    r = client.post(PREDICT, data={"model": "iris-logistic", "probabilities": "true"}, files=files, headers=headers)
    assert r.status_code == 202, r.text
    done = finished(client, headers, r.json()["id"])
    check_probabilities(done["probabilities"], done["classes"], done["results"])
    r = client.post(PREDICT, data={"model": "iris-logistic", "probabilities": "maybe"}, files=files, headers=headers)
    assert r.status_code == 422 and "probabilities must be true or false" in r.text
    assert balance(client, headers) == 100 - 2 * len(ROWS)


@pytest.mark.parametrize("runtime", ["onnxruntime", "sklearn"])
def test_an_extreme_value_gives_a_readable_answer_where_the_model_has_no_probability(
    client: TestClient, engine: Engine, iris: Any, runtime: str
) -> None:
    """1e308 overflows the model's arithmetic: the row is still answered (paid for, like any accepted row) and a
    probability the model could not compute reads as null, never a server error."""
    if runtime == "sklearn":
        serve_with_pipeline(engine)
    headers = buyer(client)
    sent = [ROWS[0], {**ROWS[1], "sepal_length_cm": 1e308, "petal_length_cm": -1e308, "petal_width_cm": 1e308}]
    r = client.post(PREDICT, json={"model": "iris-logistic", "rows": sent, "probabilities": True}, headers=headers)
    assert r.status_code == 202, r.text
    done = finished(client, headers, r.json()["id"])
    assert done["status"] == "succeeded", done
    check_probabilities(done["probabilities"][:1], done["classes"], done["results"][:1])
    extreme = done["probabilities"][1]
    assert extreme is None or all(p is None or 0.0 <= p <= 1.0 for p in extreme)
    csv_answer = client.get(f"{PREDICT}/{r.json()['id']}/results.csv", headers=headers)
    assert csv_answer.status_code == 200 and len(csv_answer.text.splitlines()) == 3
    assert balance(client, headers) == 100 - 2 * 2

    values = [[float(sent[1][name]) for name in IRIS]]
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": values}]}
    body["outputs"] = [{"name": "predict"}, {"name": "probabilities"}]
    v2 = client.post("/v2/models/iris-logistic/infer", json=body, headers=headers)
    assert v2.status_code == 200, v2.text
    assert all(p is None or 0.0 <= p <= 1.0 for p in v2.json()["outputs"][1]["data"])
    assert balance(client, headers) == 100 - 2 * 3


def test_a_regressor_asked_for_probabilities_is_refused_and_charges_nothing(
    client: TestClient, publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=3)
    headers = buyer(client)
    r = client.post(
        PREDICT, json={"model": "diabetes-linear", "rows": [DIABETES_ROW], "probabilities": True}, headers=headers
    )
    assert r.status_code == 422
    assert "only classifiers give class probabilities" in r.json()["detail"]
    files = {"file": ("rows.csv", pd.DataFrame([DIABETES_ROW]).to_csv(index=False), "text/csv")}
    r = client.post(PREDICT, data={"model": "diabetes-linear", "probabilities": "true"}, files=files, headers=headers)
    assert r.status_code == 422
    assert balance(client, headers) == 100
    assert client.get(PREDICT, headers=headers).json() == []


# -- the Open Inference Protocol ----------------------------------------------------------------------------


def infer_body(outputs: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": list(SAMPLES.shape), "datatype": "FP64", "data": SAMPLES.ravel().tolist()}]
    }
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return body


@pytest.mark.parametrize("runtime", ["onnxruntime", "sklearn"])
def test_v2_infer_gives_the_probabilities_output_asked_for(
    client: TestClient, engine: Engine, iris: Any, runtime: str
) -> None:
    if runtime == "sklearn":
        serve_with_pipeline(engine)
    headers = buyer(client)
    classes = list(iris.classes_)
    meta = client.get("/v2/models/iris-logistic").json()
    assert meta["platform"] == f"mlmarket-{runtime}"
    assert meta["outputs"][1] == {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes)]}
    url = "/v2/models/iris-logistic/infer"
    expected = iris.predict(pd.DataFrame(SAMPLES, columns=IRIS)).tolist()

    plain = client.post(url, json=infer_body(), headers=headers).json()
    assert [o["name"] for o in plain["outputs"]] == ["predict"]
    only = client.post(url, json=infer_body(["probabilities"]), headers=headers).json()
    assert [o["name"] for o in only["outputs"]] == ["probabilities"]
    tensor = only["outputs"][0]
    assert tensor["datatype"] == "FP64" and tensor["shape"] == [len(SAMPLES), len(classes)]
    assert tensor["parameters"] == {"classes": classes}
    check_probabilities(np.reshape(tensor["data"], tensor["shape"]), classes, expected)

    both = client.post(url, json=infer_body(["predict_proba", "predict"]), headers=headers).json()
    assert [o["name"] for o in both["outputs"]] == ["predict_proba", "predict"]
    assert both["outputs"][1]["data"] == expected == plain["outputs"][0]["data"]
    assert np.allclose(both["outputs"][0]["data"], tensor["data"])
    assert plain["parameters"]["cost"] == only["parameters"]["cost"] == both["parameters"]["cost"] == 2 * 4
    assert balance(client, headers) == 100 - 3 * 8

    task = client.get(f"{PREDICT}/{only['parameters']['task_id']}", headers=headers).json()
    assert task["classes"] == classes and np.allclose(task["probabilities"], np.reshape(tensor["data"], (4, -1)))
    task = client.get(f"{PREDICT}/{plain['parameters']['task_id']}", headers=headers).json()
    assert task["classes"] is None and task["probabilities"] is None


def test_v2_refuses_unknown_outputs_and_probabilities_of_a_regressor_before_charging(
    client: TestClient, iris: Any, publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=3)
    headers = buyer(client)
    r = client.post("/v2/models/iris-logistic/infer", json=infer_body(["scores"]), headers=headers)
    assert r.status_code == 400 and "unknown output 'scores'" in r.json()["error"]
    features = list(DIABETES_ROW)
    body = {
        "inputs": [{"name": name, "shape": [1], "datatype": "FP64", "data": [DIABETES_ROW[name]]} for name in features],
        "outputs": [{"name": "probabilities"}],
    }
    r = client.post("/v2/models/diabetes-linear/infer", json=body, headers=headers)
    assert r.status_code == 400 and "only classifiers give class probabilities" in r.json()["error"]
    meta = client.get("/v2/models/diabetes-linear").json()
    assert [o["name"] for o in meta["outputs"]] == ["predict"]
    assert balance(client, headers) == 100
    assert client.get(PREDICT, headers=headers).json() == []


def test_grpc_infer_gives_probabilities_with_their_classes(live_server: str, settings: Settings, iris: Any) -> None:
    headers = paying_user(live_server, 100)
    metadata = {"authorization": headers["Authorization"]}
    classes = list(iris.classes_)
    expected = iris.predict(pd.DataFrame(SAMPLES, columns=IRIS)).tolist()
    with triton_grpc.InferenceServerClient(url=f"127.0.0.1:{settings.grpc_port}") as client:
        meta = client.get_model_metadata("iris-logistic", as_json=True)
        assert [(o["name"], [int(d) for d in o["shape"]]) for o in meta["outputs"]] == [
            ("predict", [-1]),
            ("probabilities", [-1, len(classes)]),
        ]
        x = triton_grpc.InferInput("input-0", list(SAMPLES.shape), "FP64")
        x.set_data_from_numpy(SAMPLES)
        outputs = [triton_grpc.InferRequestedOutput("predict"), triton_grpc.InferRequestedOutput("probabilities")]
        result = client.infer("iris-logistic", [x], outputs=outputs, headers=metadata)
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict").tolist()]
        assert labels == expected
        matrix = result.as_numpy("probabilities")
        assert matrix is not None
        check_probabilities(matrix, classes, expected)
        tensor = result.get_output("probabilities")  # the protobuf (its as_json form comes back None)
        assert json.loads(tensor.parameters["classes"].string_param) == classes
        assert result.get_response().parameters["cost"].int64_param == 8
        with pytest.raises(InferenceServerException, match="unknown output"):
            client.infer("iris-logistic", [x], outputs=[triton_grpc.InferRequestedOutput("nope")], headers=metadata)
    assert live_balance(live_server, headers) == 100 - 8


def test_tritonclient_http_reads_the_probabilities_output(live_server: str, iris: Any) -> None:
    import tritonclient.http as triton_http

    headers = paying_user(live_server, 100)
    client = triton_http.InferenceServerClient(url=live_server.removeprefix("http://"))
    x = triton_http.InferInput("input-0", list(SAMPLES.shape), "FP64")
    x.set_data_from_numpy(SAMPLES)
    outputs = [triton_http.InferRequestedOutput("predict_proba")]
    result = client.infer("iris-logistic", [x], outputs=outputs, headers=dict(headers))
    matrix = result.as_numpy("predict_proba")
    assert matrix is not None and matrix.shape == (len(SAMPLES), len(iris.classes_))
    check_probabilities(matrix, list(iris.classes_), iris.predict(pd.DataFrame(SAMPLES, columns=IRIS)).tolist())
    assert result.get_output("predict_proba")["parameters"] == {"classes": list(iris.classes_)}
    assert result.as_numpy("predict") is None  # only the outputs asked for
    assert live_balance(live_server, headers) == 100 - 2 * len(SAMPLES)


# -- a coalesced synchronous batch --------------------------------------------------------------------------


def test_in_one_batch_only_the_orders_that_asked_get_probabilities(
    engine: Engine, settings: Settings, iris: Any
) -> None:
    with Session(engine) as session:
        version = session.exec(select(ModelVersion).where(ModelVersion.name == "iris-logistic")).one()
        model = ServedModel.of(version, [version.version])
        payer = users.create_user(session, email=f"{uuid.uuid4().hex[:8]}@example.com", password="password-123")
        ledger.top_up(session, user_id=payer.id or 0, amount=100, idempotency_key=uuid.uuid4().hex)
        payer_id = payer.id or 0
    cache = ModelCache(make_store(settings), max_models=2, max_bytes=10**9)
    predictor = load_predictor(cache, model)
    priced = billing.Priced(model.id, model.name, model.version, model.price_per_row, model.owner_id)

    def order(rows: np.ndarray[Any, Any], asked: bool) -> billing.Order:
        columns = {name: np.ascontiguousarray(rows[:, j]) for j, name in enumerate(IRIS)}
        return billing.Order(
            payer_id, priced, model.model_ref.md5, predictor, model.features, columns, len(rows), probabilities=asked
        )

    bills = billing.serve_and_bill(engine, [order(SAMPLES[:2], True), order(SAMPLES[2:], False)], 70)
    asked, plain = bills
    assert isinstance(asked, billing.Bill) and isinstance(plain, billing.Bill)
    expected = iris.predict(pd.DataFrame(SAMPLES, columns=IRIS)).tolist()
    assert asked.predictions.tolist() == expected[:2] and plain.predictions.tolist() == expected[2:]
    assert asked.classes == list(iris.classes_)
    check_probabilities(asked.probabilities, list(iris.classes_), expected[:2])
    assert plain.probabilities is None and plain.classes is None
    assert asked.cost == plain.cost == 2 * 2
    with Session(engine) as session:
        stored = {t.id: t for t in session.exec(select(Task)).all()}
        assert stored[asked.task_id].probability_data is not None
        assert stored[plain.task_id].probability_data is None and not stored[plain.task_id].wants_probabilities
        assert ledger.verify(session).ok


# -- the Python client --------------------------------------------------------------------------------------


def test_the_python_client_adds_a_probability_column_per_class(live_server: str, iris: Any) -> None:
    from mlmarket_client import Client

    headers = paying_user(live_server, 100)
    frame = pd.DataFrame(SAMPLES, columns=IRIS)
    frame["note"] = "kept"
    classes = list(iris.classes_)
    with Client(live_server, token=headers["Authorization"].removeprefix("Bearer ")) as client:
        scored = client.predict("iris-logistic", frame, probabilities=True)
        names = [f"probability_{c}" for c in classes]
        assert list(scored.columns) == [*IRIS, "note", "prediction", *names]
        expected = iris.predict(frame[IRIS]).tolist()
        assert scored["prediction"].tolist() == expected
        check_probabilities(scored[names].to_numpy(), classes, expected)
        result = client.predict("iris-logistic", ROWS, probabilities=True)
        assert result.classes == classes
        check_probabilities(result.probabilities, classes, result.predictions)
        plain = client.predict("iris-logistic", frame)
        assert list(plain.columns) == [*IRIS, "note", "prediction"]
    assert live_balance(live_server, headers) == 100 - 3 * 2 * len(ROWS)
