"""Compiled models: every algorithm's ONNX graph answers like its pipeline, and serving it needs no scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.runtime.algorithms import ALGORITHMS
from app.runtime.compiled import MISSING_STRING, CompiledModel, CompiledModelError
from app.runtime.evaluation import TrainResult
from app.runtime.onnx_export import DOUBLE_RTOL, FLOAT32_RTOL, PROBABILITY_ATOL, compile_pipeline
from app.runtime.schema import Feature
from app.runtime.sharding import merge_shards, train_shard
from app.runtime.training import train

ROOT = Path(__file__).resolve().parents[2]
FAST: dict[str, dict[str, Any]] = {
    "RandomForestRegressor": {"n_estimators": 15, "random_state": 0},
    "RandomForestClassifier": {"n_estimators": 15, "random_state": 0},
    "GradientBoostingRegressor": {"n_estimators": 25, "random_state": 0},
    "LogisticRegression": {"max_iter": 1000},
    "CatBoostClassifier": {"iterations": 30, "random_seed": 0},
    "CatBoostRegressor": {"iterations": 30, "random_seed": 0},
}
TARGET = {"regression": "price", "classification": "grade"}


def houses(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Numbers with gaps, an integer, and a colour (with gaps) that moves the price."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    frame = pd.DataFrame(
        {
            "size": rng.normal(50.0, 10.0, n),
            "weight": rng.normal(0.0, 1.0, n),
            "rooms": rng.integers(1, 6, n),
            "colour": colour,
        }
    )
    bonus = np.select([colour == "red", colour == "green"], [5.0, -3.0], 0.0)
    frame["price"] = 0.5 * frame["size"] + 3 * frame["weight"] + 2 * frame["rooms"] + bonus + rng.normal(0, 1, n)
    frame["grade"] = pd.qcut(frame["price"], 3, labels=["low", "mid", "high"]).astype(str)
    frame.loc[rng.choice(n, 20, replace=False), "size"] = np.nan
    frame.loc[rng.choice(n, 15, replace=False), "colour"] = np.nan
    return frame


def fitted(algorithm: str, frame: pd.DataFrame | None = None, target: str | None = None) -> TrainResult:
    task = ALGORITHMS[algorithm].task
    data = houses() if frame is None else frame
    target = target or TARGET[task]
    data = data.drop(columns=[c for c in TARGET.values() if c != target and c in data])
    return train(data, target, algorithm, FAST.get(algorithm, {}), task)


def api_columns(rows: pd.DataFrame, features: list[Feature]) -> dict[str, np.ndarray[Any, Any]]:
    """One flat array per feature, as the API builds them: float64 numbers, object arrays of str."""
    columns: dict[str, np.ndarray[Any, Any]] = {}
    for f in features:
        if f.type == "string":
            values = [MISSING_STRING if pd.isna(v) else str(v) for v in rows[f.name]]
            columns[f.name] = np.array(values, dtype=object)
        else:
            columns[f.name] = rows[f.name].to_numpy(dtype=np.float64)
    return columns


def classes_of(pipeline: Any) -> list[Any]:
    return [c.item() if isinstance(c, np.generic) else c for c in pipeline.classes_]


def compiled(result: TrainResult, task: str) -> CompiledModel:
    outcome = compile_pipeline(result.pipeline, result.features, task, result.holdout)
    assert outcome.reason is None
    assert outcome.onnx is not None
    assert result.holdout is not None and outcome.checked_rows == len(result.holdout)
    classes = classes_of(result.pipeline) if task == "classification" else None
    model = CompiledModel.load(outcome.onnx, result.features, task, classes)
    assert model.nbytes == len(outcome.onnx)
    return model


def assert_same_answers(result: TrainResult, model: CompiledModel, rows: pd.DataFrame, task: str) -> None:
    columns = api_columns(rows, result.features)
    n = len(rows)
    expected = np.ravel(result.pipeline.predict(rows))
    got = model.predict(columns, n)
    assert got.shape == (n,)
    if task == "regression":
        assert got.dtype == np.float64
        is_catboost = type(result.pipeline.steps[-1][1]).__module__.startswith("catboost")
        tolerance = (FLOAT32_RTOL if is_catboost else DOUBLE_RTOL) * max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
        return
    assert got.tolist() == expected.tolist()
    assert {type(v) for v in got.tolist()} == {type(v) for v in classes_of(result.pipeline)}
    probabilities = model.predict_proba(columns, n)
    assert probabilities.shape == (n, len(result.pipeline.classes_))
    np.testing.assert_allclose(probabilities, result.pipeline.predict_proba(rows), rtol=0, atol=PROBABILITY_ATOL)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_compiles_and_answers_like_its_pipeline(algorithm: str) -> None:
    task = ALGORITHMS[algorithm].task
    result = fitted(algorithm)
    model = compiled(result, task)
    assert result.holdout is not None
    rows = result.holdout.copy()
    assert rows["size"].isna().any() and rows["colour"].isna().any()
    # A colour never seen in training: both ignore it.
    rows.loc[rows.index[:3], "colour"] = "purple"
    assert_same_answers(result, model, rows, task)


@pytest.mark.parametrize("labels", [[0, 1, 2], [False, True]], ids=["int", "bool"])
def test_class_labels_come_back_as_the_pipeline_has_them(labels: list[Any]) -> None:
    frame = houses()
    frame["grade"] = [labels[i % len(labels)] for i in pd.qcut(frame["price"], len(labels), labels=False)]
    result = fitted("RandomForestClassifier", frame)
    assert classes_of(result.pipeline) == labels
    assert result.holdout is not None
    assert_same_answers(result, compiled(result, "classification"), result.holdout, "classification")


@pytest.mark.parametrize(
    "algorithm",
    ["RandomForestRegressor", "RandomForestClassifier", "LinearRegression", "LogisticRegression"],
)
def test_a_merged_sharded_model_compiles(algorithm: str) -> None:
    task = ALGORITHMS[algorithm].task
    frame = houses(240).drop(columns=[c for c in TARGET.values() if c != TARGET[task]])
    args = (frame, TARGET[task], algorithm)
    shards = [
        train_shard(*args, FAST.get(algorithm, {}), task, test_size=0.2, random_state=42, shards=3, index=i)
        for i in range(3)
    ]
    result = merge_shards(*args, task, test_size=0.2, random_state=42, shards=shards)
    if algorithm.startswith("RandomForest"):
        assert len(result.pipeline.named_steps["model"].estimators_) == 3 * FAST[algorithm]["n_estimators"]
    assert result.holdout is not None
    assert_same_answers(result, compiled(result, task), result.holdout, task)


def test_serving_a_compiled_model_imports_neither_scikit_learn_nor_pandas(tmp_path: Path) -> None:
    result = fitted("LogisticRegression")
    outcome = compile_pipeline(result.pipeline, result.features, "classification", result.holdout)
    assert outcome.onnx is not None
    path = tmp_path / "model.onnx"
    path.write_bytes(outcome.onnx)
    rows = pd.DataFrame({"size": [40.0, np.nan], "weight": [0.5, -1.0], "rooms": [2.0, 5.0], "colour": ["red", "teal"]})
    script = """
