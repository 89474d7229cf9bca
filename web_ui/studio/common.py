"""What the tabs of the training studio share: session keys, limits and running an API action."""

from __future__ import annotations

from typing import Any

import streamlit as st

from web_ui.utils import session
from web_ui.utils.api import ApiError

CURRENT_JOB = "studio_job"
DONE = "studio_done"  # the message of an action that reran the page
OPEN_JOB = "studio_open_job"  # a job to open in "My trainings" on the next run
# Kept in the URL, so a reload (or a shared link) reopens them: the tab on screen, the training opened in
# "My trainings" (both bound to their widgets) and the training followed in "Train".
TAB_PARAM = "tab"
TAB_OPENED = "studio_tab_opened"  # the tab the page was opened on: the tabs' default, the same on every run
JOB_PARAM = "training"
TRAINING_PARAM = "started"
TABS = ("Datasets", "Train", "My trainings", "Models and earnings")
MAX_APPEND_BYTES = 2 * 2**20
MAX_DATASET_MB = 5  # the API's dataset limit (MLMARKET_DATASET_MAX_BYTES, 5 MiB by default)
FINISHED = ("succeeded", "failed")
FOLLOW_MAX_SECONDS = 600.0
POLL_SECONDS = 0.5


def done(message: str) -> None:
    """Shows ``message`` at the top of the page after a rerun that brings every table up to date."""
    st.session_state[DONE] = message
    st.rerun()


def attempt(action: Any, prefix: str) -> Any:
    """Runs an API action; on failure shows the API's detail and returns None."""
    try:
        return action()
    except ApiError as exc:
        session.show_error(exc, prefix)
        return None


def act(action: Any, prefix: str) -> bool:
    """Runs an API action that answers nothing; on failure shows the API's detail and returns False."""
    try:
        action()
    except ApiError as exc:
        session.show_error(exc, prefix)
        return False
    return True
