"""Open Inference Protocol (KServe V2) REST endpoints for catalog models, billed per row.

Errors here are ``{"error": "..."}`` as the protocol says (see app.core.handlers).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app import __version__
from app.api.deps import CurrentUser, get_engine
from app.core.errors import BadRequest, PayloadTooLarge
from app.models.catalog import MODEL_NAME_PATTERN, ModelVersion
from app.runtime import oip
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
    with Session(engine, expire_on_commit=False) as session:
        model = catalog.resolve(session, name, version)
        versions = [v.version for v in catalog.versions_of(session, name)]
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


async def _infer(request: Request, user_id: int, name: str, version: int | None) -> dict[str, Any]:
    state = request.app.state
    settings = state.settings
    model, _ = await run_in_threadpool(_resolve, state.engine, name, version)
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

    def check_funds() -> int:
        with Session(state.engine) as session:
            return inference.ensure_funds(session, user_id=user_id, model=model, rows=len(accepted))

    await run_in_threadpool(check_funds)
    runtime = await asyncio.to_thread(state.model_cache.get, catalog.artifact_ref(model))
    results = await state.batcher.predict(model.artifact_md5, runtime, accepted)

    def bill() -> str:
        with Session(state.engine) as session:
            task = inference.record_paid_inference(
                session,
                user_id=user_id,
                model=model,
                rows=accepted,
                results=list(results),
                author_share_percent=settings.author_share_percent,
                request_id=parsed.id,
            )
            return task.id

    task_id = await run_in_threadpool(bill)
    return {
        "model_name": model.name,
        "model_version": str(model.version),
        "id": parsed.id if parsed.id is not None else task_id,
        "parameters": {"task_id": task_id, "cost": model.price_per_row * len(accepted)},
        "outputs": [oip.output_tensor(list(results))],
    }
