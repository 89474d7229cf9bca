"""The benchmark's models and rows: a 100-tree random forest and a linear regression on the diabetes data, both
published like any model (``publish_trained``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlmodel import Session

from app import migrations
from app.core.config import Settings
from app.core.db import make_engine
from app.models.catalog import ModelTask
from app.runtime.evaluation import TrainResult
from app.runtime.training import train
from app.services.demo import demo_models, publish_trained
from app.store import make_store

MODEL_NAME = "bench-diabetes-forest"
LINEAR_MODEL_NAME = "bench-diabetes-linear"
N_ESTIMATORS = 100
PRICE_PER_ROW = 1
SEED = 20240601


@dataclass
class ExtraModel:
    """One more catalog model (a demo model), for the memory figure: five models loaded in one worker."""

    name: str
    result: TrainResult
    task: ModelTask
    algorithm: str
    row: dict[str, Any]


@dataclass
class Workload:
    result: TrainResult
    rows: list[dict[str, Any]]
    extra_models: list[ExtraModel] = field(default_factory=list)
    linear: TrainResult | None = None  # the linear regression of the infer comparison (same data, same rows)

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as the DataFrame the fitted pipeline takes (schema order, floats)."""
        names = [f.name for f in self.result.features]
        return pd.DataFrame(self.rows, columns=names).astype(float)


def _diabetes_spec_frame() -> tuple[pd.DataFrame, str]:
    spec = next(s for s in demo_models() if s.name == "diabetes-forest")
    return spec.dataset()


def train_model() -> TrainResult:
    frame, target = _diabetes_spec_frame()
    return train(
        frame, target, "RandomForestRegressor", {"n_estimators": N_ESTIMATORS, "random_state": 42}, "regression"
    )


def train_linear() -> TrainResult:
    frame, target = _diabetes_spec_frame()
    return train(frame, target, "LinearRegression", {}, "regression")


def make_rows(result: TrainResult, count: int) -> list[dict[str, Any]]:
    """``count`` rows drawn from the diabetes measurements with a little noise, as JSON-ready dicts."""
    frame, _ = _diabetes_spec_frame()
    names = [f.name for f in result.features]
    rng = np.random.default_rng(SEED)
    base = frame[names].to_numpy(dtype=float)
    picked = base[rng.integers(0, len(base), size=count)]
    noisy = picked + rng.normal(0.0, 0.002, size=picked.shape)
    return [dict(zip(names, (round(float(v), 6) for v in row), strict=True)) for row in noisy]


def extra_models() -> list[ExtraModel]:
    """The four demo models, renamed ``bench-extra-<name>``, each with one row of its own data to predict."""
    out = []
    for spec in demo_models():
        frame, _ = spec.dataset()
        result = spec.train()
        row = {f.name: frame[f.name].iloc[0] for f in result.features}
        row = {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
        out.append(ExtraModel(f"bench-extra-{spec.name}", result, ModelTask(spec.task), spec.algorithm, row))
    return out


def make_workload(rows: int) -> Workload:
    result = train_model()
    return Workload(result=result, rows=make_rows(result, rows), extra_models=extra_models(), linear=train_linear())


def prepare_database(
    settings: Settings,
    result: TrainResult,
    extra_models: Sequence[ExtraModel] = (),
    linear: TrainResult | None = None,
) -> None:
    """Migrates the database of ``settings`` and publishes the benchmark models into its catalog and store."""
    migrations.upgrade(settings)
    engine = make_engine(settings)
    try:
        with Session(engine, expire_on_commit=False) as session:
            publish_trained(
                session,
                make_store(settings),
                name=MODEL_NAME,
                result=result,
                task=ModelTask.regression,
                algorithm="RandomForestRegressor",
                price_per_row=PRICE_PER_ROW,
                owner_id=None,
                description=f"Benchmark: random forest with {N_ESTIMATORS} trees on the diabetes data.",
            )
            if linear is not None:
                publish_trained(
                    session,
                    make_store(settings),
                    name=LINEAR_MODEL_NAME,
                    result=linear,
                    task=ModelTask.regression,
                    algorithm="LinearRegression",
                    price_per_row=PRICE_PER_ROW,
                    owner_id=None,
                    description="Benchmark: linear regression on the diabetes data.",
                )
            for extra in extra_models:
                publish_trained(
                    session,
                    make_store(settings),
                    name=extra.name,
                    result=extra.result,
                    task=extra.task,
                    algorithm=extra.algorithm,
                    price_per_row=PRICE_PER_ROW,
                    owner_id=None,
                    description="Benchmark: a demo model, for the memory of a worker holding several models.",
                )
    finally:
        engine.dispose()
