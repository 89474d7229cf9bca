"""The training studio: upload a dataset, train a model on the workers, read its report, publish it, earn."""

from __future__ import annotations

import streamlit as st

from web_ui.studio import datasets, jobs, publish, train
from web_ui.studio.common import DONE, TAB_OPENED, TAB_PARAM, TABS
from web_ui.utils import session

client = session.client()
user = session.current_user() or {}
st.title(":material/model_training: Training studio")
st.caption("Train a model from your own CSV data, publish it at a price, and earn a share of every paid prediction.")
# Always there, message or not: the tabs below keep their place on the page, and so the tab a person is on.
notice = st.empty()
if DONE in st.session_state:
    notice.success(str(st.session_state.pop(DONE)), icon=":material/check_circle:")

# The tab on screen is kept in the URL (?tab=…): a reload, or a link, opens the same one. (Not bound to the URL
# by Streamlit: a bound widget reruns the page whenever the URL changes, and that rerun would drop what is being
# typed in a form.)
if TAB_OPENED not in st.session_state:  # a new page (a reload, a link): the tab the URL names; after that, the same
    asked = st.query_params.get(TAB_PARAM)
    st.session_state[TAB_OPENED] = asked if asked in TABS else TABS[0]
datasets_tab, train_tab, jobs_tab, earnings_tab = st.tabs(
    list(TABS), default=st.session_state[TAB_OPENED], key=TAB_PARAM, on_change="rerun"
)
active = st.session_state.get(TAB_PARAM)
if active in TABS and st.query_params.get(TAB_PARAM) != active:
    st.query_params[TAB_PARAM] = str(active)

with datasets_tab:
    datasets.tab(client)
with train_tab:
    train.tab(client)
with jobs_tab:
    jobs.tab(client)
with earnings_tab:
    publish.tab(client, user)
