"""Training a model on a frame a test makes and publishing it, as an author would, in one call."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.models.catalog import ModelTask, ModelVersion
from app.runtime.evaluation import TrainResult
from app.runtime.training import train
from app.services.demo import publish_trained
from app.store import make_store


def train_and_publish(
    engine: Engine,
    settings: Settings,
    *,
    name: str,
    frame: pd.DataFrame,
    target: str,
    algorithm: str,
    task: ModelTask,
    params: dict[str, Any] | None = None,
    owner_id: int | None = None,
    description: str = "",
) -> tuple[TrainResult, ModelVersion]:
    """Trains ``algorithm`` on ``frame`` and publishes it at 1 credit per row to the catalog and store."""
    result = train(frame, target, algorithm, params or {}, task.value)
    with Session(engine, expire_on_commit=False) as session:
        model = publish_trained(
            session,
            make_store(settings),
            name=name,
            result=result,
            task=task,
            algorithm=algorithm,
            price_per_row=1,
            owner_id=owner_id,
            description=description,
        )
    return result, model


def publish_slow_forest(
    engine: Engine, settings: Settings, frame: pd.DataFrame, owner_id: int | None = None
) -> TrainResult:
    """A forest big enough (300 trees) that predicting a few thousand rows takes a while: a kill lands mid-task."""
    result, _ = train_and_publish(
        engine,
        settings,
        name="slow-forest",
        frame=frame,
        target="target",
        algorithm="RandomForestRegressor",
        task=ModelTask.regression,
        params={"n_estimators": 300, "random_state": 1},
        owner_id=owner_id,
        description="slow",
    )
    return result
