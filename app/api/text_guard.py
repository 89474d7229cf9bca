"""Refuses, before any route runs, text that no database can store (a NUL character or a lone surrogate)."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import UNSTORABLE_TEXT, is_open_inference_path

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
        if not (is_json or is_form) or is_open_inference_path(path) or scope.get("method") in ("GET", "HEAD"):
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
        key = "error" if is_open_inference_path(scope.get("path", "")) else "detail"
        body = json.dumps({key: UNSTORABLE_TEXT}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 422,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
