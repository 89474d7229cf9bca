"""The algorithm registry of the training studio: names, tasks, hyperparameters and their JSON schemas.

Importing this module imports no machine-learning package. Each estimator is named by a dotted path and
imported only when a pipeline is built (see :func:`app.runtime.pipelines.build_pipeline`), so the API lists
algorithms and checks hyperparameters without loading scikit-learn or CatBoost.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from app.core.errors import Unprocessable

Task = Literal["regression", "classification"]

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Param:
    """One hyperparameter a user may set: its type, allowed range or values, and the default used without it."""

    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    description: str = ""

    def json_schema(self) -> dict[str, Any]:
        name = {bool: "boolean", int: "integer", float: "number", str: "string"}[self.type]
        schema: dict[str, Any] = {"type": [name, "null"] if self.nullable else name, "default": self.default}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.description:
            schema["description"] = self.description
        return schema

    def allowed(self) -> str:
        if self.type is bool:
            text = "true or false"
        elif self.choices is not None:
            text = "one of " + ", ".join(map(repr, self.choices))
        else:
            kind = "an integer" if self.type is int else "a number"
            text = f"{kind} from {_number(self.minimum)} to {_number(self.maximum)}"
        return text + (" or null" if self.nullable else "")


def _number(value: float | None) -> str:
    if value is None:
        return "any"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else str(value)


@dataclass(frozen=True)
class Algorithm:
    name: str
    task: Task
    # The dotted path of the estimator class (or of a function returning an estimator), imported on use.
    factory: str
    scaled: bool
    # Hyperparameters a user may set; anything else is refused.
    hyperparameters: dict[str, Param] = field(default_factory=dict)
    description: str = ""
    # How shards of a sharded job are merged into one model: "trees", "linear", or None when they cannot be.
    merge: str | None = None

    def estimator(self, **hyperparameters: Any) -> Any:
        """A new, unfitted estimator; the first call imports its package."""
        module_name, _, attribute = self.factory.rpartition(".")
        factory = getattr(importlib.import_module(module_name), attribute)
        return factory(**hyperparameters)

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {name: p.json_schema() for name, p in self.hyperparameters.items()},
            "additionalProperties": False,
        }


def _seed(name: str = "random_state") -> dict[str, Param]:
    return {name: Param(int, None, 0, INT32_MAX, nullable=True, description="Seed for reproducible results")}


_FOREST = {
    "n_estimators": Param(int, 100, 1, 1000, description="Number of trees"),
    "max_depth": Param(int, None, 1, 100, nullable=True, description="Depth limit of each tree (null: none)"),
    "min_samples_leaf": Param(int, 1, 1, 1000, description="Fewest rows in a leaf"),
    **_seed(),
}


def catboost_classifier(**hyperparameters: Any) -> Any:
    """CatBoost's classifier, quiet, on two threads, writing no files (CatBoost is imported here)."""
    import catboost

    return catboost.CatBoostClassifier(verbose=False, allow_writing_files=False, thread_count=2, **hyperparameters)


def catboost_regressor(**hyperparameters: Any) -> Any:
    """CatBoost's regressor, quiet, on two threads, writing no files (CatBoost is imported here)."""
    import catboost

    return catboost.CatBoostRegressor(verbose=False, allow_writing_files=False, thread_count=2, **hyperparameters)


