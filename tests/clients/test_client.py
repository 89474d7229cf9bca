"""The Python client (clients/python) against a live mlmarket on PostgreSQL, RabbitMQ, S3 and a worker process."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlmarket_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    InsufficientCredits,
    MlmarketError,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    PredictionResult,
    PredictionTimeout,
    PriceChanged,
    ValidationError,
)

from tests.clients.conftest import Credential, Stack, demo_frame, expected_predictions
from tests.http_clients import balance
from tests.real_services import REPO
from tests.samples import DIABETES_ROW

IRIS_ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}

pytestmark = pytest.mark.timeout(120)


def test_a_dataframe_in_gives_a_dataframe_out_with_the_models_own_predictions(stack: Stack) -> None:
    token = stack.buyer(1000)
    frame = demo_frame(stack, "diabetes-linear", 25)  # with its "target" column, which is not a feature
    original = frame.copy()
    with Client(stack.url, token=token) as client:
        out = client.predict("diabetes-linear", frame)
        assert client.balance() == 1000 - 25

    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == [*frame.columns, "prediction"]
    assert out.index.equals(frame.index)
    assert out.drop(columns="prediction").equals(original)
    assert frame.equals(original)  # the caller's frame is left as it was
    assert out["prediction"].tolist() == pytest.approx(expected_predictions(stack, "diabetes-linear", frame), rel=1e-6)


def test_class_labels_come_back_in_the_order_of_the_rows(stack: Stack) -> None:
    frame = demo_frame(stack, "iris-logistic", 30)
    with Client(stack.url, token=stack.buyer(100)) as client:
        out = client.predict("iris-logistic", frame, wait=60)
    assert out["prediction"].tolist() == expected_predictions(stack, "iris-logistic", frame)
    assert (out["prediction"] == out["species"]).mean() > 0.8  # and they are mostly right


def test_rows_in_give_predictions_aligned_with_them_and_an_error_for_each_rejected_row(stack: Stack) -> None:
    token = stack.buyer(100)
    other = {**DIABETES_ROW, "bmi": 0.09}
    rows = [DIABETES_ROW, {**DIABETES_ROW, "bmi": "lots"}, other, {"age": 0.1}]
    with Client(stack.url, token=token) as client:
        result = client.predict("diabetes-linear", rows)
        assert client.balance() == 100 - 2  # the rejected rows cost nothing

    assert isinstance(result, PredictionResult)
    assert len(result.predictions) == 4
    expected = expected_predictions(stack, "diabetes-linear", pd.DataFrame([DIABETES_ROW, other]))
    assert [result.predictions[0], result.predictions[2]] == pytest.approx(expected, rel=1e-6)
    assert result.predictions[1] is None and result.predictions[3] is None
    assert [e.index for e in result.errors] == [1, 3]
    assert "bmi" in result.error_by_row[1] and "missing feature" in result.error_by_row[3]
    assert result.cost == 2


def test_submit_then_stream_the_state_changes_then_get_the_results(stack: Stack) -> None:
    with Client(stack.url, token=stack.buyer(100)) as client:
        task = client.submit("diabetes-linear", [DIABETES_ROW] * 3)
        assert task.status == "queued" and task.cost == 3
        states = [s.status for s in client.stream(task.id)]
        done = client.get(task.id)

    assert states[-1] == "succeeded"
    assert set(states) <= {"queued", "running", "succeeded"} and len(states) == len(set(states))
    assert done.status == "succeeded" and done.results is not None and len(done.results) == 3
    assert done.results[0] == pytest.approx(
        expected_predictions(stack, "diabetes-linear", pd.DataFrame([DIABETES_ROW]))[0]
    )


def test_a_wait_that_runs_out_leaves_the_task_to_follow(stack: Stack) -> None:
    [worker] = stack.workers.procs
    with Client(stack.url, token=stack.buyer(100)) as client:
        worker.send_signal(signal.SIGSTOP)  # the task waits in the queue for as long as the worker is stopped
        try:
            with pytest.raises(PredictionTimeout) as late:
                client.predict("diabetes-linear", [DIABETES_ROW], wait=1.5)
        finally:
            worker.send_signal(signal.SIGCONT)
        states = [s.status for s in client.stream(late.value.task_id)]
        done = client.get(late.value.task_id)
    assert states[-1] == "succeeded"
    assert done.cost == 1 and done.results is not None and len(done.results) == 1


def test_catalog_and_open_inference_protocol(stack: Stack) -> None:
    frame = demo_frame(stack, "iris-logistic", 5)
    with Client(stack.url, token=stack.buyer(100)) as client:
        names = {m.name: m for m in client.models()}
        iris = client.model("iris-logistic")
        answer = client.infer("iris-logistic", frame)
        by_rows = client.infer("iris-logistic", frame.drop(columns="species").to_dict(orient="records"))
        assert client.balance() == 100 - 2 * 10

    assert set(names) >= {"diabetes-linear", "iris-logistic"}
    assert names["iris-logistic"].price_per_row == 2 and names["diabetes-linear"].task == "regression"
    assert iris.feature_names == ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
    assert [v.version for v in iris.versions] == [1]
    assert answer.model_name == "iris-logistic"
    assert answer.predictions == expected_predictions(stack, "iris-logistic", frame) == by_rows.predictions


def test_the_async_twin_predicts_streams_and_raises_the_same(stack: Stack) -> None:
    token = stack.buyer(40)
    frame = demo_frame(stack, "diabetes-linear", 12)

    async def run() -> tuple[pd.DataFrame, list[str], int, MlmarketError]:
        async with AsyncClient(stack.url, token=token) as client:
            out = await client.predict("diabetes-linear", frame)
            task = await client.submit("diabetes-linear", [DIABETES_ROW])
            states = [s.status async for s in client.stream(task.id)]
            left = await client.balance()
            try:
                await client.predict("diabetes-linear", [DIABETES_ROW] * 100)
            except MlmarketError as exc:
                return out, states, left, exc
            raise AssertionError("100 rows at 1 credit were accepted with 27 credits")

    out, states, left, error = asyncio.run(run())
    assert out["prediction"].tolist() == pytest.approx(expected_predictions(stack, "diabetes-linear", frame), rel=1e-6)
    assert states[-1] == "succeeded"
    assert left == 40 - 12 - 1
    assert isinstance(error, InsufficientCredits) and error.status == 402
    assert balance(stack.url, {"Authorization": f"Bearer {token}"}) == 27


def test_errors_are_typed_and_carry_the_status_and_the_servers_message(stack: Stack) -> None:
    token = stack.buyer(5)
    stranger = Client(stack.url, api_key="mlm_not-a-real-key-" + "x" * 32)
    with stranger, pytest.raises(AuthenticationError) as wrong_key:
        stranger.predict("diabetes-linear", [DIABETES_ROW])
    assert wrong_key.value.status == 401 and wrong_key.value.message

    with Client(stack.url, token=token) as client:
        with pytest.raises(NotFound) as unknown:
            client.predict("no-such-model", [DIABETES_ROW])
        assert unknown.value.status == 404 and "no-such-model" in unknown.value.message
        with pytest.raises(NotFound):
            client.model("no-such-model")

        with pytest.raises(PaymentRequired) as poor:
            client.predict("diabetes-linear", [DIABETES_ROW] * 6)
        assert isinstance(poor.value, InsufficientCredits)
        assert poor.value.status == 402 and "balance" in poor.value.message
        assert (poor.value.need, poor.value.have) == (6, 5)

        with pytest.raises(ValidationError) as invalid:
            client.predict("diabetes-linear", [{"age": "old"}])
        assert invalid.value.status == 422 and invalid.value.errors[0]["row"] == 1

        with pytest.raises(PayloadTooLarge) as too_many:
            client.predict("diabetes-linear", [DIABETES_ROW] * (stack.settings.predict_max_rows + 1))
        assert too_many.value.status == 413
        assert client.balance() == 5  # nothing above moved a credit


def test_a_price_cap_below_the_price_is_refused_and_charges_nothing(stack: Stack) -> None:
    if not stack.predictions_accept("max_price_per_row"):
        pytest.skip("this server does not take max_price_per_row yet")
    with Client(stack.url, token=stack.buyer(10)) as client:
        with pytest.raises(PriceChanged) as capped:
            client.predict("iris-logistic", [IRIS_ROW], max_price_per_row=1)
        assert capped.value.status == 409
        assert "2" in capped.value.message  # the current price
        with pytest.raises(PriceChanged):
            client.infer("iris-logistic", [IRIS_ROW], max_price_per_row=1)
        assert client.balance() == 10
        assert client.predict("iris-logistic", [IRIS_ROW], max_price_per_row=2).cost == 2
        assert client.infer("iris-logistic", [IRIS_ROW], max_price_per_row=2).predictions == ["setosa"]
        assert client.balance() == 10 - 2 - 2


def test_a_client_from_the_environment_with_an_api_key(
    stack: Stack, api_key_or_token: Credential, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential = api_key_or_token
    print(f"credential used: {credential.kind}")
    monkeypatch.setenv("MLMARKET_URL", stack.url)
    monkeypatch.setenv("MLMARKET_API_KEY", credential.secret)
    with Client() as client:
        assert client.base_url == stack.url
        assert len(client.predict("diabetes-linear", [DIABETES_ROW, DIABETES_ROW])) == 2
        assert client.balance() == 998
        if credential.kind != "api key":
            return
        assert credential.secret.startswith("mlm_")
        revoked = httpx.delete(
            f"{stack.url}/api/v1/api-keys/{credential.key_id}",
            headers={"Authorization": f"Bearer {credential.owner_token}"},
            timeout=30,
        )
        assert revoked.status_code == 204, revoked.text
        with pytest.raises(AuthenticationError) as refused:
            client.predict("diabetes-linear", [DIABETES_ROW])
        assert refused.value.status == 401
    assert balance(stack.url, {"Authorization": f"Bearer {credential.owner_token}"}) == 998


def test_the_command_line_writes_the_rows_with_their_predictions_as_csv(stack: Stack, tmp_path: Path) -> None:
    frame = demo_frame(stack, "iris-logistic", 8)
    source = tmp_path / "flowers.csv"
    frame.to_csv(source, index=False)
    env = {"MLMARKET_API_KEY": stack.buyer(100), "MLMARKET_URL": stack.url, "PATH": "/usr/bin:/bin"}
    cli = [str(Path(sys.executable).parent / "mlmarket-client")]  # the installed command

    run = subprocess.run(
        [*cli, "predict", "--model", "iris-logistic", str(source)], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    out = pd.read_csv(io.StringIO(run.stdout))
    assert list(out.columns) == [*frame.columns, "prediction"]
    assert out["prediction"].tolist() == expected_predictions(stack, "iris-logistic", frame)
    assert "8 rows predicted, 0 rejected, cost 16 credits" in run.stderr

    listing = subprocess.run([*cli, "models"], env=env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "iris-logistic" in listing.stdout and "diabetes-linear" in listing.stdout

    unknown = subprocess.run(
        [*cli, "predict", "--model", "nope", str(source)], env=env, capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 1 and "404" in unknown.stderr and unknown.stdout == ""


def test_the_readme_examples_run(stack: Stack, tmp_path: Path) -> None:
    readme = (REPO / "clients" / "python" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) >= 3
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(blocks))
    env = {**os.environ, "MLMARKET_URL": stack.url, "MLMARKET_API_KEY": stack.buyer(100)}
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    print(run.stdout)
    assert run.returncode == 0, run.stderr
    assert "diabetes-linear v1: 1 credits per row" in run.stdout
    assert "paid 1 credit(s), 99 left" in run.stdout
    assert "succeeded" in run.stdout
