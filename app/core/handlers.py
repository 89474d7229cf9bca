"""Turns every error into JSON ``{"detail": "..."}`` with the right status. No traceback ever leaves the API."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError
from app.core.logging import REQUEST_ID_HEADER, accept_request_id, reset_request_id, set_request_id

log = logging.getLogger("mlmarket.api")


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
    return _is_open_inference_path(request.url.path)


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
    shape = "#/components/schemas/InferenceError" if _is_open_inference_path(path) else "#/components/schemas/Error"
    for status, response in responses.items():
        if status[0] in "45" and "content" not in response:
            response["content"] = {"application/json": {"schema": {"$ref": shape}}}


def _is_open_inference_path(path: str) -> bool:
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
        return JSONResponse(status_code=500, content=_error_body(request, "internal server error"))


class RequestIdMiddleware:
    """Gives every request an id (the client's ``X-Request-ID`` when usable) for its log lines and its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope.get("headers", ()) if k == REQUEST_ID_HEADER.encode()), None)
        request_id = accept_request_id(header.decode("latin-1") if header else None)
        token = set_request_id(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_request_id(token)


class BodySizeLimitMiddleware:
    """Refuses request bodies over a limit with 413 and a JSON detail, before they are read whole.

    (Starlette's own limiter answers in plain text, which would break the API's
    one error format.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body is larger than the limit of {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


UNSTORABLE_TEXT = "text in the request contains a NUL character or a lone surrogate, which cannot be stored"
# A JSON escape: \uXXXX (group 1) or any other escaped character (an escaped backslash is consumed whole, so the
# "\\u0000" of a literal backslash is not taken for an escape).
_JSON_ESCAPE = re.compile(rb"\\(?:u([0-9A-Fa-f]{4})|.)", re.DOTALL)
_JSON_TYPES = ("application/json",)
_FORM_TYPE = "application/x-www-form-urlencoded"


def unstorable_text(text: str) -> bool:
    """True for text with a NUL character or a lone surrogate: no database column and no UTF-8 encoder takes it."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_has_unstorable_text(body: bytes) -> bool:
    """True when a JSON document escapes a NUL (``\\u0000``) or a lone surrogate anywhere, keys included.

    The scan works on the raw bytes, before parsing: a document without ``\\u`` is passed at the cost of one search.
    """
    if b"\\u" not in body:
        return False
    high_ends_at = -1  # where the pending high surrogate's escape ends; its low half must follow right there
    for match in _JSON_ESCAPE.finditer(body):
        digits = match.group(1)
        if high_ends_at >= 0:
            if digits is None or match.start() != high_ends_at or not 0xDC00 <= int(digits, 16) <= 0xDFFF:
                return True
            high_ends_at = -1
            continue
        if digits is None:
            continue
        code = int(digits, 16)
        if code == 0 or 0xDC00 <= code <= 0xDFFF:
            return True
        if 0xD800 <= code <= 0xDBFF:
            high_ends_at = match.end()
    return high_ends_at >= 0


class UnstorableTextMiddleware:
    """Refuses with 422, before any route runs, text that no database can store: a NUL character or a lone
    surrogate in the path, the query string, a JSON body or a URL-encoded form.

    The Open Inference Protocol's bodies are checked by their own decoder (app.services.oip), so the serving path
    is not buffered here; multipart fields are checked where they are read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        query: bytes = scope.get("query_string", b"")
        if unstorable_text(path) or (query and b"\x00" in unquote_to_bytes(query)):
            await self._refuse(scope, send)
            return
        content_type = b""
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                content_type = value.split(b";", 1)[0].strip().lower()
                break
        is_json = content_type.startswith(b"application/") and content_type.endswith(b"json")
        is_form = content_type == _FORM_TYPE.encode()
        if not (is_json or is_form) or _is_open_inference_path(path) or scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        last: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                last = message  # the client went away: the route sees the body so far, then the disconnect
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        bad = json_has_unstorable_text(body) if is_json else b"\x00" in unquote_to_bytes(body.replace(b"+", b" "))
        if bad:
            await self._refuse(scope, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed, last
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            if last is not None:
                message, last = last, None
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        key = "error" if _is_open_inference_path(scope.get("path", "")) else "detail"
        body = json.dumps({key: UNSTORABLE_TEXT}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 422,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


HSTS_VALUE = b"max-age=31536000; includeSubDomains"
# JSON, files and event streams load nothing and may be framed by no one; the HTML docs pages load their scripts.
STRICT_CSP = b"default-src 'none'; frame-ancestors 'none'"
HTML_CSP = b"frame-ancestors 'none'"


class SecurityHeadersMiddleware:
    """The browser-facing safety headers on every answer: no sniffing, no framing, no referrer, a strict CSP, HSTS
    on https (or always, when configured), and ``Cache-Control: no-store`` on answers to signed-in requests."""

    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        signed_in = any(name == b"authorization" for name, _ in scope.get("headers", ()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy", HTML_CSP if b"html" in content_type else STRICT_CSP),
                ]
                if https or self.hsts:
                    extra.append((b"strict-transport-security", HSTS_VALUE))
                if signed_in:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = headers + [(k, v) for k, v in extra if k not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)
