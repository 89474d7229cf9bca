"""Open Inference Protocol (KServe V2) REST endpoints for catalog models, billed per row.

Errors here are ``{"error": "..."}`` as the protocol says (see app.core.handlers).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app import __version__
from app.api.deps import CurrentUser, get_engine
from app.core.db import read_session
from app.core.errors import AppError, BadRequest, PayloadTooLarge
from app.models.catalog import MODEL_NAME_PATTERN, ModelVersion
from app.models.task import Task
from app.runtime import oip
from app.runtime.batching import Coalescer
from app.runtime.model import ModelRuntime
from app.runtime.schema import validate_rows
from app.services import catalog, inference

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

EngineDep = Annotated[Engine, Depends(get_engine)]
ModelName = Annotated[str, Path(max_length=64, pattern=MODEL_NAME_PATTERN)]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/health/live")
def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
def server_ready() -> dict[str, bool]:
    return {"ready": True}


@router.get("")
def server_metadata() -> dict[str, Any]:
    return {"name": "mlmarket", "version": __version__, "extensions": ["binary_tensor_data"]}


def _resolve(engine: Engine, name: str, version: int | None) -> tuple[ModelVersion, list[int]]:
    with read_session(engine) as session:
        model = catalog.resolve(session, name, version)
        versions = [v.version for v in catalog.published_versions_of(session, name)]
        return model, versions


def _metadata(model: ModelVersion, versions: list[int]) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "mlmarket-sklearn",
        "inputs": oip.input_metadata(catalog.features_of(model)),
        "outputs": oip.output_metadata(model.task, model.classes),
        "parameters": {"price_per_row": model.price_per_row, "task": model.task, "version": str(model.version)},
    }


@router.get("/models/{name}")
def model_metadata(name: ModelName, engine: EngineDep) -> dict[str, Any]:
    return _metadata(*_resolve(engine, name, None))


@router.get("/models/{name}/versions/{version}")
def model_version_metadata(name: ModelName, version: Version, engine: EngineDep) -> dict[str, Any]:
    return _metadata(*_resolve(engine, name, version))


@router.get("/models/{name}/ready")
def model_ready(name: ModelName, engine: EngineDep) -> dict[str, Any]:
    model, _ = _resolve(engine, name, None)
    return {"name": model.name, "version": str(model.version), "ready": True}


@router.get("/models/{name}/versions/{version}/ready")
def model_version_ready(name: ModelName, version: Version, engine: EngineDep) -> dict[str, Any]:
    model, _ = _resolve(engine, name, version)
    return {"name": model.name, "version": str(model.version), "ready": True}


_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed tensors or rows that do not fit the model's input schema"},
    401: {"description": "No or an invalid bearer token"},
    402: {"description": "The balance does not cover the rows"},
    404: {"description": "Unknown model or version"},
}


@router.post("/models/{name}/infer", responses=_INFER_RESPONSES)
async def infer(name: ModelName, request: Request, user: CurrentUser) -> dict[str, Any]:
    return await _infer(request, user.id or 0, name, None)


@router.post("/models/{name}/versions/{version}/infer", responses=_INFER_RESPONSES)
async def infer_version(name: ModelName, version: Version, request: Request, user: CurrentUser) -> dict[str, Any]:
    return await _infer(request, user.id or 0, name, version)


class _InferDatabase:
    """The database work of the infer path, coalesced: what concurrent requests need from the database (the
    model, the balance check, the bill) is done for all of them in one short transaction per step, instead of
    one per request. On SQLite, where every transaction takes the write lock, this keeps requests from queueing
    for the lock (and sleeping in its busy handler); the bills share one commit, each in a savepoint of its own.
    """

    def __init__(self, engine: Engine, author_share_percent: int) -> None:
        def resolve(keys: list[tuple[str, int | None]]) -> list[ModelVersion | BaseException]:
            out: list[ModelVersion | BaseException] = []
            with read_session(engine) as session:
                for name, version in keys:
                    try:
                        out.append(catalog.resolve(session, name, version))
                    except AppError as exc:
                        out.append(exc)
            return out

        def funds(checks: list[tuple[int, ModelVersion, int]]) -> list[int | BaseException]:
            with read_session(engine) as session:
                return list(inference.ensure_funds_many(session, checks))

        def bill(items: list[inference.PaidInference]) -> list[Task | BaseException]:
            with Session(engine, expire_on_commit=False) as session:
                return list(inference.record_paid_inferences(session, items, author_share_percent=author_share_percent))

        self.resolve: Coalescer[tuple[str, int | None], ModelVersion] = Coalescer(resolve)
        self.funds: Coalescer[tuple[int, ModelVersion, int], int] = Coalescer(funds)
        self.bill: Coalescer[inference.PaidInference, Task] = Coalescer(bill)


def _database(state: Any) -> _InferDatabase:
    db: _InferDatabase | None = getattr(state, "infer_database", None)
    if db is None:
        db = state.infer_database = _InferDatabase(state.engine, state.settings.author_share_percent)
    return db


async def _infer(request: Request, user_id: int, name: str, version: int | None) -> dict[str, Any]:
    state = request.app.state
    settings = state.settings
    db = _database(state)
    model = await db.resolve.submit((name, version))
    header = request.headers.get("inference-header-content-length")
    if header is not None and not header.strip().isdigit():
        raise BadRequest("Inference-Header-Content-Length must be a whole number of bytes")
    parsed = oip.parse_infer_request(await request.body(), int(header) if header is not None else None)
    features = catalog.features_of(model)
    rows = oip.tensors_to_rows(parsed.inputs, features)
    if len(rows) > settings.predict_max_rows:
        raise PayloadTooLarge(f"too many rows: {len(rows)}; at most {settings.predict_max_rows} per request")
    accepted, errors = validate_rows(features, rows)
    if errors:
        raise BadRequest("; ".join(e.reason for e in errors[:5]))
    if not accepted:
        raise BadRequest("the request has no rows")

    await db.funds.submit((user_id, model, len(accepted)))  # refused before any model runs
    runtime: ModelRuntime = await asyncio.to_thread(state.model_cache.get, catalog.artifact_ref(model))
    results = await state.batcher.predict(model.artifact_md5, runtime, accepted)
    task = await db.bill.submit(inference.PaidInference(user_id, model, accepted, list(results), parsed.id))
    return {
        "model_name": model.name,
        "model_version": str(model.version),
        "id": parsed.id if parsed.id is not None else task.id,
        "parameters": {"task_id": task.id, "cost": model.price_per_row * len(accepted)},
        "outputs": [oip.output_tensor(list(results))],
    }
