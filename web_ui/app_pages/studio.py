"""The training studio: upload a dataset, train a model on the workers, read its report, publish it, earn."""

from __future__ import annotations

import streamlit as st

from web_ui.studio import datasets, jobs, publish, train
from web_ui.studio.common import DONE
from web_ui.utils import session

client = session.client()
user = session.current_user() or {}
st.title(":material/model_training: Training studio")
st.caption("Train a model from your own CSV data, publish it at a price, and earn a share of every paid prediction.")
# Always there, message or not: the tabs below keep their place on the page, and so the tab a person is on.
notice = st.empty()
if DONE in st.session_state:
    notice.success(str(st.session_state.pop(DONE)), icon=":material/check_circle:")

datasets_tab, train_tab, jobs_tab, earnings_tab = st.tabs(["Datasets", "Train", "My trainings", "Models and earnings"])

with datasets_tab:
    datasets.tab(client)
with train_tab:
    train.tab(client)
with jobs_tab:
    jobs.tab(client)
with earnings_tab:
    publish.tab(client, user)
