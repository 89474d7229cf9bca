"""Pipelines: the scikit-learn preprocessing and estimator built from a feature schema, and the data they fit.

Every pipeline takes a pandas DataFrame whose columns are the features: numeric
columns are imputed (and scaled for the linear and distance-based estimators),
string columns are imputed and one-hot encoded, ignoring categories unseen in
training.

This module imports scikit-learn and pandas; the registry of algorithms and the
checks of hyperparameters live in :mod:`app.runtime.algorithms`, which the API
imports without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from app.core.errors import Unprocessable
from app.runtime.algorithms import ALGORITHMS, Algorithm, Task, checked_hyperparameters
from app.runtime.schema import MAX_STRING_LENGTH, Feature, check_text

MAX_CATEGORIES_RECORDED = 100
# Significant digits of the example of a number feature: 5.8, not 5.800000000000001.
EXAMPLE_DIGITS = 4


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


def _number_profile(series: pd.Series, integer: bool) -> dict[str, Any]:
    """The finite range of a numeric column and its median (a whole number for integers, else 4 significant
    digits); empty when the column has no finite value."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values)]
    if not len(values):
        return {}
    median = float(np.median(values))
    example: float | int = round(median) if integer else float(f"{median:.{EXAMPLE_DIGITS}g}")
    return {"minimum": float(values.min()), "maximum": float(values.max()), "example": example}


def _most_frequent(values: pd.Series) -> str | None:
    """The most frequent value (the first in sorted order on a tie), when it is fit to show in a form."""
    counts = values.value_counts()
    if counts.empty:
        return None
    top = sorted(str(v) for v in counts.index[counts == counts.iloc[0]])[0]
    return top if top and check_text(top, MAX_STRING_LENGTH) is None else None


def infer_features(df: pd.DataFrame, target: str) -> list[Feature]:
    """The schema of every column but ``target``: integers, numbers, or strings (with their categories), each with
    its profile in the data (the range of numbers, a typical value)."""
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
            example = _most_frequent(series.dropna().map(str))
            features.append(Feature(name=name, type="string", categories=["False", "True"], example=example))
        elif pd.api.types.is_integer_dtype(series):
            features.append(Feature(name=name, type="integer", **_number_profile(series, integer=True)))
        elif pd.api.types.is_numeric_dtype(series):
            features.append(Feature(name=name, type="number", **_number_profile(series, integer=False)))
        else:
            texts = series.dropna().map(lambda v: str(v).strip())
            values = sorted(set(texts))
            categories = values if len(values) <= MAX_CATEGORIES_RECORDED else None
            features.append(Feature(name=name, type="string", categories=categories, example=_most_frequent(texts)))
    if not features:
        raise Unprocessable("the data has no feature column besides the target")
    return features


def _frame_for(df: pd.DataFrame, features: Sequence[Feature]) -> pd.DataFrame:
    frame = df[[f.name for f in features]].copy()
    for f in features:
        if f.type == "string":
            frame[f.name] = frame[f.name].map(lambda v: v if pd.isna(v) else str(v).strip())
        else:
            frame[f.name] = pd.to_numeric(frame[f.name], errors="coerce")
    return frame


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
