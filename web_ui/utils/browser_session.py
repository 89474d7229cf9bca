"""The sign-in kept in the browser: an HTTP-only, signed cookie that page scripts cannot read.

Streamlit talks to the browser over a WebSocket, which cannot set cookies, so the UI is
served by ``web_ui/serve.py``: Streamlit plus two small HTTP routes from this module.

- Signing in happens in the Streamlit page (the UI calls the API). The token is then parked
  here under a random one-time code that lives for a minute, and the page sends the browser
  to ``/session/start?code=…&next=/wallet``. That route swaps the code for the token, sets the
  cookie (``HttpOnly``, ``SameSite=Lax``, ``Secure`` over HTTPS, signed with HMAC-SHA256) and
  sends the browser on to the page it asked for. The token itself never reaches a page script.
- Every new browser session (a reload, a deep link, a new tab) sends the cookie with its
  WebSocket handshake; the router reads it with ``st.context.cookies`` and signs the person in.
- ``/session/end`` clears the cookie (signing out, or a token the API no longer accepts).

The signing key is ``MLMARKET_UI_COOKIE_SECRET`` when set (set it when several UI replicas run),
otherwise Streamlit's own ``server.cookieSecret``. The parked codes live in this process, so
several replicas need sticky sessions (which Streamlit's WebSocket needs anyway).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

COOKIE = "mlmarket_session"
START_PATH = "/session/start"
END_PATH = "/session/end"
CODE_SECONDS = 60.0
DEFAULT_COOKIE_SECONDS = 3600
NOTICES = ("signed_out", "expired")
NOTICES_PARAM = ("notice",)  # the sign-out route's message: shown once, never carried to the next page

_parked: dict[str, tuple[str, float]] = {}
_lock = threading.Lock()
_mounted = False  # set once serve.py mounts the routes; `streamlit run streamlit_app.py` alone has none


def mounted() -> bool:
    """Whether this process serves the cookie routes (else a sign-in lasts as long as the browser tab)."""
    return _mounted


def _secret() -> bytes:
    configured = os.environ.get("MLMARKET_UI_COOKIE_SECRET")
    if configured:
        return configured.encode()
    from streamlit.web.server.server_util import get_cookie_secret

    return str(get_cookie_secret()).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(token: str) -> str:
    body = _b64(token.encode())
    mac = hmac.new(_secret(), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def verify(value: str | None) -> str | None:
    """The token in a cookie value this UI signed, or None for anything else."""
    if not value or "." not in value:
        return None
    body, _, mac = value.rpartition(".")
    expected = hmac.new(_secret(), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        return _unb64(body).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def token_seconds_left(token: str) -> int:
    """How long the API's token stays valid, read from its ``exp`` claim (the cookie lives as long)."""
    try:
        claims: Any = json.loads(_unb64(token.split(".")[1]))
        left = int(float(claims["exp"]) - time.time())
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error):
        return DEFAULT_COOKIE_SECONDS
    return max(0, left)


def park(token: str) -> str:
    """Keeps ``token`` for a minute under a one-time code the browser swaps for the cookie."""
    code = secrets.token_urlsafe(32)
    now = time.monotonic()
    with _lock:
        for stale in [c for c, (_, at) in _parked.items() if now - at > CODE_SECONDS]:
            del _parked[stale]
        _parked[code] = (token, now)
    return code


def claim(code: str) -> str | None:
    with _lock:
        parked = _parked.pop(code, None)
    if parked is None or time.monotonic() - parked[1] > CODE_SECONDS:
        return None
    return parked[0]


def base_path() -> str:
    """The URL prefix the UI is served under ('' at the root)."""
    from streamlit import config

    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else ""


def safe_next(value: str | None) -> str:
    """A page path inside this UI; anything else (another site, a scheme) becomes the home page."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def page_query() -> str:
    """The query string of the page being drawn ("model=iris" on /predict?model=iris), without the one-time
    notice: a deep link keeps it across the sign-in's trip through /session/start. Empty outside a page run."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx() is None:
        return ""
    import streamlit as st

    return urlencode([(k, v) for k in st.query_params for v in st.query_params.get_all(k) if k not in NOTICES_PARAM])


def start_url(code: str, next_path: str, query: str | None = None) -> str:
    """The cookie route's address; the browser then opens ``next_path`` with ``query`` (by default, the query
    string of the page being drawn)."""
    query = page_query() if query is None else query
    target = safe_next(next_path) + (f"?{query}" if query and "?" not in next_path else "")
    return f"{base_path()}{START_PATH}?" + urlencode({"code": code, "next": target})


def end_url(notice: str) -> str:
    return f"{base_path()}{END_PATH}?" + urlencode({"notice": notice})


# -- the HTTP side (Starlette routes mounted by web_ui/serve.py) -------------------------------------


def _secure(request: Any) -> bool:
    forwarded = str(request.headers.get("x-forwarded-proto", "")).split(",")[0].strip()
    return bool(request.url.scheme == "https" or forwarded == "https")


async def start(request: Any) -> Any:
    from starlette.responses import RedirectResponse

    base = base_path()
    token = claim(str(request.query_params.get("code", "")))
    if token is None:
        return RedirectResponse(f"{base}/", status_code=303)
    target = safe_next(request.query_params.get("next"))
    response = RedirectResponse(f"{base}{target}" if target != "/" else f"{base}/", status_code=303)
    response.set_cookie(
        COOKIE,
        sign(token),
        max_age=token_seconds_left(token),
        path=f"{base}/",
        httponly=True,
        secure=_secure(request),
        samesite="lax",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def end(request: Any) -> Any:
    from starlette.responses import RedirectResponse

    base = base_path()
    notice = request.query_params.get("notice")
    query = f"?{urlencode({'notice': notice})}" if notice in NOTICES else ""
    response = RedirectResponse(f"{base}/{query}", status_code=303)
    response.delete_cookie(COOKIE, path=f"{base}/", httponly=True, secure=_secure(request), samesite="lax")
    response.headers["Cache-Control"] = "no-store"
    return response


def routes() -> list[Any]:
    from starlette.routing import Route

    global _mounted
    _mounted = True
    return [Route(START_PATH, start, methods=["GET"]), Route(END_PATH, end, methods=["GET"])]
