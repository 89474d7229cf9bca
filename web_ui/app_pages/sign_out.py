"""Signing out forgets the token and everything kept for this person, then shows the sign-in page."""

from __future__ import annotations

import streamlit as st

from web_ui.utils import session

session.sign_out(session.SIGNED_OUT_MESSAGE)
st.rerun()