import json, sys
from pathlib import Path
import numpy as np
from app.runtime.compiled import CompiledModel
from app.runtime.schema import Feature
features = [Feature(**f) for f in json.loads(sys.argv[2])]
model = CompiledModel.load(Path(sys.argv[1]), features, "classification", json.loads(sys.argv[3]))
columns = {
    "size": np.array([40.0, float("nan")]), "weight": np.array([0.5, -1.0]), "rooms": np.array([2.0, 5.0]),
    "colour": np.array(["red", "teal"], dtype=object),
}
labels = model.predict(columns, 2).tolist()
probabilities = model.predict_proba(columns, 2).tolist()
heavy = sorted(m for m in ("sklearn", "pandas", "skl2onnx", "onnx", "scipy", "catboost") if m in sys.modules)
print(json.dumps({"labels": labels, "probabilities": probabilities, "heavy": heavy}))
"""
    features = json.dumps([f.model_dump() for f in result.features])
    run = subprocess.run(
        [sys.executable, "-c", script, str(path), features, json.dumps(classes_of(result.pipeline))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["heavy"] == []
    assert answer["labels"] == result.pipeline.predict(rows).tolist()
    np.testing.assert_allclose(answer["probabilities"], result.pipeline.predict_proba(rows), atol=PROBABILITY_ATOL)


def test_a_regressor_that_answers_differently_is_not_compiled() -> None:
    result = fitted("Ridge")
    honest = result.pipeline.predict
    result.pipeline.predict = lambda x: honest(x) + 1e-3  # type: ignore[method-assign]
    outcome = compile_pipeline(result.pipeline, result.features, "regression", result.holdout)
    assert outcome.onnx is None
    assert outcome.reason is not None and "differs from the pipeline" in outcome.reason
    assert "difference" in outcome.reason and "tolerance" in outcome.reason
    assert outcome.max_abs_error == pytest.approx(1e-3, rel=1e-6)
    assert result.holdout is not None and outcome.checked_rows == len(result.holdout)


def test_a_classifier_whose_probabilities_or_labels_differ_is_not_compiled() -> None:
    result = fitted("RandomForestClassifier")
    honest = result.pipeline.predict_proba
    result.pipeline.predict_proba = lambda x: honest(x)[:, ::-1]  # type: ignore[method-assign]
    outcome = compile_pipeline(result.pipeline, result.features, "classification", result.holdout)
    assert outcome.onnx is None and outcome.reason is not None and "probability of" in outcome.reason

    result.pipeline.predict_proba = honest  # type: ignore[method-assign]
    labels = result.pipeline.predict
    result.pipeline.predict = lambda x: np.where(labels(x) == "low", "high", labels(x))  # type: ignore[method-assign]
    outcome = compile_pipeline(result.pipeline, result.features, "classification", result.holdout)
    assert outcome.onnx is None and outcome.reason is not None and "labels differ" in outcome.reason


def test_a_model_that_cannot_be_compiled_gives_a_reason_instead_of_raising() -> None:
    frame = houses()
    frame["grade"] = frame["price"] > frame["price"].median()
    result = fitted("CatBoostClassifier", frame)
    outcome = compile_pipeline(result.pipeline, result.features, "classification", result.holdout)
    assert outcome.onnx is None
    assert outcome.reason is not None and "CatBoost" in outcome.reason and "False, True" in outcome.reason

    linear = fitted("LinearRegression")
    assert linear.holdout is not None
    empty = compile_pipeline(linear.pipeline, linear.features, "regression", linear.holdout.iloc[:0])
    assert empty.onnx is None and empty.reason is not None and "no held-out rows" in empty.reason


def test_features_keep_their_exact_names_even_when_they_look_like_outputs() -> None:
    frame = houses().rename(columns={"size": "floor area (m2)", "colour": "label", "weight": "probabilities"})
    result = fitted("LogisticRegression", frame)
    model = compiled(result, "classification")
    assert result.holdout is not None
    assert_same_answers(result, model, result.holdout, "classification")


def test_loading_a_graph_for_other_features_is_refused() -> None:
    result = fitted("LinearRegression")
    outcome = compile_pipeline(result.pipeline, result.features, "regression", result.holdout)
    assert outcome.onnx is not None
    wrong = [Feature(name="size", type="string"), *result.features[1:]]
    with pytest.raises(CompiledModelError, match="inputs"):
        CompiledModel.load(outcome.onnx, wrong, "regression", None)
    with pytest.raises(CompiledModelError, match="classifier"):
        CompiledModel.load(outcome.onnx, result.features, "classification", ["a", "b"])
