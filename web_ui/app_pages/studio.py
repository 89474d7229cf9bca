"""The training studio: upload a dataset, train a model on the workers, read its report, publish it, earn."""

from __future__ import annotations

import time
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from web_ui.utils import formatting as fmt
from web_ui.utils import session
from web_ui.utils.api import ApiClient, ApiError

CURRENT_JOB = "studio_job"
FINISHED = ("succeeded", "failed")
FOLLOW_MAX_SECONDS = 600.0
POLL_SECONDS = 0.5

client = session.client()
user = session.current_user() or {}
st.title(":material/model_training: Training studio")
st.caption("Train a model from your own CSV data, publish it at a price, and earn a share of every paid prediction.")


def hyperparameter_input(algorithm: str, name: str, spec: dict[str, Any]) -> Any:
    """One widget per hyperparameter, from its JSON schema; None means 'leave it to the default'."""
    key = f"hp-{algorithm}-{name}"
    kinds = spec.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    nullable = "null" in kinds
    default = spec.get("default")
    help_text = spec.get("description")
    if "enum" in spec:
        options = [str(o) for o in spec["enum"]]
        return st.selectbox(name, options, index=options.index(str(default)) if default in options else 0, key=key)
    if "boolean" in kinds:
        return st.checkbox(name, value=bool(default), help=help_text, key=key)
    if "integer" in kinds or "number" in kinds:
        integer = "integer" in kinds
        if nullable and st.checkbox(f"{name}: none", value=default is None, help=help_text, key=f"{key}-none"):
            return None
        low, high = spec.get("minimum"), spec.get("maximum")
        start = default if default is not None else (low if low is not None else 0)
        if integer:
            return int(
                st.number_input(
                    name,
                    min_value=int(low) if low is not None else None,
                    max_value=int(high) if high is not None else None,
                    value=int(start),
                    step=1,
                    help=help_text,
                    key=key,
                )
            )
        return float(
            st.number_input(
                name,
                min_value=float(low) if low is not None else None,
                max_value=float(high) if high is not None else None,
                value=float(start),
                help=help_text,
                format="%.4g",
                key=key,
            )
        )
    text = st.text_input(name, value="" if default is None else str(default), help=help_text, key=key)
    return text or None


def follow(client: ApiClient, job: dict[str, Any]) -> dict[str, Any]:
    """A progress bar until the training job finishes."""
    if job.get("status") in FINISHED:
        return job
    bar = st.progress(0, text="Queued: waiting for a worker…")
    deadline = time.monotonic() + FOLLOW_MAX_SECONDS
    while job.get("status") not in FINISHED and time.monotonic() < deadline:
        progress = max(0, min(100, int(job.get("progress") or 0)))
        bar.progress(progress, text=f"{str(job.get('status')).capitalize()}: {job.get('stage') or ''} ({progress}%)")
        time.sleep(POLL_SECONDS)
        job = client.training_job(str(job["id"]))
    bar.progress(100 if job.get("status") == "succeeded" else int(job.get("progress") or 0), text=job.get("status"))
    return job


def confusion_chart(report: dict[str, Any]) -> alt.Chart | None:
    matrix, classes = report.get("confusion_matrix"), report.get("classes")
    if not matrix or not classes:
        return None
    cells = [
        {"actual": str(classes[i]), "predicted": str(classes[j]), "rows": int(count)}
        for i, row in enumerate(matrix)
        for j, count in enumerate(row)
    ]
    base = alt.Chart(pd.DataFrame(cells)).encode(
        x=alt.X("predicted:N", sort=[str(c) for c in classes]), y=alt.Y("actual:N", sort=[str(c) for c in classes])
    )
    heat = base.mark_rect().encode(color=alt.Color("rows:Q", scale=alt.Scale(scheme="blues")), tooltip=["rows:Q"])
    labels = base.mark_text(fontSize=14).encode(text="rows:Q")
    return (heat + labels).properties(title="Confusion matrix (held-out rows)", height=320)


