"""Training: scikit-learn pipelines built from a feature schema, and the demo models of the default catalog.

Every pipeline takes a pandas DataFrame whose columns are the features: numeric
columns are imputed (and scaled for the linear and distance-based estimators),
string columns are imputed and one-hot encoded, ignoring categories unseen in
training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from app.core.errors import Unprocessable
from app.runtime.schema import Feature

Task = Literal["regression", "classification"]
MAX_CATEGORIES_RECORDED = 100


@dataclass(frozen=True)
class Algorithm:
    name: str
    task: Task
    factory: Callable[..., Any]
    scaled: bool
    # Hyperparameters a user may set, with their types; anything else is refused.
    hyperparameters: dict[str, type] = field(default_factory=dict)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "LinearRegression", "regression", LinearRegression, scaled=True, hyperparameters={"fit_intercept": bool}
        ),
        Algorithm("Ridge", "regression", Ridge, scaled=True, hyperparameters={"alpha": float, "fit_intercept": bool}),
        Algorithm(
            "RandomForestRegressor",
            "regression",
            RandomForestRegressor,
            scaled=False,
            hyperparameters={"n_estimators": int, "max_depth": int, "min_samples_leaf": int, "random_state": int},
        ),
        Algorithm(
            "GradientBoostingRegressor",
            "regression",
            GradientBoostingRegressor,
            scaled=False,
            hyperparameters={"n_estimators": int, "max_depth": int, "learning_rate": float, "random_state": int},
        ),
        Algorithm(
            "LogisticRegression",
            "classification",
            LogisticRegression,
            scaled=True,
            hyperparameters={"C": float, "max_iter": int},
        ),
        Algorithm(
            "RandomForestClassifier",
            "classification",
            RandomForestClassifier,
            scaled=False,
            hyperparameters={"n_estimators": int, "max_depth": int, "min_samples_leaf": int, "random_state": int},
        ),
        Algorithm(
            "KNeighborsClassifier",
            "classification",
            KNeighborsClassifier,
            scaled=True,
            hyperparameters={"n_neighbors": int},
        ),
    )
}


def _checked_hyperparameters(algorithm: Algorithm, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in hyperparameters.items():
        expected = algorithm.hyperparameters.get(key)
        if expected is None:
            allowed = ", ".join(sorted(algorithm.hyperparameters)) or "none"
            raise Unprocessable(f"{algorithm.name} has no hyperparameter {key!r}; allowed: {allowed}")
        if expected is bool:
            ok = isinstance(value, bool)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise Unprocessable(
                f"hyperparameter {key!r} of {algorithm.name} must be {expected.__name__}, got {value!r}"
            )
        checked[key] = float(value) if expected is float else value
    return checked


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
        estimator = spec.factory(**_checked_hyperparameters(spec, hyperparameters))
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
        return {"r2": float(r2_score(truth, predicted)), "mse": float(mean_squared_error(truth, predicted))}
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1": float(f1_score(truth, predicted, average="macro")),
    }


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
    features = infer_features(df, target)
    data = df.dropna(subset=[target])
    if len(data) < 5:
        raise Unprocessable(f"need at least 5 rows with a value for {target!r} to train, got {len(data)}")
    y = data[target]
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            raise Unprocessable(f"the target {target!r} must be numeric for regression")
        y = y.astype(float)
    else:
        y = y.map(lambda v: v if isinstance(v, bool | int) else str(v).strip())
        if y.nunique() < 2:
            raise Unprocessable(f"the target {target!r} needs at least two classes for classification")
    x = _frame_for(data, features)
    stratify = y if task == "classification" and y.value_counts().min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=random_state, stratify=stratify
    )
    pipeline = build_pipeline(algorithm, hyperparameters, features, task)
    try:
        pipeline.fit(x_train, y_train)
    except ValueError as exc:
        raise Unprocessable(f"{algorithm} could not be trained on this data: {exc}") from exc
    metrics = {f"train_{k}": v for k, v in _scores(task, y_train, pipeline.predict(x_train)).items()}
    metrics.update({f"test_{k}": v for k, v in _scores(task, y_test, pipeline.predict(x_test)).items()})
    return TrainResult(pipeline=pipeline, features=features, metrics=metrics)


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