_CATBOOST = {
    "iterations": Param(int, 200, 1, 5000, description="Number of boosted trees"),
    "depth": Param(int, 6, 1, 16, description="Depth of each tree"),
    "learning_rate": Param(float, None, 0.0001, 1.0, nullable=True, description="Step size (null: chosen by CatBoost)"),
    "l2_leaf_reg": Param(float, 3.0, 0.0, 100.0, description="L2 regularisation of the leaves"),
    **_seed("random_seed"),
}

ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "LinearRegression",
            "regression",
            "sklearn.linear_model.LinearRegression",
            scaled=True,
            hyperparameters={"fit_intercept": Param(bool, True, description="Fit an intercept term")},
            description="Ordinary least squares.",
            merge="linear",
        ),
        Algorithm(
            "Ridge",
            "regression",
            "sklearn.linear_model.Ridge",
            scaled=True,
            hyperparameters={
                "alpha": Param(float, 1.0, 0.0, 1_000_000.0, description="L2 regularisation strength"),
                "fit_intercept": Param(bool, True, description="Fit an intercept term"),
            },
            description="Least squares with L2 regularisation.",
            merge="linear",
        ),
        Algorithm(
            "RandomForestRegressor",
            "regression",
            "sklearn.ensemble.RandomForestRegressor",
            scaled=False,
            hyperparameters=dict(_FOREST),
            description="An average of decision trees on bootstrap samples.",
            merge="trees",
        ),
        Algorithm(
            "GradientBoostingRegressor",
            "regression",
            "sklearn.ensemble.GradientBoostingRegressor",
            scaled=False,
            hyperparameters={
                "n_estimators": Param(int, 100, 1, 1000, description="Number of boosting stages"),
                "max_depth": Param(int, 3, 1, 50, description="Depth of each tree"),
                "learning_rate": Param(float, 0.1, 0.0001, 10.0, description="Shrinkage of each stage"),
                **_seed(),
            },
            description="Boosted decision trees (stages depend on each other, so shards cannot be merged).",
        ),
        Algorithm(
            "LogisticRegression",
            "classification",
            "sklearn.linear_model.LogisticRegression",
            scaled=True,
            hyperparameters={
                "C": Param(float, 1.0, 0.000001, 1_000_000.0, description="Inverse regularisation strength"),
                "max_iter": Param(int, 100, 1, 100_000, description="Iterations of the solver"),
            },
            description="A linear classifier with L2 regularisation.",
            merge="linear",
        ),
        Algorithm(
            "RandomForestClassifier",
            "classification",
            "sklearn.ensemble.RandomForestClassifier",
            scaled=False,
            hyperparameters=dict(_FOREST),
            description="A vote of decision trees on bootstrap samples.",
            merge="trees",
        ),
        Algorithm(
            "KNeighborsClassifier",
            "classification",
            "sklearn.neighbors.KNeighborsClassifier",
            scaled=True,
            hyperparameters={
                "n_neighbors": Param(int, 5, 1, 1000, description="Neighbours that vote"),
                "weights": Param(str, "uniform", choices=("uniform", "distance"), description="How votes count"),
            },
            description="The majority class of the nearest training rows.",
        ),
        Algorithm(
            "CatBoostClassifier",
            "classification",
            "app.runtime.algorithms.catboost_classifier",
            scaled=False,
            hyperparameters=dict(_CATBOOST),
            description="CatBoost gradient-boosted oblivious trees.",
        ),
        Algorithm(
            "CatBoostRegressor",
            "regression",
            "app.runtime.algorithms.catboost_regressor",
            scaled=False,
            hyperparameters=dict(_CATBOOST),
            description="CatBoost gradient-boosted oblivious trees.",
        ),
    )
}


def _type_ok(param: Param, value: Any) -> bool:
    if value is None:
        return param.nullable
    if param.type is bool:
        return isinstance(value, bool)
    if param.type is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if param.type is str:
        return isinstance(value, str)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _in_range(param: Param, value: Any) -> bool:
    if value is None or param.type is bool:
        return True
    if param.choices is not None:
        return value in param.choices
    return (param.minimum is None or value >= param.minimum) and (param.maximum is None or value <= param.maximum)


def checked_hyperparameters(algorithm: str | Algorithm, hyperparameters: Any) -> dict[str, Any]:
    """The user's hyperparameters, checked; :class:`Unprocessable` names the parameter and what is allowed."""
    spec = algorithm if isinstance(algorithm, Algorithm) else ALGORITHMS.get(algorithm)
    if spec is None:
        raise Unprocessable(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if not isinstance(hyperparameters, dict):
        raise Unprocessable("hyperparameters must be an object of name: value")
    checked: dict[str, Any] = {}
    for key, value in hyperparameters.items():
        param = spec.hyperparameters.get(key)
        if param is None:
            allowed = ", ".join(sorted(spec.hyperparameters)) or "none"
            raise Unprocessable(f"{spec.name} has no hyperparameter {key!r}; allowed: {allowed}")
        if not _type_ok(param, value) or not _in_range(param, value):
            raise Unprocessable(
                f"hyperparameter {key!r} of {spec.name} must be {param.type.__name__} ({param.allowed()}), "
                f"got {value!r}"
            )
        checked[key] = float(value) if param.type is float and value is not None else value
    return checked
