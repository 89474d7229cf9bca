"""Serves the mlmarket web UI: ``streamlit run web_ui/serve.py``.

Streamlit runs the pages (router: ``streamlit_app.py``); two small HTTP routes beside them
keep the sign-in in an HTTP-only cookie, so a reload or a link to any page stays signed in
(see ``web_ui/utils/browser_session.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from web_ui.utils import browser_session  # noqa: E402

app = st.App(Path(__file__).resolve().parent / "streamlit_app.py", routes=browser_session.routes())
