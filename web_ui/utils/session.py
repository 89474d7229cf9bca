"""Who is signed in, and how API errors reach the person: as words, never as a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from web_ui.utils import browser_session, messages
from web_ui.utils.api import ApiClient, ApiError, SessionExpired

log = logging.getLogger("mlmarket.web_ui")

TOKEN = "token"  # noqa: S105 - the session-state key that holds the token
USER = "user"
FLASH = "flash"
NEXT_PAGE = "next_page"  # the page a signed-out visitor asked for, opened after signing in
BROWSER_GOTO = "browser_goto"  # a URL the browser opens on the next run (the cookie routes)
COOKIE_IGNORED = "cookie_ignored"  # set on sign-out: the old cookie of this tab is not read again
SIGNED_OUT_MESSAGE = "You are signed out."
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


def sign_in(token: str, user: dict[str, Any], *, remember: bool = True) -> None:
    """Signs this tab in; with ``remember``, the browser then gets the HTTP-only cookie that keeps it signed in."""
    next_page = st.session_state.pop(NEXT_PAGE, None)
    st.session_state[TOKEN] = token
    st.session_state[USER] = user
    st.session_state.pop(FLASH, None)
    if remember and browser_session.mounted():
        code = browser_session.park(token)
        st.session_state[BROWSER_GOTO] = browser_session.start_url(code, f"/{next_page or ''}")


def sign_out(message: str | None = None, *, warning: bool = False, notice: str = "signed_out") -> None:
    """Forgets the token and everything the pages kept for this person, and clears the browser's cookie.

    ``message`` greets them on the sign-in page (``notice`` names it in the URL after the cookie is cleared).
    """
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state[COOKIE_IGNORED] = True
    if message:
        st.session_state[FLASH] = {"text": message, "warning": warning}
    if browser_session.mounted():
        st.session_state[BROWSER_GOTO] = browser_session.end_url(notice)


def restore() -> None:
    """Signs in a new browser session (a reload, a link, a new tab) from the cookie it sent, if any."""
    if st.session_state.get(TOKEN) or st.session_state.get(COOKIE_IGNORED):
        return
    token = browser_session.verify(st.context.cookies.get(browser_session.COOKIE))
    if token is None:
        return
    try:
        user = ApiClient(token).me()
    except SessionExpired:
        sign_out(SESSION_EXPIRED_MESSAGE, warning=True, notice="expired")
        return
    except ApiError as exc:
        st.session_state[FLASH] = {
            "text": f"You could not be signed in again. {messages.describe(exc)}",
            "warning": True,
        }
        return
    sign_in(token, user, remember=False)


NOTICE_WORDS = {
    "signed_out": (SIGNED_OUT_MESSAGE, False),
    "expired": (SESSION_EXPIRED_MESSAGE, True),
}


def take_notice() -> None:
    """A message named in the URL by the sign-out route becomes this page's flash, and leaves the URL."""
    notice = st.query_params.get("notice")
    if notice is None:
        return
    del st.query_params["notice"]
    if notice in NOTICE_WORDS and FLASH not in st.session_state:
        text, warning = NOTICE_WORDS[notice]
        st.session_state[FLASH] = {"text": text, "warning": warning}


def go_to_browser_url() -> None:
    """Sends the browser to a cookie route parked by sign_in/sign_out (a one-time code, never the token)."""
    url = st.session_state.pop(BROWSER_GOTO, None)
    if not url:
        return
    st.html(
        f"<script>window.location.replace({json.dumps(str(url))});</script>",
        unsafe_allow_javascript=True,
    )


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
    lead = prefix[:-2] + ". " if prefix.endswith(": ") else prefix  # "The top-up did not go through. Reason."
    st.error(f"{lead}{messages.describe(exc)}", icon=":material/error:")


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
        st.error(messages.describe(exc), icon=":material/error:")
    except Exception:
        log.exception("the page %s failed", getattr(page, "title", page))
        st.error(
            "Something went wrong on this page. Please try again; if it keeps happening, tell the mlmarket team.",
            icon=":material/error:",
        )
