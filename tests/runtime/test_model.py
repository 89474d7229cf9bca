"""Demo models: trained, saved as skops artifacts, loaded back, and predicting exactly as in memory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from app.core.errors import Unprocessable
from app.runtime.algorithms import ALGORITHMS
from app.runtime.evaluation import TrainResult
from app.runtime.model import ModelLoadError, ModelRuntime, UntrustedModelError, is_trusted_type, save_artifact
from app.runtime.pipelines import build_pipeline
from app.runtime.training import train
from app.services.demo import DemoModelSpec, demo_models

DEMO = {spec.name: spec for spec in demo_models()}


class Backdoor:
    """A class from outside the trusted packages, as a malicious artifact would carry."""

    def predict(self, x: object) -> list[int]:
        return [0]


@pytest.fixture(scope="module")
def trained() -> dict[str, TrainResult]:
    return {name: spec.train() for name, spec in DEMO.items()}


def test_demo_catalog_is_described() -> None:
    assert set(DEMO) == {"diabetes-linear", "diabetes-forest", "iris-logistic", "iris-forest"}
    for spec in DEMO.values():
        assert isinstance(spec.price_per_row, int) and 1 <= spec.price_per_row <= 3
        assert ALGORITHMS[spec.algorithm].task == spec.task
        df, target = spec.dataset()
        assert target in df.columns and len(df) > 100


@pytest.mark.parametrize("name", sorted(DEMO))
def test_saved_model_predicts_like_the_trained_one(name: str, trained: dict[str, TrainResult], tmp_path: Path) -> None:
    spec: DemoModelSpec = DEMO[name]
    result = trained[name]
    path = tmp_path / "model.skops"
    save_artifact(result.pipeline, path, result.features)

    runtime = ModelRuntime.load(path)
    assert runtime.task == spec.task
    assert runtime.features == result.features

    df, target = spec.dataset()
    sample = df.drop(columns=[target]).head(25)
    rows = [{f.name: float(record[f.name]) for f in runtime.features} for record in sample.to_dict("records")]
    predictions = runtime.predict(rows)

    expected = result.pipeline.predict(sample).tolist()
    assert predictions == expected
    json.dumps(predictions, allow_nan=False)  # plain JSON values
    if spec.task == "classification":
        assert runtime.classes == ["setosa", "versicolor", "virginica"]
        assert set(predictions) <= {"setosa", "versicolor", "virginica"}
        assert result.metrics["test_accuracy"] > 0.8
        probabilities = runtime.predict_proba(rows[:3])
        assert all(abs(sum(p.values()) - 1) < 1e-9 for p in probabilities)
    else:
        assert all(isinstance(p, float) for p in predictions)
        assert result.metrics["test_r2"] > 0.3
        with pytest.raises(Unprocessable, match="probabilities"):
            runtime.predict_proba(rows[:1])


def test_string_features_are_one_hot_encoded_and_unknown_categories_ignored(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame(
        {
            "colour": ["red", "blue", "red", "green", "blue", "red", "green", "blue"] * 3,
            "size": [1, 2, 3, 4, 5, 6, 7, 8] * 3,
            "price": [10.0, 20.0, 11.0, 30.0, 21.0, 12.0, 31.0, 22.0] * 3,
        }
    )
    result = train(df, "price", "Ridge", {"alpha": 0.5}, "regression")
    assert [(f.name, f.type) for f in result.features] == [("colour", "string"), ("size", "integer")]
    assert result.features[0].categories == ["blue", "green", "red"]
    save_artifact(result.pipeline, tmp_path / "m.skops", result.features)
    runtime = ModelRuntime.load(tmp_path / "m.skops")
    [known, unknown] = runtime.predict([{"colour": "red", "size": 1}, {"colour": "purple", "size": 1}])
    assert isinstance(known, float) and isinstance(unknown, float)


def test_pipelines_scale_only_for_linear_and_distance_models() -> None:
    features = demo_models()[0].train().features
    assert (
        "scale"
        in build_pipeline("KNeighborsClassifier", {}, features, "classification")
        .named_steps["preprocess"]
        .transformers[0][1]
        .named_steps
    )
    assert (
        "scale"
        not in build_pipeline("RandomForestRegressor", {}, features, "regression")
        .named_steps["preprocess"]
        .transformers[0][1]
        .named_steps
    )


@pytest.mark.parametrize(
    ("algorithm", "hyperparameters", "task", "message"),
    [
        ("SVC", {}, "classification", "unknown algorithm"),
        ("Ridge", {}, "classification", "is a regression algorithm"),
        ("Ridge", {"alpha": "big"}, "regression", "must be float"),
        ("Ridge", {"kernel": "rbf"}, "regression", "has no hyperparameter 'kernel'"),
        ("RandomForestRegressor", {"n_estimators": 0}, "regression", r"must be int \(an integer from 1 to 1000\)"),
    ],
)
def test_bad_training_requests_are_unprocessable(
    algorithm: str, hyperparameters: dict[str, object], task: str, message: str
) -> None:
    df, target = DEMO["diabetes-linear"].dataset()
    with pytest.raises(Unprocessable, match=message):
        train(df.head(40), target, algorithm, hyperparameters, task)  # type: ignore[arg-type]


def _write_untrusted(path: Path, payload: object) -> None:
    sio.dump(payload, path)


def test_artifact_with_a_custom_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.skops"
    _write_untrusted(
        path, {"format": "mlmarket-model/1", "estimator": Backdoor(), "features": [], "task": "regression"}
    )
    with pytest.raises(UntrustedModelError, match="Backdoor"):
        ModelRuntime.load(path)


def test_artifact_referencing_os_system_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.skops"
    estimator = FunctionTransformer(func=os.system)
    _write_untrusted(path, {"format": "mlmarket-model/1", "estimator": estimator, "features": [], "task": "x"})
    with pytest.raises(UntrustedModelError, match="system"):
        ModelRuntime.load(path)


def test_artifact_referencing_builtins_eval_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.skops"
    _write_untrusted(path, {"format": "mlmarket-model/1", "estimator": FunctionTransformer(func=eval), "features": []})
    with pytest.raises(UntrustedModelError, match=r"builtins\.eval"):
        ModelRuntime.load(path)


def test_trusted_types_are_classes_of_the_scientific_stack() -> None:
    assert is_trusted_type("sklearn.tree._tree.Tree")
    assert is_trusted_type("numpy.dtype")
    assert is_trusted_type("numpy.log")  # a ufunc
    assert is_trusted_type("builtins.slice")
    assert not is_trusted_type("builtins.exec")
    assert not is_trusted_type("numpy.load")  # a function that reads files
    assert not is_trusted_type("posix.system")
    assert not is_trusted_type("pandas.core.frame.DataFrame")
    assert not is_trusted_type("sklearn.no.such.Thing")


def test_files_that_are_not_model_artifacts_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.skops"
    garbage.write_bytes(os.urandom(64))
    with pytest.raises(ModelLoadError, match="not a skops model artifact"):
        ModelRuntime.load(garbage)

    bare = tmp_path / "bare.skops"
    sio.dump({"estimator": np.arange(3)}, bare)
    with pytest.raises(ModelLoadError, match="not an mlmarket model artifact"):
        ModelRuntime.load(bare)


def test_predicting_no_rows_gives_no_predictions(trained: dict[str, TrainResult], tmp_path: Path) -> None:
    result = trained["iris-forest"]
    save_artifact(result.pipeline, tmp_path / "m.skops", result.features)
    assert ModelRuntime.load(tmp_path / "m.skops").predict([]) == []
