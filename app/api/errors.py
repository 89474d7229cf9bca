"""Turns every error into JSON ``{"detail": "..."}`` with the right status, and documents that shape in OpenAPI.

No traceback ever leaves the API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.middleware import REQUEST_ID_SCOPE_KEY, with_security_headers
from app.core.errors import AppError
from app.core.logging import REQUEST_ID_HEADER

log = logging.getLogger("mlmarket.api")

UNSTORABLE_TEXT = "text in the request contains a NUL character or a lone surrogate, which cannot be stored"


def describe_validation_errors(errors: Sequence[Any]) -> str:
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header", "form")]
        if err.get("type") == "json_invalid":
            parts.append(f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
            continue
        where = ".".join(loc)
        msg = str(err.get("msg", "invalid value"))
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"


def _jsonable_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        out.append(
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": err.get("type")}
        )
    return out


OPEN_INFERENCE_PREFIX = "/v2"


def _error_body(request: Request, detail: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"detail": ...}`` for the mlmarket API; ``{"error": ...}`` on the Open Inference Protocol paths."""
    if _is_open_inference(request):
        return {"error": detail}
    return {"detail": detail, **(extra or {})}


def _is_open_inference(request: Request) -> bool:
    return is_open_inference_path(request.url.path)


# What the validation handler below really answers, replacing FastAPI's default (a list under "detail").
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "title": "HTTPValidationError",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "title": "Detail"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": ["string", "null"]},
                },
            },
        },
    },
}


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string"}},
}
OPEN_INFERENCE_ERROR_SCHEMA: dict[str, Any] = {
    "title": "InferenceError",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
# Answers any operation may give, whatever its route declares: they come from the middleware and handlers here.
_COMMON_ERRORS = {
    "401": "No bearer token, or an invalid or expired one",
    "403": "The signed-in user may not do this (administrators only)",
    "404": "Nothing with this name or id belongs to the signed-in user",
    "413": "The request body is larger than the limit",
    "503": "The database or another service is unavailable right now; retry",
}


def _document_errors(path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    wanted = {"503"}
    if operation.get("security"):
        wanted.add("401")
    if path.startswith("/api/v1/admin"):
        wanted.add("403")
    if "{" in path:
        wanted.add("404")
    if "requestBody" in operation:
        wanted.add("413")
    for status in sorted(wanted - responses.keys()):
        responses[status] = {"description": _COMMON_ERRORS[status]}
    shape = "#/components/schemas/InferenceError" if is_open_inference_path(path) else "#/components/schemas/Error"
    for status, response in responses.items():
        if status[0] in "45" and "content" not in response:
            response["content"] = {"application/json": {"schema": {"$ref": shape}}}


def is_open_inference_path(path: str) -> bool:
    return path == OPEN_INFERENCE_PREFIX or path.startswith(OPEN_INFERENCE_PREFIX + "/")


def _document_error_shape(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["HTTPValidationError"] = VALIDATION_ERROR_SCHEMA
            schemas["Error"] = ERROR_SCHEMA
            schemas["InferenceError"] = OPEN_INFERENCE_ERROR_SCHEMA
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    _document_errors(path, operation)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    _document_error_shape(app)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code, content=_error_body(request, exc.detail, exc.extra), headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        status = 422
        # On the Open Inference Protocol a malformed model name or version is simply a model that does not exist.
        if _is_open_inference(request) and any(err.get("loc", ("",))[0] == "path" for err in errors):
            status = 404
        return JSONResponse(
            status_code=status,
            content=_error_body(request, describe_validation_errors(errors), {"errors": _jsonable_errors(errors)}),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return JSONResponse(status_code=exc.status_code, content=_error_body(request, detail), headers=exc.headers)

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable(request: Request, exc: UnicodeEncodeError) -> JSONResponse:
        # The last line of defence (the text guard below refuses these first): text no database can store.
        log.warning("unencodable text on %s %s: %s", request.method, request.url.path, exc.reason)
        return JSONResponse(status_code=422, content=_error_body(request, UNSTORABLE_TEXT))

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if isinstance(exc, DataError):
            # A value the database cannot hold (a NUL character, a number out of its range) that no check caught:
            # the request's fault, not the server's. Only the error class is logged, never the statement or its
            # parameters.
            log.warning(
                "database refused a value on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__
            )
            return JSONResponse(
                status_code=422, content=_error_body(request, "a value in the request cannot be stored")
            )
        if isinstance(exc, IntegrityError):
            # A race on a unique key that no check caught: the client may retry. Logged as an error with the
            # constraint's name (never the values) so that a missing check is noticed.
            constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
            log.error("integrity error on %s %s (constraint %s)", request.method, request.url.path, constraint)
            return JSONResponse(
                status_code=409,
                content=_error_body(request, "the request conflicts with a concurrent change; retry it"),
            )
        if not (exc.connection_invalidated or isinstance(exc, OperationalError)):
            return await _unexpected(request, exc)
        # A dropped or refused database connection is a passing outage, not a bug: tell the client to retry.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        return JSONResponse(
            status_code=503,
            content=_error_body(request, "the database is unavailable right now; retry the request"),
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        response = JSONResponse(status_code=500, content=_error_body(request, "internal server error"))
        # Starlette sends this answer from its outermost layer, past the app's middleware: the safety headers
        # are added here, from the same list and the same setting as the middleware's.
        settings = getattr(request.app.state, "settings", None)
        hsts = bool(getattr(settings, "hsts", False))
        response.raw_headers = with_security_headers(list(response.raw_headers), request.scope, hsts)
        request_id = request.scope.get(REQUEST_ID_SCOPE_KEY)
        if isinstance(request_id, str):  # the id the log line above carries, for the caller to quote
            response.raw_headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
        return response
