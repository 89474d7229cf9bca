"""ASGI middleware of the API: request ids, the request body size limit and the browser-facing safety headers."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logging import REQUEST_ID_HEADER, accept_request_id, reset_request_id, set_request_id

REQUEST_ID_SCOPE_KEY = "mlmarket.request_id"


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
        # Kept in the scope too: the final 500 answer is sent from outside this middleware, after the reset.
        scope[REQUEST_ID_SCOPE_KEY] = request_id

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


HSTS_VALUE = b"max-age=31536000; includeSubDomains"
# JSON, files and event streams load nothing and may be framed by no one; the HTML docs pages load their scripts.
STRICT_CSP = b"default-src 'none'; frame-ancestors 'none'"
HTML_CSP = b"frame-ancestors 'none'"


def with_security_headers(headers: list[tuple[bytes, bytes]], scope: Scope, hsts: bool) -> list[tuple[bytes, bytes]]:
    """``headers`` plus the browser-facing safety headers they do not set already: no sniffing, no framing, no
    referrer, a strict CSP (a looser one for HTML), HSTS on https (or always, when ``hsts``), and
    ``Cache-Control: no-store`` on answers to signed-in requests. The one list of them, for the middleware below
    and for the answers sent from outside it (an unexpected error's 500)."""
    https = scope.get("scheme") == "https"
    signed_in = any(name == b"authorization" for name, _ in scope.get("headers", ()))
    present = {name.lower() for name, _ in headers}
    content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
    extra = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", HTML_CSP if b"html" in content_type else STRICT_CSP),
    ]
    if https or hsts:
        extra.append((b"strict-transport-security", HSTS_VALUE))
    if signed_in:
        extra.append((b"cache-control", b"no-store"))
    return headers + [(k, v) for k, v in extra if k not in present]


class SecurityHeadersMiddleware:
    """The browser-facing safety headers (``with_security_headers``) on every answer that passes through the app's
    middleware. (Starlette sends the 500 of an unexpected error from outside it: that handler adds them itself.)"""

    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(list(message.get("headers", [])), scope, self.hsts)
            await send(message)

        await self.app(scope, receive, send_with_headers)
