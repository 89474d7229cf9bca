"""The mlmarket web UI's router; serve it with ``streamlit run web_ui/serve.py`` (which adds the sign-in cookie).

This file is the router: which pages exist depends on whether someone is signed
in and on their role. Each page lives in ``app_pages/``; every call to mlmarket
goes through the REST API (``MLMARKET_API_URL``).
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from pathlib import Path

# `streamlit run` puts this folder, not the repository, on the import path.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from web_ui.utils import formatting as fmt  # noqa: E402
from web_ui.utils import session  # noqa: E402
from web_ui.utils.api import ApiError, SessionExpired  # noqa: E402

st.set_page_config(page_title="mlmarket", page_icon=":material/storefront:", layout="wide")

SIGN_IN_FILE = Path(__file__).resolve().parent / "app_pages" / "sign_in.py"
MARKETPLACE = st.Page("app_pages/marketplace.py", title="Marketplace", icon=":material/storefront:", default=True)
PREDICT = st.Page("app_pages/predict.py", title="Predict", icon=":material/online_prediction:")
HISTORY = st.Page("app_pages/history.py", title="History", icon=":material/history:")
WALLET = st.Page("app_pages/wallet.py", title="Wallet", icon=":material/account_balance_wallet:")
SIGN_OUT = st.Page("app_pages/sign_out.py", title="Sign out", icon=":material/logout:")
STUDIO = st.Page("app_pages/studio.py", title="Training studio", icon=":material/model_training:")
API_KEYS = st.Page("app_pages/api_keys.py", title="API keys", icon=":material/key:")
ADMIN = st.Page("app_pages/admin.py", title="Admin", icon=":material/admin_panel_settings:")


def _sign_in_for(url_path: str) -> Callable[[], None]:
    """The sign-in form, shown at a page's own address; signing in then opens that page."""

    def sign_in_first() -> None:
        if url_path:
            st.session_state[session.NEXT_PAGE] = url_path
        runpy.run_path(str(SIGN_IN_FILE), run_name="__main__")

    sign_in_first.__name__ = f"sign_in_{url_path or 'home'}"
    return sign_in_first


def sidebar(user: dict[str, str]) -> None:
    with st.sidebar:
        if user.get("full_name"):
            st.markdown(f"**{user['full_name']}**")
        role = "administrator" if user.get("role") == "admin" else "client"
        st.caption(f"{user.get('email')} · {role}")
        try:
            balance = session.client().wallet()["balance"]
        except SessionExpired:
            session.expire()
        except ApiError:
            st.caption("Balance unavailable right now")
        else:
            st.markdown(f"Balance: **{fmt.credits(balance)}**")


session.restore()
session.take_notice()
user = session.current_user()
if user is None:
    # Every page's link works: it opens the sign-in form, and once signed in that page.
    signed_out_pages = [st.Page(_sign_in_for(""), title="Sign in", icon=":material/login:", default=True)]
    signed_out_pages += [
        st.Page(_sign_in_for(p.url_path), title="Sign in", icon=":material/login:", url_path=p.url_path)
        for p in (PREDICT, HISTORY, STUDIO, WALLET, API_KEYS, ADMIN)
    ]
    page = st.navigation(signed_out_pages, position="hidden")
else:
    sections = {
        "Marketplace": [MARKETPLACE, PREDICT, HISTORY],
        "Authors": [STUDIO],
        "Account": [WALLET, API_KEYS, SIGN_OUT],
    }
    if user.get("role") == "admin":
        sections["Administration"] = [ADMIN]
    page = st.navigation(sections)
    sidebar(user)

session.go_to_browser_url()
session.run_page(page)