def importance_chart(report: dict[str, Any]) -> alt.Chart | None:
    importance = report.get("feature_importance") or {}
    values = importance.get("values", importance) if isinstance(importance, dict) else {}
    rows = [{"feature": str(k), "importance": float(v)} for k, v in values.items() if isinstance(v, int | float)]
    if not rows:
        return None
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(x="importance:Q", y=alt.Y("feature:N", sort="-x"), tooltip=["feature:N", "importance:Q"])
        .properties(title="Feature importance", height=max(160, 22 * len(rows)))
    )


def show_job(client: ApiClient, job: dict[str, Any]) -> None:
    job = follow(client, job)
    st.session_state[CURRENT_JOB] = job
    cols = st.columns(4)
    cols[0].markdown(f"**Status**  \n{fmt.status_badge(str(job.get('status')))}")
    cols[1].markdown(f"**Algorithm**  \n{job.get('algorithm')}")
    cols[2].metric("Rows", f"{int(job.get('rows') or 0):,}")
    cols[3].metric("Cost", fmt.credits(job.get("cost")))
    if job.get("status") == "failed":
        st.error(f"The training failed: {job.get('error') or 'the worker could not train the model'}.")
        return
    if job.get("status") != "succeeded":
        st.info("The training is not finished yet. Open it again in a moment.", icon=":material/schedule:")
        return
    report = session.call(lambda: client.training_report(str(job["id"])))
    metrics = report.get("metrics") or {}
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    shown = {k: v for k, v in numbers.items() if k.startswith("test_")} or numbers  # held-out scores first
    if shown:
        metric_cols = st.columns(min(4, len(shown)))
        for index, (name, value) in enumerate(shown.items()):
            metric_cols[index % len(metric_cols)].metric(name.replace("_", " "), f"{value:.4g}")
    left, right = st.columns(2)
    chart = confusion_chart(report)
    if chart is not None:
        left.altair_chart(chart, width="stretch")
    chart = importance_chart(report)
    if chart is not None:
        right.altair_chart(chart, width="stretch")
    try:
        pdf = client.training_report_pdf(str(job["id"]))
    except ApiError as exc:
        session.show_error(exc, "The PDF report cannot be downloaded: ")
    else:
        st.download_button(
            "Download the report (PDF)",
            data=pdf,
            file_name=f"training-report-{job['id']}.pdf",
            mime="application/pdf",
            icon=":material/picture_as_pdf:",
            on_click="ignore",
            key=f"pdf-{job['id']}",
        )
    st.subheader("Publish this model")
    with st.form(f"publish-{job['id']}"):
        name = st.text_input("Catalog name", placeholder="lowercase letters, digits and dashes", key="publish_name")
        description = st.text_area("Description", max_chars=2000, key="publish_description")
        price = st.number_input(
            "Price per row (credits)", min_value=1, max_value=1_000_000, value=1, key="publish_price"
        )
        if st.form_submit_button("Publish", type="primary", icon=":material/publish:"):
            try:
                model = client.publish(str(job["id"]), name.strip(), int(price), description.strip())
            except ApiError as exc:
                session.show_error(exc, "The model was not published: ")
            else:
                st.success(
                    f"Published {model['name']} v{model['version']} at {fmt.credits(model['price_per_row'])} per row.",
                    icon=":material/storefront:",
                )


datasets_tab, train_tab, jobs_tab, earnings_tab = st.tabs(["Datasets", "Train", "My trainings", "Models and earnings"])

with datasets_tab:
    with st.form("upload-dataset", clear_on_submit=False):
        st.markdown("**Upload a dataset**: a UTF-8 CSV file with a header row and a column to predict.")
        upload = st.file_uploader("CSV file", type=["csv"], key="dataset_file")
        target = st.text_input("Column to predict", value="target", key="dataset_target")
        dataset_name = st.text_input("Name (optional)", key="dataset_name")
        if st.form_submit_button("Upload", type="primary", icon=":material/upload:"):
            if upload is None:
                st.error("Choose a CSV file first.")
            else:
                try:
                    created = client.upload_dataset(
                        upload.name, upload.getvalue(), target.strip() or None, dataset_name.strip() or None
                    )
                except ApiError as exc:
                    session.show_error(exc, "The dataset was not accepted: ")
                else:
                    st.success(
                        f"Dataset {created['name']} stored: {created['rows']:,} rows, "
                        f"{len(created['columns'])} columns, a {created['task']} task on {created['target']!r}.",
                        icon=":material/check_circle:",
                    )
    datasets = session.call(client.datasets)
    if datasets:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "id": d["id"],
                        "name": d["name"],
                        "version": d["version"],
                        "rows": d["rows"],
                        "task": d["task"],
                        "target": d["target"],
                        "columns": ", ".join(d["columns"]),
                    }
                    for d in datasets
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    else:
        st.caption("No dataset yet.")

