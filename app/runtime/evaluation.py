"""Evaluation of a fitted pipeline: metrics on both splits, confusion matrix, ROC AUC and feature importance."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline

from app.runtime.algorithms import Task
from app.runtime.model import flat
from app.runtime.pipelines import PreparedData, Split
from app.runtime.schema import Feature


@dataclass
class TrainResult:
    pipeline: Pipeline
    features: list[Feature]
    metrics: dict[str, float]
    # Confusion matrix, classes, feature importance, row counts and durations: what a report shows.
    report: dict[str, Any] = field(default_factory=dict)
    # The held-out rows the metrics were scored on: what a compiled model is checked against.
    holdout: pd.DataFrame | None = None


def _scores(task: Task, truth: Any, predicted: Any) -> dict[str, float]:
    if task == "regression":
        return {
            "r2": float(r2_score(truth, predicted)),
            "mse": float(mean_squared_error(truth, predicted)),
            "mae": float(mean_absolute_error(truth, predicted)),
        }
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "precision": float(precision_score(truth, predicted, average="macro", zero_division=0)),
        "recall": float(recall_score(truth, predicted, average="macro", zero_division=0)),
        "f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }


def _roc_auc(pipeline: Pipeline, x: pd.DataFrame, truth: Any) -> float | None:
    """ROC AUC of a binary classifier (the second class is the positive one); None when it does not apply."""
    classes = list(getattr(pipeline, "classes_", []))
    if len(classes) != 2 or not hasattr(pipeline, "predict_proba") or pd.Series(truth).nunique() != 2:
        return None
    scores = np.asarray(pipeline.predict_proba(x))[:, 1]
    return float(roc_auc_score(np.asarray(truth) == classes[1], scores))


def plain_label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _output_owners(pipeline: Pipeline) -> list[str]:
    """For each column the preprocessing puts out, the input feature it comes from."""
    owners: list[str] = []
    for name, transformer, columns in pipeline.named_steps["preprocess"].transformers_:
        if name == "numeric":
            owners.extend(columns)
        elif name == "strings":
            encoder = transformer.named_steps["encode"]
            for column, categories in zip(columns, encoder.categories_, strict=True):
                owners.extend([column] * len(categories))
    return owners


def feature_importance(
    pipeline: Pipeline, features: Sequence[Feature], x: pd.DataFrame, y: Any, random_state: int
) -> tuple[str, dict[str, float]]:
    """Native importances of tree models (summed over one-hot columns), else permutation importance on ``x``."""
    estimator = pipeline.named_steps["model"]
    native = getattr(estimator, "feature_importances_", None)
    if native is not None:
        owners = _output_owners(pipeline)
        values = np.asarray(native, dtype=float)
        if len(owners) == len(values):
            totals = {f.name: 0.0 for f in features}
            for owner, value in zip(owners, values, strict=True):
                totals[owner] += float(value)
            whole = sum(totals.values()) or 1.0
            return "native", {k: v / whole for k, v in totals.items()}
    result = permutation_importance(pipeline, x, y, n_repeats=5, random_state=random_state, n_jobs=1)
    return "permutation", {f.name: float(v) for f, v in zip(features, result.importances_mean, strict=True)}


def evaluate(
    pipeline: Pipeline, data: PreparedData, split: Split, random_state: int, *, fit_seconds: float = 0.0
) -> TrainResult:
    """Metrics on both splits, and the report: confusion matrix, ROC AUC, feature importance, durations."""
    started = time.perf_counter()
    task = data.task
    predicted_train = flat(pipeline.predict(split.x_train))
    predicted_test = flat(pipeline.predict(split.x_test))
    metrics = {f"train_{k}": v for k, v in _scores(task, split.y_train, predicted_train).items()}
    metrics.update({f"test_{k}": v for k, v in _scores(task, split.y_test, predicted_test).items()})
    report: dict[str, Any] = {"rows": {"train": len(split.x_train), "test": len(split.x_test)}}
    if task == "classification":
        classes = [plain_label(c) for c in getattr(pipeline, "classes_", sorted(data.y.unique()))]
        report["classes"] = classes
        report["confusion_matrix"] = confusion_matrix(split.y_test, predicted_test, labels=classes).tolist()
        for name, x, y in (("train", split.x_train, split.y_train), ("test", split.x_test, split.y_test)):
            auc = _roc_auc(pipeline, x, y)
            if auc is not None:
                metrics[f"{name}_roc_auc"] = auc
    method, importance = feature_importance(pipeline, data.features, split.x_test, split.y_test, random_state)
    report["feature_importance"] = {"method": method, "values": importance}
    report["durations"] = {"fit_seconds": fit_seconds, "evaluate_seconds": time.perf_counter() - started}
    return TrainResult(pipeline=pipeline, features=data.features, metrics=metrics, report=report, holdout=split.x_test)
