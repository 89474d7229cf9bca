"""Sharded training: shards fitted apart on parts of the training rows, then merged into one model."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from app.core.errors import Unprocessable
from app.runtime.algorithms import ALGORITHMS, Task
from app.runtime.evaluation import TrainResult, evaluate, plain_label
from app.runtime.pipelines import build_pipeline, prepare, split_data
from app.runtime.schema import Feature

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
        label, count = plain_label(short.index[0]), int(short.iloc[0])
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
