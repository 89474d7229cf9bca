"""Sign in, or create an account and be signed in straight away."""

from __future__ import annotations

import streamlit as st

from web_ui.utils import session
from web_ui.utils.api import ApiClient, ApiError

MIN_PASSWORD = 8
PAGE_NAMES = {
    "predict": "Predict",
    "history": "your history",
    "studio": "the training studio",
    "wallet": "your wallet",
    "api_keys": "your API keys",
    "admin": "the administration",
}


def _enter(client: ApiClient, email: str, password: str) -> None:
    token = client.sign_in(email, password)
    user = ApiClient(token, client.base_url).me()
    session.sign_in(token, user)
    st.rerun()


_, middle, _ = st.columns([1, 2, 1])
with middle:
    st.title(":material/storefront: mlmarket")
    st.markdown("Pick a model from the catalog, pay per predicted row, and get your predictions in seconds.")

    session.show_flash()
    asked_for = PAGE_NAMES.get(str(st.session_state.get(session.NEXT_PAGE) or ""))
    if asked_for:
        st.info(f"Sign in to open {asked_for}.", icon=":material/login:")

    client = ApiClient()
    sign_in_tab, register_tab = st.tabs(["Sign in", "Create an account"])

    with sign_in_tab, st.form("sign-in", border=True):
        email = st.text_input("Email", key="sign_in_email", autocomplete="username")
        password = st.text_input("Password", type="password", key="sign_in_password", autocomplete="current-password")
        if st.form_submit_button("Sign in", type="primary", width="stretch"):
            if not email.strip() or not password:
                st.error("Enter your email and your password.")
            else:
                try:
                    _enter(client, email.strip(), password)
                except ApiError as exc:
                    st.error(exc.detail, icon=":material/error:")

    with register_tab, st.form("register", border=True):
        new_email = st.text_input("Email", key="register_email", autocomplete="email")
        full_name = st.text_input("Full name (optional)", key="register_name", autocomplete="name")
        new_password = st.text_input(
            "Password",
            type="password",
            key="register_password",
            help=f"At least {MIN_PASSWORD} characters",
            autocomplete="new-password",
        )
        repeated = st.text_input(
            "Repeat the password", type="password", key="register_repeat", autocomplete="new-password"
        )
        if st.form_submit_button("Create my account", type="primary", width="stretch"):
            if not new_email.strip():
                st.error("Enter your email.")
            elif len(new_password) < MIN_PASSWORD:
                st.error(f"The password needs at least {MIN_PASSWORD} characters.")
            elif new_password != repeated:
                st.error("The two passwords differ.")
            else:
                try:
                    client.register(new_email.strip(), new_password, full_name.strip() or None)
                    _enter(client, new_email.strip(), new_password)
                except ApiError as exc:
                    st.error(exc.detail, icon=":material/error:")
