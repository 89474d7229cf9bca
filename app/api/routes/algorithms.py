from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from app.models.training import AlgorithmPublic
from app.services import training
from app.services.training import Algorithm

router = APIRouter(prefix="/algorithms", tags=["training studio"])


def to_public(algorithm: Algorithm) -> AlgorithmPublic:
    return AlgorithmPublic(
        name=algorithm.name,
        task=algorithm.task,
        description=algorithm.description,
        shardable=algorithm.merge is not None,
        hyperparameters=algorithm.json_schema(),
    )


@router.get("", response_model=list[AlgorithmPublic])
def list_algorithms() -> Any:
    return [to_public(a) for a in training.algorithms()]


@router.get("/{name}", response_model=AlgorithmPublic, responses={404: {"description": "No such algorithm"}})
def read_algorithm(name: str = Path(max_length=64)) -> Any:
    return to_public(training.algorithm(name))
