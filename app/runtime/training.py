"""Training: scikit-learn pipelines built from a feature schema, and the demo models of the default catalog.

Every pipeline takes a pandas DataFrame whose columns are the features: numeric
columns are imputed (and scaled for the linear and distance-based estimators),
string columns are imputed and one-hot encoded, ignoring categories unseen in
training.

This module imports scikit-learn and pandas; the registry of algorithms and the
checks of hyperparameters live in :mod:`app.runtime.algorithms`, which the API
imports without them (re-exported here for the training code).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.impute import SimpleImputer
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
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from app.core.errors import Unprocessable
from app.runtime.algorithms import ALGORITHMS as ALGORITHMS
from app.runtime.algorithms import Algorithm as Algorithm
from app.runtime.algorithms import Task as Task
from app.runtime.algorithms import checked_hyperparameters as checked_hyperparameters
from app.runtime.model import flat
from app.runtime.schema import Feature

MAX_CATEGORIES_RECORDED = 100


def _checked_hyperparameters(algorithm: Algorithm, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of the algorithm: the user's, checked, over the defaults."""
    given = checked_hyperparameters(algorithm, hyperparameters)
    return {**{k: p.default for k, p in algorithm.hyperparameters.items()}, **given}


def build_pipeline(
    algorithm: str, hyperparameters: dict[str, Any], features: Sequence[Feature], task: Task
) -> Pipeline:
    """A pipeline of preprocessing for ``features`` and the estimator, not yet fitted."""
    spec = ALGORITHMS.get(algorithm)
    if spec is None:
        raise Unprocessable(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if spec.task != task:
        raise Unprocessable(f"{algorithm} is a {spec.task} algorithm, not {task}")
    if not features:
        raise Unprocessable("a model needs at least one feature")
    try:
        estimator = spec.estimator(**_checked_hyperparameters(spec, hyperparameters))
    except (TypeError, ValueError) as exc:
        raise Unprocessable(f"invalid hyperparameters for {algorithm}: {exc}") from exc

    numeric = [f.name for f in features if f.type != "string"]
    strings = [f.name for f in features if f.type == "string"]
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if spec.scaled:
        numeric_steps.append(("scale", StandardScaler()))
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if strings:
        encode = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("encode", OneHotEncoder(handle_unknown="ignore")),
            ]
        )
        transformers.append(("strings", encode, strings))
    preprocess = ColumnTransformer(transformers, remainder="drop")
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def infer_features(df: pd.DataFrame, target: str) -> list[Feature]:
    """The schema of every column but ``target``: integers, numbers, or strings (with their categories)."""
    if target not in df.columns:
        raise Unprocessable(
            f"the target column {target!r} is not in the data (columns: {', '.join(map(str, df.columns))})"
        )
    features = []
    for column in df.columns:
        if column == target:
            continue
        series = df[column]
        name = str(column)
        if pd.api.types.is_bool_dtype(series):
            features.append(Feature(name=name, type="string", categories=["False", "True"]))
        elif pd.api.types.is_integer_dtype(series):
            features.append(Feature(name=name, type="integer"))
        elif pd.api.types.is_numeric_dtype(series):
            features.append(Feature(name=name, type="number"))
        else:
            values = sorted({str(v).strip() for v in series.dropna()})
            categories = values if len(values) <= MAX_CATEGORIES_RECORDED else None
            features.append(Feature(name=name, type="string", categories=categories))
    if not features:
        raise Unprocessable("the data has no feature column besides the target")
    return features


@dataclass
class TrainResult:
    pipeline: Pipeline
    features: list[Feature]
    metrics: dict[str, float]
    # Confusion matrix, classes, feature importance, row counts and durations: what a report shows.
    report: dict[str, Any] = field(default_factory=dict)
    # The held-out rows the metrics were scored on: what a compiled model is checked against.
    holdout: pd.DataFrame | None = None


