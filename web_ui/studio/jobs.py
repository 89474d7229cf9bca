"""The "My trainings" tab of the training studio: past trainings, their reports, retraining and deleting."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from web_ui.studio.common import JOB_PARAM, OPEN_JOB, act, attempt, done
from web_ui.studio.report import show_job
from web_ui.utils import formatting as fmt
from web_ui.utils import session
from web_ui.utils.api import ApiClient

PICK = "job_pick"


def job_label(job: dict[str, Any]) -> str:
    started = fmt.parse_time(job.get("created_at"))
    when = started.strftime("%Y-%m-%d %H:%M") if started else "?"
    label = f"{when} · {job.get('algorithm')} on {job.get('target')!r} · {job.get('status')} · {str(job.get('id'))[:8]}"
    return label + (" · in the trash" if job.get("deleted") else "")


def manage_job(client: ApiClient, by_id: dict[str, dict[str, Any]]) -> None:
    """One past training: its report, retraining, the trash and deleting for good."""
    st.subheader("Open a training")
    pending = st.session_state.pop(OPEN_JOB, None)
    linked = st.query_params.get(JOB_PARAM)
    if pending in by_id:
        st.session_state[PICK] = pending
    elif PICK not in st.session_state and linked in by_id:  # a reload, or a link: the training in the URL
        st.session_state[PICK] = linked
    elif st.session_state.get(PICK) not in by_id:
        st.session_state.pop(PICK, None)
    job_id = str(st.selectbox("Training", list(by_id), format_func=lambda i: job_label(by_id[i]), key=PICK))
    if st.query_params.get(JOB_PARAM) != job_id:
        st.query_params[JOB_PARAM] = job_id  # by its id, so the link stays good while the training's status changes
    job = by_id[job_id]
    short = job_id[:8]
    if job.get("deleted"):
        st.info("This training is in the trash: restore it to read its report again.", icon=":material/delete:")
        if (
            st.button("Restore", icon=":material/restore_from_trash:", key="job_restore")
            and attempt(lambda: client.restore_training_job(job_id), "The training was not restored: ") is not None
        ):
            done(f"Training {short} is back.")
    else:
        show_job(client, job, where="past_")
        st.subheader("Train it again")
        datasets = session.call(client.datasets)
        by_dataset = {int(d["id"]): d for d in datasets}
        options = list(by_dataset)
        same = job.get("dataset_id")
        st.caption(
            f"The same algorithm ({job.get('algorithm')}) on the current version of a dataset; "
            "the hyperparameters below are the ones of this training."
        )
        chosen_dataset = st.selectbox(
            "Dataset",
            options,
            index=options.index(same) if same in options else 0,
            format_func=lambda i: (
                f"#{i} {by_dataset[i]['name']} v{by_dataset[i]['version']} · {by_dataset[i]['rows']:,} rows"
            ),
            key=f"retrain_dataset-{job_id}",
        )
        algorithms = session.call(client.algorithms)
        price = next(
            (int(a.get("price_per_1000_rows") or 0) for a in algorithms if a["name"] == job.get("algorithm")), 0
        )
        retrain_cost = (
            fmt.training_cost(int(by_dataset[int(chosen_dataset)].get("rows") or 0), price)
            if chosen_dataset is not None
            else 0
        )
        with st.form(f"retrain-{job_id}"):
            params = st.text_area(
                "Hyperparameters (JSON)",
                value=json.dumps(job.get("hyperparameters") or {}, indent=2),
                key=f"retrain_params-{job_id}",
            )
            if st.form_submit_button(
                f"Pay {fmt.credits(retrain_cost)} and retrain", type="primary", icon=":material/replay:"
            ):
                try:
                    hyperparameters = json.loads(params or "{}")
                except ValueError:
                    hyperparameters = None
                if not isinstance(hyperparameters, dict):
                    st.error('The hyperparameters must be a JSON object, like {"n_estimators": 50}.')
                elif chosen_dataset is None:
                    st.error("Upload a dataset first.")
                else:
                    new = attempt(
                        lambda: client.retrain(job_id, int(chosen_dataset), hyperparameters),
                        "The training did not start: ",
                    )
                    if new is not None:
                        st.session_state[OPEN_JOB] = new["id"]
                        done(f"Training {str(new['id'])[:8]} started: a retraining of {short}.")
        st.subheader("Delete")
        if st.button("Move to the trash", icon=":material/delete:", key="job_trash") and act(
            lambda: client.delete_training_job(job_id), "The training was not deleted: "
        ):
            done(f"Training {short} is in the trash; restore it from here.")
    with st.expander("Delete for good"):
        sure = st.checkbox(
            f"Delete training {short} and its model file for good (a published model keeps its file); "
            "this cannot be undone",
            key=f"job_hard_sure-{job_id}",
        )
        if st.button(
            "Delete for good",
            type="primary",
            disabled=not sure,
            icon=":material/delete_forever:",
            key=f"job_hard-{job_id}",
        ) and act(lambda: client.delete_training_job(job_id, hard=True), "The training was not deleted: "):
            done(f"Training {short} is deleted for good.")


def tab(client: ApiClient) -> None:
    """The "My trainings" tab: every past training, and opening one."""
    jobs = session.call(lambda: client.training_jobs(include_deleted=True))
    if not jobs:
        st.caption("No training yet.")
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "started": fmt.parse_time(j.get("created_at")),
                        "algorithm": j.get("algorithm"),
                        "target": j.get("target"),
                        "rows": j.get("rows"),
                        "status": j.get("status"),
                        "cost": j.get("cost"),
                        "in trash": bool(j.get("deleted")),
                        "id": j.get("id"),
                    }
                    for j in jobs
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={"started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm")},
        )
        st.divider()
        manage_job(client, {str(j["id"]): j for j in jobs})
