from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from app.api.deps import SettingsDep
from app.core.config import Settings
from app.models.training import AlgorithmPublic
from app.services import training
from app.services.training import Algorithm

router = APIRouter(prefix="/algorithms", tags=["training studio"])


def to_public(algorithm: Algorithm, settings: Settings) -> AlgorithmPublic:
    return AlgorithmPublic(
        name=algorithm.name,
        task=algorithm.task,
        description=algorithm.description,
        shardable=algorithm.merge is not None,
        hyperparameters=algorithm.json_schema(),
        price_per_1000_rows=settings.training_price_per_1000_rows,
    )


@router.get("", response_model=list[AlgorithmPublic])
def list_algorithms(settings: SettingsDep) -> Any:
    return [to_public(a, settings) for a in training.algorithms()]


@router.get("/{name}", response_model=AlgorithmPublic, responses={404: {"description": "No such algorithm"}})
def read_algorithm(settings: SettingsDep, name: str = Path(max_length=64)) -> Any:
    return to_public(training.algorithm(name), settings)