def _frame_for(df: pd.DataFrame, features: Sequence[Feature]) -> pd.DataFrame:
    frame = df[[f.name for f in features]].copy()
    for f in features:
        if f.type == "string":
            frame[f.name] = frame[f.name].map(lambda v: v if pd.isna(v) else str(v).strip())
        else:
            frame[f.name] = pd.to_numeric(frame[f.name], errors="coerce")
    return frame


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


def _plain_label(value: Any) -> Any:
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


def train(
    df: pd.DataFrame,
    target: str,
    algorithm: str,
    hyperparameters: dict[str, Any],
    task: Task,
    test_size: float = 0.2,
    random_state: int = 42,
) -> TrainResult:
    """Fits the pipeline on a train split and scores it on both splits (``train_r2``, ``test_accuracy``, …)."""
    data = prepare(df, target, task)
    split = split_data(data, test_size, random_state)
    pipeline = build_pipeline(algorithm, hyperparameters, data.features, task)
    started = time.perf_counter()
    try:
        pipeline.fit(split.x_train, split.y_train)
    except ValueError as exc:
        raise Unprocessable(f"{algorithm} could not be trained on this data: {exc}") from exc
    fit_seconds = time.perf_counter() - started
    return evaluate(pipeline, data, split, random_state, fit_seconds=fit_seconds)


@dataclass
class PreparedData:
    features: list[Feature]
    x: pd.DataFrame
    y: pd.Series
    task: Task


@dataclass
class Split:
    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


def prepare(df: pd.DataFrame, target: str, task: Task) -> PreparedData:
    """The features and the target of a data frame, checked for the task."""
    features = infer_features(df, target)
    data = df.dropna(subset=[target])
    if len(data) < 5:
        raise Unprocessable(f"need at least 5 rows with a value for {target!r} to train, got {len(data)}")
    y = data[target]
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise Unprocessable(f"the target {target!r} must be numeric for regression")
        y = y.astype(float)
    else:
        y = y.map(lambda v: v if isinstance(v, bool | int) else str(v).strip())
        if y.nunique() < 2:
            raise Unprocessable(f"the target {target!r} needs at least two classes for classification")
    return PreparedData(features=features, x=_frame_for(data, features), y=y, task=task)


def split_data(data: PreparedData, test_size: float, random_state: int) -> Split:
    """The train/test split every job uses: stratified for classification when every class has two rows."""
    stratify = data.y if data.task == "classification" and data.y.value_counts().min() >= 2 else None
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            data.x, data.y, test_size=test_size, random_state=random_state, stratify=stratify
        )
    except ValueError as exc:
        raise Unprocessable(f"cannot split the data with test_size={test_size}: {exc}") from exc
    return Split(x_train, x_test, y_train, y_test)


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
        classes = [_plain_label(c) for c in getattr(pipeline, "classes_", sorted(data.y.unique()))]
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


# -- sharded training -------------------------------------------------------------------------------------


MIN_ROWS_PER_SHARD = 5


@dataclass
class ShardResult:
    """One shard's pipeline: the preprocessing fitted on the whole training part, the estimator on the shard."""

    pipeline: Pipeline
    rows: int
    fit_seconds: float
    features: list[Feature] = field(default_factory=list)


