"""Sign in, or create an account and be signed in straight away.

Each form checks what it can before calling the API (an email's shape, a password's length) and says so next to
the field; what the API refuses is said in sentences, and an email that already has an account leads to the
sign-in form in one click.
"""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from web_ui.utils import messages, session
from web_ui.utils.api import ApiClient, ApiError

PAGE_NAMES = {
    "predict": "Predict",
    "history": "your history",
    "studio": "the training studio",
    "wallet": "your wallet",
    "api_keys": "your API keys",
    "admin": "the administration",
}
TABS = ["Sign in", "Create an account"]
TAB = "auth_tab"  # the open tab; "Sign in instead" switches it
SIGN_IN_EMAIL = "sign_in_email"
WRONG_CREDENTIALS = "Wrong email or password."
EMAIL_TAKEN = "This email already has an account. Sign in instead."
LABELS = {"email": "the email", "username": "the email", "password": "the password", "full_name": "the full name"}
ERROR = ":material/error:"


def _enter(client: ApiClient, email: str, password: str) -> None:
    token = client.sign_in(email, password)
    user = ApiClient(token, client.base_url).me()
    session.sign_in(token, user)
    st.rerun()


def sign_in_refusal(exc: ApiError) -> str:
    """Why the API did not sign the person in, in sentences."""
    if exc.status == 401:
        return WRONG_CREDENTIALS
    if exc.status == 429:
        seconds = messages.retry_after(exc)
        when = messages.wait_words(seconds) if seconds is not None else "in a minute"
        return f"Too many failed sign-ins for this email from your address. Try again {when}."
    return messages.describe(exc, LABELS)


def _sign_in_instead(email: str) -> None:
    """Opens the sign-in tab with the email already filled in (a callback: it runs before the page)."""
    st.session_state[TAB] = TABS[0]
    st.session_state[SIGN_IN_EMAIL] = email


def _note(place: DeltaGenerator, problem: str | None) -> bool:
    """Shows ``problem`` under its field; True when there is one."""
    if problem:
        place.error(problem, icon=ERROR)
    return problem is not None


_, middle, _ = st.columns([1, 2, 1])
with middle:
    st.title(":material/storefront: mlmarket")
    st.markdown("Pick a model from the catalog, pay per predicted row, and get your predictions in seconds.")

    session.show_flash()
    asked_for = PAGE_NAMES.get(str(st.session_state.get(session.NEXT_PAGE) or ""))
    if asked_for:
        st.info(f"Sign in to open {asked_for}.", icon=":material/login:")

    client = ApiClient()
    sign_in_tab, register_tab = st.tabs(TABS, key=TAB, on_change="rerun")

    with sign_in_tab:
        with st.form("sign-in", border=True):
            email = st.text_input("Email", key=SIGN_IN_EMAIL, autocomplete="username")
            email_note = st.empty()
            password = st.text_input(
                "Password", type="password", key="sign_in_password", autocomplete="current-password"
            )
            password_note = st.empty()
            signing_in = st.form_submit_button("Sign in", type="primary", width="stretch")
        if signing_in:
            refused = _note(email_note, messages.email_problem(email))
            if not password:
                refused = _note(password_note, "Enter your password.")
            elif len(password) < messages.MIN_PASSWORD:
                refused = _note(password_note, f"mlmarket passwords have at least {messages.MIN_PASSWORD} characters.")
            if not refused:
                try:
                    _enter(client, email.strip(), password)
                except ApiError as exc:
                    st.error(sign_in_refusal(exc), icon=ERROR)

    with register_tab:
        with st.form("register", border=True):
            new_email = st.text_input("Email", key="register_email", autocomplete="email")
            new_email_note = st.empty()
            full_name = st.text_input("Full name (optional)", key="register_name", autocomplete="name")
            new_password = st.text_input(
                "Password",
                type="password",
                key="register_password",
                help=f"At least {messages.MIN_PASSWORD} characters",
                autocomplete="new-password",
            )
            new_password_note = st.empty()
            repeated = st.text_input(
                "Repeat the password", type="password", key="register_repeat", autocomplete="new-password"
            )
            repeated_note = st.empty()
            registering = st.form_submit_button("Create my account", type="primary", width="stretch")
        if registering:
            password_problem = messages.new_password_problem(new_password)
            refused = any(
                [
                    _note(new_email_note, messages.email_problem(new_email)),
                    _note(new_password_note, password_problem),
                    _note(
                        repeated_note,
                        "The two passwords differ." if not password_problem and new_password != repeated else None,
                    ),
                ]
            )
            registered = False
            if not refused:
                try:
                    client.register(new_email.strip(), new_password, full_name.strip() or None)
                    registered = True
                except ApiError as exc:
                    if exc.status == 409:
                        st.error(EMAIL_TAKEN, icon=ERROR)
                        st.button(
                            "Sign in instead",
                            icon=":material/login:",
                            key="sign_in_instead",
                            on_click=_sign_in_instead,
                            args=(new_email.strip(),),
                        )
                    else:
                        st.error(messages.describe(exc, LABELS), icon=ERROR)
            if registered:
                try:
                    _enter(client, new_email.strip(), new_password)
                except ApiError as exc:
                    st.error(f"Your account is ready, but signing in failed. {sign_in_refusal(exc)}", icon=ERROR)
