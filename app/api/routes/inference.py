"""Open Inference Protocol (KServe V2) REST endpoints for catalog models, billed per row.

The routes only translate HTTP: the work is the data plane's (app.services.dataplane), which the gRPC
transport calls too. Errors here are ``{"error": "..."}`` as the protocol says (see app.api.errors).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from app.api.deps import DataPlaneDep, TokenDep, get_dataplane
from app.core.errors import BadRequest, NotFound
from app.models.catalog import MODEL_NAME_PATTERN
from app.services import oip
from app.services.dataplane import DataPlane, Principal

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

ModelName = Annotated[str, Path(max_length=64, pattern=MODEL_NAME_PATTERN)]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def _principal(dataplane: DataPlaneDep, token: TokenDep) -> Principal:
    return await dataplane.authenticate(token)


Caller = Annotated[Principal, Depends(_principal)]


@router.get("/health/live")
def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
def server_ready() -> dict[str, bool]:
    return {"ready": True}


@router.get("")
def server_metadata(dataplane: DataPlaneDep) -> dict[str, Any]:
    return dataplane.server_metadata()


@router.get("/models/{name}")
async def model_metadata(name: ModelName, dataplane: DataPlaneDep) -> dict[str, Any]:
    return await dataplane.model_metadata(name, None)


@router.get("/models/{name}/versions/{version}")
async def model_version_metadata(name: ModelName, version: Version, dataplane: DataPlaneDep) -> dict[str, Any]:
    return await dataplane.model_metadata(name, version)


@router.get("/models/{name}/ready")
async def model_ready(name: ModelName, dataplane: DataPlaneDep) -> dict[str, Any]:
    return await dataplane.model_ready(name, None)


@router.get("/models/{name}/versions/{version}/ready")
async def model_version_ready(name: ModelName, version: Version, dataplane: DataPlaneDep) -> dict[str, Any]:
    return await dataplane.model_ready(name, version)


_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The predictions, one per row, as the `predict` output tensor; with `outputs` naming "
        "`probabilities` (or `predict_proba`), a classifier's class probabilities too, an FP64 `[N, K]` tensor whose "
        "`parameters.classes` lists the classes; with `outputs`, only the outputs named"
    },
    400: {
        "description": "Malformed tensors, rows that do not fit the model's input schema, an unknown output, or "
        "probabilities asked of a regressor"
    },
    401: {"description": "No or an invalid bearer token"},
    402: {"description": "The balance does not cover the rows, or an API key's monthly spend limit would be passed"},
    403: {"description": "An API key without the 'predict' scope"},
    404: {"description": "Unknown model or version"},
    409: {"description": "The model costs more per row than `parameters.max_price_per_row`"},
}


@router.post("/models/{name}/infer", responses=_INFER_RESPONSES, response_class=Response)
async def infer(name: ModelName, request: Request, caller: Caller, dataplane: DataPlaneDep) -> Response:
    return await _infer(request, caller, dataplane, name, None)


@router.post("/models/{name}/versions/{version}/infer", responses=_INFER_RESPONSES, response_class=Response)
async def infer_version(
    name: ModelName, version: Version, request: Request, caller: Caller, dataplane: DataPlaneDep
) -> Response:
    return await _infer(request, caller, dataplane, name, version)


# The two infer operations are also served by plain Starlette routes, matched before every FastAPI route (see
# app.main): the same function without FastAPI's per-request dependency and validation machinery, which costs
# more than serving and billing a row. The operations above document them in the OpenAPI schema.
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_MAX_VERSION = 2**31 - 1


async def serve_infer(request: Request) -> Response:
    name = request.path_params["name"]
    if not _NAME.fullmatch(name):
        raise NotFound("model names are 1-63 lowercase letters, digits and dashes; GET /api/v1/models lists them")
    version = None
    if "version" in request.path_params:
        text = request.path_params["version"]
        if not (text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= _MAX_VERSION):
            raise NotFound(f"model {name!r} has no version {text[:20]!r}")
        version = int(text)
    dataplane = await get_dataplane(request)
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    caller = await dataplane.authenticate(token if scheme.lower() == "bearer" else None)
    return await _infer(request, caller, dataplane, name, version)


SERVING_ROUTES = [
    Route("/v2/models/{name}/infer", serve_infer, methods=["POST"], include_in_schema=False),
    Route("/v2/models/{name}/versions/{version}/infer", serve_infer, methods=["POST"], include_in_schema=False),
]


async def _infer(request: Request, caller: Principal, dataplane: DataPlane, name: str, version: int | None) -> Response:
    header = request.headers.get("inference-header-content-length")
    if header is not None and not (header.isascii() and header.strip().isdigit() and len(header.strip()) <= 12):
        raise BadRequest("Inference-Header-Content-Length must be a whole number of bytes")
    try:
        body = await request.body()
    except ClientDisconnect:  # the client went away before it sent its request: nothing to answer, nothing billed
        return Response(status_code=499)
    parsed = oip.parse_infer_request(body, int(header) if header is not None else None)
    answer = await dataplane.infer(caller, name, version, parsed)
    return Response(content=oip.response_json(answer), media_type="application/json")
