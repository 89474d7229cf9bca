from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from app.core.errors import NotFound
from app.models.training import AlgorithmPublic
from app.runtime.algorithms import ALGORITHMS, Algorithm

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
    return [to_public(a) for a in ALGORITHMS.values()]


@router.get("/{name}", response_model=AlgorithmPublic, responses={404: {"description": "No such algorithm"}})
def read_algorithm(name: str = Path(max_length=64)) -> Any:
    algorithm = ALGORITHMS.get(name)
    if algorithm is None:
        raise NotFound(f"algorithm {name!r} not found; choose one of {', '.join(ALGORITHMS)}")
    return to_public(algorithm)