with train_tab:
    datasets = session.call(client.datasets)
    if not datasets:
        st.info("Upload a dataset first.", icon=":material/info:")
    else:
        by_id = {int(d["id"]): d for d in datasets}
        dataset_id = st.selectbox(
            "Dataset",
            list(by_id),
            format_func=lambda i: (
                f"{by_id[i]['name']} v{by_id[i]['version']} · {by_id[i]['rows']:,} rows"
                f" · {by_id[i]['task']} on {by_id[i]['target']!r}"
            ),
            key="train_dataset",
        )
        dataset = by_id[int(dataset_id)]
        algorithms = [a for a in session.call(client.algorithms) if a.get("task") == dataset.get("task")]
        by_name = {str(a["name"]): a for a in algorithms}
        algorithm = st.selectbox("Algorithm", list(by_name), key="train_algorithm")
        if algorithm:
            st.caption(str(by_name[algorithm].get("description") or ""))
            with st.form(f"train-{algorithm}"):
                st.markdown("**Hyperparameters**")
                properties = (by_name[algorithm].get("hyperparameters") or {}).get("properties") or {}
                columns = st.columns(2)
                chosen: dict[str, Any] = {}
                for index, (name, spec) in enumerate(properties.items()):
                    with columns[index % 2]:
                        value = hyperparameter_input(algorithm, name, spec)
                    if value is not None:
                        chosen[name] = value
                test_size = st.slider("Share of rows held out for testing", 0.05, 0.5, 0.2, 0.05, key="train_test")
                if st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:"):
                    try:
                        job = client.start_training(
                            {
                                "dataset_id": int(dataset_id),
                                "algorithm": algorithm,
                                "hyperparameters": chosen,
                                "test_size": test_size,
                            }
                        )
                    except ApiError as exc:
                        session.show_error(exc, "The training did not start: ")
                    else:
                        st.session_state[CURRENT_JOB] = job
                        st.rerun()  # so every balance on screen shows the charge
        current = st.session_state.get(CURRENT_JOB)
        if isinstance(current, dict):
            st.divider()
            show_job(client, current)

with jobs_tab:
    jobs = session.call(client.training_jobs)
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
                        "id": j.get("id"),
                    }
                    for j in jobs
                ]
            ),
            hide_index=True,
            width="stretch",
        )

with earnings_tab:
    mine = [m for m in session.call(client.models) if m.get("owner") == user.get("email")]
    payouts = [e for e in session.call(lambda: client.ledger(limit=500)) if e.get("kind") == "payout"]
    stats = st.columns(3)
    stats[0].metric("Published models", len(mine), border=True)
    stats[1].metric("Earned", fmt.credits(sum(int(e.get("amount") or 0) for e in payouts)), border=True)
    stats[2].metric("Paid predictions", len(payouts), border=True)
    if mine:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "model": m["name"],
                        "version": m["version"],
                        "task": m["task"],
                        "price per row": m["price_per_row"],
                        "algorithm": m["algorithm"],
                    }
                    for m in mine
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    if payouts:
        frame = pd.DataFrame(
            [{"day": fmt.parse_time(e.get("created_at")), "credits": int(e.get("amount") or 0)} for e in payouts]
        )
        frame["day"] = pd.to_datetime(frame["day"]).dt.floor("D")
        st.altair_chart(
            alt.Chart(frame.groupby("day", as_index=False)["credits"].sum())
            .mark_bar()
            .encode(x=alt.X("day:T", title=None), y="credits:Q")
            .properties(title="Earnings per day", height=220),
            width="stretch",
        )