def shard_positions(y_train: pd.Series, shards: int, task: Task) -> list[np.ndarray[Any, Any]]:
    """Positions (in the training part) of the rows of each shard.

    The training part is already shuffled by the split. Regression rows are cut into ``shards`` contiguous
    runs; classification rows are dealt out class by class, so every shard holds every class (the merged
    trees and coefficients must all speak of the same classes).
    """
    n = len(y_train)
    if n < shards * MIN_ROWS_PER_SHARD:
        raise Unprocessable(
            f"the training part has {n} rows: too few for {shards} shards of at least {MIN_ROWS_PER_SHARD} rows; "
            "use fewer shards"
        )
    if task == "regression":
        return [np.asarray(p) for p in np.array_split(np.arange(n), shards)]
    labels = list(y_train)
    counts = pd.Series(labels).value_counts()
    short = counts[counts < shards]
    if len(short):
        label, count = _plain_label(short.index[0]), int(short.iloc[0])
        raise Unprocessable(
            f"class {label!r} has {count} rows in the training part, fewer than the {shards} shards; "
            "every shard needs every class: use fewer shards"
        )
    offset = {label: rank for rank, label in enumerate(sorted(counts.index, key=str))}
    seen: dict[Any, int] = {}
    assigned: list[list[int]] = [[] for _ in range(shards)]
    for position, label in enumerate(labels):
        k = seen.get(label, 0)
        seen[label] = k + 1
        assigned[(k + offset[label]) % shards].append(position)
    return [np.asarray(p) for p in assigned]


def train_shard(
    df: pd.DataFrame,
    target: str,
    algorithm: str,
    hyperparameters: dict[str, Any],
    task: Task,
    test_size: float,
    random_state: int,
    shards: int,
    index: int,
) -> ShardResult:
    """Fits shard ``index`` of ``shards``: the split every job uses, then this shard's part of the training rows.

    The preprocessing is fitted on the whole training part, not on the shard: median imputation, scaling and
    one-hot encoding are deterministic functions of those rows, so every shard ends with the same
    preprocessing (the merge checks that it does) and the merged estimators all read the same columns.
    """
    spec = ALGORITHMS.get(algorithm)
    if spec is None or spec.merge is None:
        raise Unprocessable(f"{algorithm} cannot be trained in shards")
    data = prepare(df, target, task)
    split = split_data(data, test_size, random_state)
    positions = shard_positions(split.y_train, shards, task)[index]
    pipeline = build_pipeline(algorithm, hyperparameters, data.features, task)
    started = time.perf_counter()
    try:
        preprocess = pipeline.named_steps["preprocess"].fit(split.x_train, split.y_train)
        pipeline.named_steps["model"].fit(
            preprocess.transform(split.x_train.iloc[positions]), split.y_train.iloc[positions]
        )
    except ValueError as exc:
        raise Unprocessable(f"{algorithm} could not be trained on shard {index + 1} of this data: {exc}") from exc
    return ShardResult(
        pipeline=pipeline, rows=len(positions), fit_seconds=time.perf_counter() - started, features=data.features
    )


def _same_output(a: Any, b: Any) -> bool:
    if hasattr(a, "toarray"):
        a = a.toarray()
    if hasattr(b, "toarray"):
        b = b.toarray()
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def merge_estimators(algorithm: str, estimators: Sequence[Any], rows: Sequence[int]) -> Any:
    """One estimator from the shards': the union of the trees, or the row-weighted average of the coefficients."""
    spec = ALGORITHMS.get(algorithm)
    if spec is None or spec.merge is None:
        raise Unprocessable(f"{algorithm} cannot be trained in shards")
    if not estimators or len(estimators) != len(rows):
        raise ValueError("need one row count per shard estimator")
    first = estimators[0]
    classes = getattr(first, "classes_", None)
    for other in estimators[1:]:
        if classes is not None and not np.array_equal(classes, other.classes_):
            raise Unprocessable("the shards saw different classes and cannot be merged")
    merged = copy.deepcopy(first)
    if spec.merge == "trees":
        merged.estimators_ = [tree for e in estimators for tree in e.estimators_]
        merged.n_estimators = len(merged.estimators_)
        return merged
    weights = np.asarray(rows, dtype=float) / float(sum(rows))
    merged.coef_ = sum(w * np.asarray(e.coef_, dtype=float) for w, e in zip(weights, estimators, strict=True))
    intercept = sum(w * np.asarray(e.intercept_, dtype=float) for w, e in zip(weights, estimators, strict=True))
    merged.intercept_ = float(intercept) if np.ndim(first.intercept_) == 0 else intercept
    return merged


