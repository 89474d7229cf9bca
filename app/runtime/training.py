"""Training: a pipeline fitted on the train split of a data frame and scored on both splits.

The pipelines are built in :mod:`app.runtime.pipelines`, scored in :mod:`app.runtime.evaluation`; sharded
training and the merge of shards live in :mod:`app.runtime.sharding`.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from app.core.errors import Unprocessable
from app.runtime.algorithms import Task
from app.runtime.evaluation import TrainResult, evaluate
from app.runtime.pipelines import build_pipeline, prepare, split_data


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
