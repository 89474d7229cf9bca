"""Who is signed in, and how API errors reach the person: as words, never as a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from web_ui.utils.api import ApiClient, ApiError, SessionExpired

log = logging.getLogger("mlmarket.web_ui")

TOKEN = "token"  # noqa: S105 - the session-state key that holds the token
USER = "user"
FLASH = "flash"
SESSION_EXPIRED_MESSAGE = "Your session has expired, please sign in again"

T = TypeVar("T")


def current_user() -> dict[str, Any] | None:
    if not st.session_state.get(TOKEN):
        return None
    user = st.session_state.get(USER)
    return user if isinstance(user, dict) else None


def is_admin() -> bool:
    user = current_user()
    return bool(user and user.get("role") == "admin")


def client() -> ApiClient:
    return ApiClient(st.session_state.get(TOKEN))


def sign_in(token: str, user: dict[str, Any]) -> None:
    st.session_state[TOKEN] = token
    st.session_state[USER] = user
    st.session_state.pop(FLASH, None)


def sign_out(message: str | None = None, *, warning: bool = False) -> None:
    """Forgets the token and everything the pages kept for this person; ``message`` greets them on sign-in."""
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if message:
        st.session_state[FLASH] = {"text": message, "warning": warning}


def show_flash() -> None:
    """The message left by a sign-out or an expired session, shown once."""
    flash = st.session_state.pop(FLASH, None)
    if not isinstance(flash, dict):
        return
    if flash.get("warning"):
        st.warning(str(flash.get("text")), icon=":material/lock_clock:")
    else:
        st.info(str(flash.get("text")), icon=":material/logout:")


def expire() -> None:
    """The API refused the token: back to the sign-in page with a word of why."""
    sign_out(SESSION_EXPIRED_MESSAGE, warning=True)
    st.rerun()


def show_error(exc: ApiError, prefix: str = "") -> None:
    """An API error in words; an expired session goes back to sign in."""
    if isinstance(exc, SessionExpired):
        expire()
    st.error(f"{prefix}{exc.detail}", icon=":material/error:")


def call(fn: Callable[[], T], prefix: str = "") -> T:
    """Runs an API call for data the page cannot do without; on failure shows why and stops the page."""
    try:
        return fn()
    except ApiError as exc:
        show_error(exc, prefix)
        st.stop()
        raise  # st.stop() does not return; this keeps type checkers honest


def run_page(page: Any) -> None:
    """Runs the chosen page; whatever goes wrong is shown in words, never as a traceback."""
    try:
        page.run()
    except SessionExpired:
        expire()
    except ApiError as exc:
        st.error(exc.detail, icon=":material/error:")
    except Exception:
        log.exception("the page %s failed", getattr(page, "title", page))
        st.error(
            "Something went wrong on this page. Please try again; if it keeps happening, tell the mlmarket team.",
            icon=":material/error:",
        )