def merge_shards(
    df: pd.DataFrame,
    target: str,
    algorithm: str,
    task: Task,
    test_size: float,
    random_state: int,
    shards: Sequence[ShardResult],
) -> TrainResult:
    """The merged model of a sharded job, evaluated on the test part of the same split like any job."""
    data = prepare(df, target, task)
    split = split_data(data, test_size, random_state)
    first = shards[0].pipeline.named_steps["preprocess"]
    x_all = pd.concat([split.x_train, split.x_test])
    reference = first.transform(x_all)
    for number, shard in enumerate(shards[1:], start=2):
        if not _same_output(reference, shard.pipeline.named_steps["preprocess"].transform(x_all)):
            raise Unprocessable(f"shard {number} was preprocessed differently from shard 1 and cannot be merged")
    started = time.perf_counter()
    estimator = merge_estimators(algorithm, [s.pipeline.named_steps["model"] for s in shards], [s.rows for s in shards])
    pipeline = Pipeline([("preprocess", first), ("model", estimator)])
    merge_seconds = time.perf_counter() - started
    result = evaluate(pipeline, data, split, random_state, fit_seconds=sum(s.fit_seconds for s in shards))
    result.report["durations"]["merge_seconds"] = merge_seconds
    result.report["shards"] = [{"rows": s.rows, "fit_seconds": s.fit_seconds} for s in shards]
    return result


@dataclass(frozen=True)
class DemoModelSpec:
    name: str
    description: str
    task: Task
    algorithm: str
    hyperparameters: dict[str, Any]
    price_per_row: int
    target: str
    load_frame: Callable[[], pd.DataFrame]

    def dataset(self) -> tuple[pd.DataFrame, str]:
        """The training data and the name of its target column."""
        return self.load_frame(), self.target

    def train(self) -> TrainResult:
        return train(self.load_frame(), self.target, self.algorithm, self.hyperparameters, self.task)


def _diabetes() -> pd.DataFrame:
    frame: pd.DataFrame = load_diabetes(as_frame=True).frame
    return frame


def _iris() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame: pd.DataFrame = bunch.frame.copy()
    # Class names as the target, so predictions read "setosa" rather than 0.
    frame["species"] = [str(bunch.target_names[i]) for i in frame.pop("target")]
    frame.columns = [str(c).replace(" (cm)", "_cm").replace(" ", "_") for c in frame.columns]
    return frame


def demo_models() -> list[DemoModelSpec]:
    """The default catalog, trained from datasets scikit-learn ships (nothing is downloaded)."""
    return [
        DemoModelSpec(
            name="diabetes-linear",
            description="Diabetes progression after one year (linear regression on 10 standardised measurements).",
            task="regression",
            algorithm="LinearRegression",
            hyperparameters={},
            price_per_row=1,
            target="target",
            load_frame=_diabetes,
        ),
        DemoModelSpec(
            name="diabetes-forest",
            description="Diabetes progression after one year (random forest on 10 standardised measurements).",
            task="regression",
            algorithm="RandomForestRegressor",
            hyperparameters={"n_estimators": 50, "max_depth": 8, "random_state": 42},
            price_per_row=2,
            target="target",
            load_frame=_diabetes,
        ),
        DemoModelSpec(
            name="iris-logistic",
            description="Iris species from sepal and petal sizes in cm (logistic regression).",
            task="classification",
            algorithm="LogisticRegression",
            hyperparameters={"max_iter": 500},
            price_per_row=1,
            target="species",
            load_frame=_iris,
        ),
        DemoModelSpec(
            name="iris-forest",
            description="Iris species from sepal and petal sizes in cm (random forest).",
            task="classification",
            algorithm="RandomForestClassifier",
            hyperparameters={"n_estimators": 50, "random_state": 42},
            price_per_row=3,
            target="species",
            load_frame=_iris,
        ),
    ]
