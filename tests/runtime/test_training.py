"""The algorithm registry: hyperparameter schemas, their checks, and the metrics and report of a training run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split

from app.core.errors import Unprocessable
from app.runtime.algorithms import ALGORITHMS, checked_hyperparameters
from app.runtime.training import train

EXPECTED = {
    "LinearRegression": "regression",
    "Ridge": "regression",
    "RandomForestRegressor": "regression",
    "GradientBoostingRegressor": "regression",
    "LogisticRegression": "classification",
    "RandomForestClassifier": "classification",
    "KNeighborsClassifier": "classification",
    "CatBoostClassifier": "classification",
    "CatBoostRegressor": "regression",
}
FAST = {
    "RandomForestRegressor": {"n_estimators": 20, "random_state": 0},
    "RandomForestClassifier": {"n_estimators": 20, "random_state": 0},
    "GradientBoostingRegressor": {"n_estimators": 30, "random_state": 0},
    "LogisticRegression": {"max_iter": 5000},
    "CatBoostClassifier": {"iterations": 30, "random_seed": 0},
    "CatBoostRegressor": {"iterations": 30, "random_seed": 0},
}


def frame_of(loader: Any) -> pd.DataFrame:
    frame: pd.DataFrame = loader(as_frame=True).frame
    return frame


def test_the_registry_has_every_algorithm_with_a_json_schema() -> None:
    assert {name: a.task for name, a in ALGORITHMS.items()} == EXPECTED
    forest = ALGORITHMS["RandomForestClassifier"].json_schema()
    assert forest["additionalProperties"] is False
    assert forest["properties"]["n_estimators"] == {
        "type": "integer",
        "default": 100,
        "minimum": 1,
        "maximum": 1000,
        "description": "Number of trees",
    }
    assert forest["properties"]["max_depth"]["type"] == ["integer", "null"]
    assert ALGORITHMS["KNeighborsClassifier"].json_schema()["properties"]["weights"]["enum"] == ["uniform", "distance"]


@pytest.mark.parametrize(
    ("algorithm", "hyperparameters", "message"),
    [
        ("Ridge", {"alpha": -1}, "hyperparameter 'alpha' of Ridge must be float (a number from 0 to 1000000), got -1"),
        ("Ridge", {"alpha": "big"}, "hyperparameter 'alpha' of Ridge must be float (a number from 0 to 1000000)"),
        ("RandomForestClassifier", {"n_estimators": 2.5}, "must be int (an integer from 1 to 1000), got 2.5"),
        ("RandomForestClassifier", {"max_depth": 0}, "must be int (an integer from 1 to 100 or null), got 0"),
        ("KNeighborsClassifier", {"weights": "all"}, "must be str (one of 'uniform', 'distance'), got 'all'"),
        ("LinearRegression", {"fit_intercept": 1}, "must be bool (true or false), got 1"),
        ("Ridge", {"kernel": "rbf"}, "Ridge has no hyperparameter 'kernel'; allowed: alpha, fit_intercept"),
        ("SVC", {}, "unknown algorithm 'SVC'"),
    ],
)
def test_a_bad_hyperparameter_names_the_parameter_and_what_is_allowed(
    algorithm: str, hyperparameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(Unprocessable) as caught:
        checked_hyperparameters(algorithm, hyperparameters)
    assert message in caught.value.detail


def dataset_for(algorithm: str) -> tuple[pd.DataFrame, str]:
    if EXPECTED[algorithm] == "regression":
        return frame_of(load_diabetes), "target"
    if algorithm in ("LogisticRegression", "CatBoostClassifier"):
        return frame_of(load_breast_cancer), "target"  # binary: ROC AUC is reported
    return frame_of(load_wine), "target"


@pytest.mark.parametrize("algorithm", list(EXPECTED))
def test_each_algorithm_trains_and_reports_the_metrics_of_its_split(algorithm: str) -> None:
    frame, target = dataset_for(algorithm)
    task = EXPECTED[algorithm]
    result = train(frame, target, algorithm, FAST.get(algorithm, {}), task, test_size=0.25, random_state=7)  # type: ignore[arg-type]

    x = frame.drop(columns=target)
    y = frame[target] if task == "classification" else frame[target].astype(float)
    _, x_test, _, y_test = train_test_split(
        x, y, test_size=0.25, random_state=7, stratify=y if task == "classification" else None
    )
    predicted = np.asarray(result.pipeline.predict(x_test)).reshape(len(x_test), -1)[:, 0]
    m = result.metrics
    if task == "regression":
        assert m["test_r2"] == pytest.approx(r2_score(y_test, predicted))
        assert m["test_mse"] == pytest.approx(mean_squared_error(y_test, predicted))
        assert m["test_mae"] == pytest.approx(mean_absolute_error(y_test, predicted))
        assert {"train_r2", "train_mse", "train_mae"} <= set(m)
    else:
        assert m["test_accuracy"] == pytest.approx(accuracy_score(y_test, predicted))
        assert m["test_precision"] == pytest.approx(precision_score(y_test, predicted, average="macro"))
        assert m["test_recall"] == pytest.approx(recall_score(y_test, predicted, average="macro"))
        assert m["test_f1"] == pytest.approx(f1_score(y_test, predicted, average="macro"))
        matrix = np.asarray(result.report["confusion_matrix"])
        assert matrix.sum() == len(x_test) and np.trace(matrix) == round(m["test_accuracy"] * len(x_test))
        if y.nunique() == 2:
            proba = result.pipeline.predict_proba(x_test)[:, 1]
            assert m["test_roc_auc"] == pytest.approx(roc_auc_score(y_test, proba))
        else:
            assert "test_roc_auc" not in m
    importance = result.report["feature_importance"]
    assert set(importance["values"]) == set(x.columns)
    assert importance["method"] == ("native" if "Forest" in algorithm or "Boost" in algorithm else "permutation")
