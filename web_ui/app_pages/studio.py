"""The training studio: upload a dataset, train a model on the workers, read its report, publish it, earn."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from web_ui.utils import csv_check, session
from web_ui.utils import formatting as fmt
from web_ui.utils.api import ApiClient, ApiError

CURRENT_JOB = "studio_job"
DONE = "studio_done"  # the message of an action that reran the page
OPEN_JOB = "studio_open_job"  # a job to open in "My trainings" on the next run
MAX_APPEND_BYTES = 2 * 2**20
MAX_DATASET_MB = 5  # the API's dataset limit (MLMARKET_DATASET_MAX_BYTES, 5 MiB by default)
FINISHED = ("succeeded", "failed")
FOLLOW_MAX_SECONDS = 600.0
POLL_SECONDS = 0.5

client = session.client()
user = session.current_user() or {}
st.title(":material/model_training: Training studio")
st.caption("Train a model from your own CSV data, publish it at a price, and earn a share of every paid prediction.")
if DONE in st.session_state:
    st.success(str(st.session_state.pop(DONE)), icon=":material/check_circle:")


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
        shards = job.get("shard_status") or []
        done_shards = (
            f" · {sum(1 for s in shards if s.get('status') == 'succeeded')}/{len(shards)} shards" if shards else ""
        )
        bar.progress(
            progress,
            text=f"{str(job.get('status')).capitalize()}: {job.get('stage') or ''} ({progress}%){done_shards}",
        )
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
        .mark_bar(color="#4f46e5")
        .encode(
            x=alt.X("importance:Q", title="importance"),
            y=alt.Y("feature:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320, labelFontSize=12)),
            tooltip=["feature:N", alt.Tooltip("importance:Q", format=".3f")],
        )
        .properties(title="Feature importance", height=max(160, 28 * len(rows)))
    )


def shard_table(job: dict[str, Any]) -> None:
    """Where each shard of a sharded training is: its rows, status, worker, attempts and time."""
    shards = job.get("shard_status") or []
    if not shards:
        return
    st.markdown(f"**{len(shards)} shards**, trained on the workers in parallel and merged into one model")
    st.caption(
        "A shard is one part of the training rows. Each is trained by whichever worker is free, at the same "
        "time as the others, and the parts are merged into one model: a big dataset trains sooner."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "shard": int(s.get("index") or 0) + 1,
                    "rows": s.get("rows"),
                    "status": s.get("status"),
                    "worker": s.get("worker") or "",
                    "attempts": s.get("attempts"),
                    "seconds": s.get("duration_seconds"),
                    "error": s.get("error") or "",
                }
                for s in shards
            ]
        ),
        hide_index=True,
        width="stretch",
    )


def show_job(client: ApiClient, job: dict[str, Any], where: str = "") -> None:
    """A job's status and, once it succeeded, its report, downloads and the publish form.

    ``where`` prefixes the widget keys, so the same job can be shown in two tabs.
    """
    job = follow(client, job)
    cols = st.columns(4)
    cols[0].markdown(f"**Status**  \n{fmt.status_badge(str(job.get('status')))}")
    cols[1].markdown(f"**Algorithm**  \n{job.get('algorithm')}")
    cols[2].metric("Rows", f"{int(job.get('rows') or 0):,}")
    cols[3].metric("Cost", fmt.credits(job.get("cost")))
    shard_table(job)
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
    split = report.get("rows") or {}
    if shown:
        metric_cols = st.columns(min(4, len(shown)))
        for index, (name, value) in enumerate(shown.items()):
            measured = split.get("test") if name.startswith("test_") else split.get("train")
            metric_cols[index % len(metric_cols)].metric(
                name.replace("_", " "),
                f"{value:.4g}",
                help=f"Measured on {int(measured):,} rows" if isinstance(measured, int) else None,
            )
        if isinstance(split.get("test"), int) and isinstance(split.get("train"), int):
            st.caption(
                f"Scores measured on the {split['test']:,} held-out test rows the model never saw "
                f"(it was trained on the other {split['train']:,})."
            )
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
            key=f"{where}pdf-{job['id']}",
        )
    try:
        artifact = client.training_artifact(str(job["id"]))
    except ApiError as exc:
        session.show_error(exc, "The model file cannot be downloaded: ")
    else:
        st.download_button(
            "Download the trained model (skops)",
            data=artifact,
            file_name=f"model-{job['id']}.skops",
            mime="application/octet-stream",
            icon=":material/download:",
            on_click="ignore",
            key=f"{where}artifact-{job['id']}",
        )
    st.subheader("Publish this model")
    with st.form(f"{where}publish-{job['id']}"):
        name = st.text_input(
            "Catalog name", placeholder="lowercase letters, digits and dashes", key=f"{where}publish_name"
        )
        description = st.text_area("Description", max_chars=2000, key=f"{where}publish_description")
        price = st.number_input(
            "Price per row (credits)", min_value=1, max_value=1_000_000, value=1, key=f"{where}publish_price"
        )
        if st.form_submit_button("Publish", type="primary", icon=":material/publish:"):
            request = {"name": name.strip(), "price": int(price), "description": description.strip()}
            existing = existing_model(client, request["name"])
            if existing is None:
                publish(client, job, request, where)
            else:
                st.session_state[f"{where}publish_review-{job['id']}"] = request
    review = st.session_state.get(f"{where}publish_review-{job['id']}")
    if isinstance(review, dict):
        review_publishing(client, job, report, review, where)


def existing_model(client: ApiClient, name: str) -> dict[str, Any] | None:
    """The catalog's model of that name, or None when the name is free (or not a valid name: the API says why)."""
    if not name:
        return None
    try:
        return client.model(name)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def publish(client: ApiClient, job: dict[str, Any], request: dict[str, Any], where: str) -> None:
    st.session_state.pop(f"{where}publish_review-{job['id']}", None)
    try:
        model = client.publish(str(job["id"]), request["name"], request["price"], request["description"])
    except ApiError as exc:
        session.show_error(exc, "The model was not published: ")
    else:
        st.success(
            f"Published {model['name']} v{model['version']} at {fmt.credits(model['price_per_row'])} per row.",
            icon=":material/storefront:",
        )


def schema_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """What a buyer of the old inputs would notice in the new ones, one sentence each."""
    before = {str(f.get("name")): f for f in old}
    after = {str(f.get("name")): f for f in new}
    changes = [f"Input `{n}` is new ({after[n].get('type')})" for n in after if n not in before]
    changes += [f"Input `{n}` is gone" for n in before if n not in after]
    changes += [
        f"Input `{n}` changes from {before[n].get('type')} to {after[n].get('type')}"
        for n in after
        if n in before and before[n].get("type") != after[n].get("type")
    ]
    return changes


def review_publishing(
    client: ApiClient, job: dict[str, Any], report: dict[str, Any], request: dict[str, Any], where: str
) -> None:
    """The name is taken: say what a new version changes for buyers, and publish only once the author agrees."""
    current = existing_model(client, request["name"]) or {}
    version = int(current.get("version") or 0)
    with st.container(border=True, key=f"{where}publish-review"):
        st.warning(
            f"**{request['name']}** is already in the catalog (v{version}). Publishing adds v{version + 1}, "
            f"which buyers get by default; v{version} and earlier stay on sale and can still be chosen.",
            icon=":material/difference:",
        )
        changes = schema_changes(list(current.get("input_schema") or []), list(report.get("features") or []))
        old_price, new_price = int(current.get("price_per_row") or 0), int(request["price"])
        if old_price != new_price:
            changes.append(f"Price per row changes from {fmt.credits(old_price)} to {fmt.credits(new_price)}")
        if current.get("task") and report.get("task") and current.get("task") != report.get("task"):
            changes.append(f"Task changes from {current.get('task')} to {report.get('task')}")
        if not request["description"] and current.get("description"):
            request = {**request, "description": str(current["description"])}
            changes.append("The description of the current version is kept (yours was empty)")
        if changes:
            st.markdown("**What changes for buyers:**\n" + "\n".join(f"- {c}" for c in changes))
        else:
            st.markdown("Same inputs, same price: only the model behind them changes.")
        go, cancel = st.columns(2)
        if go.button(
            f"Publish as v{version + 1}", type="primary", icon=":material/publish:", key=f"{where}publish-confirm"
        ):
            publish(client, job, request, where)
        if cancel.button("Cancel", key=f"{where}publish-cancel"):
            st.session_state.pop(f"{where}publish_review-{job['id']}", None)
            st.rerun()


def csv_records(data: bytes) -> list[dict[str, Any]]:
    """The rows of a small CSV file as JSON records (missing values as null); ValueError when unreadable."""
    if len(data) > MAX_APPEND_BYTES:
        raise ValueError(f"the file is larger than {MAX_APPEND_BYTES // 2**20} MiB")
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError("the file is not a UTF-8 CSV with a header row") from exc
    if frame.empty:
        raise ValueError("the file has no rows")
    return list(json.loads(frame.to_json(orient="records")))


def dataset_details(info: dict[str, Any]) -> None:
    figures = st.columns(4)
    figures[0].metric("Version", info.get("version"), border=True)
    figures[1].metric("Rows", f"{int(info.get('rows') or 0):,}", border=True)
    figures[2].metric("Columns", len(info.get("columns") or []), border=True)
    figures[3].metric("Task", fmt.TASK_LABELS.get(str(info.get("task")), str(info.get("task"))), border=True)
    target = info.get("target_summary") or {}
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Target `{target.get('name')}`** ({int(target.get('missing') or 0)} missing)")
        classes = target.get("classes")
        if isinstance(classes, dict) and classes:
            counts = pd.DataFrame([{"class": str(k), "rows": int(v)} for k, v in classes.items()])
            # Horizontal bars in one colour: long class names stay readable and no class looks like an alarm.
            st.altair_chart(
                alt.Chart(counts)
                .mark_bar(color="#4f46e5")
                .encode(
                    y=alt.Y("class:N", sort="-x", title=None, axis=alt.Axis(labelLimit=260)),
                    x=alt.X("rows:Q", title="rows", axis=alt.Axis(tickMinStep=1)),
                    tooltip=["class:N", "rows:Q"],
                )
                .properties(height=max(120, 34 * len(counts))),
                width="stretch",
            )
        else:
            st.markdown(
                f"From {target.get('min', '—'):.4g} to {target.get('max', '—'):.4g}, mean {target.get('mean', '—'):.4g}"
                if all(isinstance(target.get(k), int | float) for k in ("min", "max", "mean"))
                else "No summary of the target."
            )
    with right:
        st.markdown("**Versions**")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "version": v.get("version"),
                        "rows": v.get("rows"),
                        "note": v.get("note"),
                        "created": fmt.parse_time(v.get("created_at")),
                    }
                    for v in info.get("versions") or []
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    summary = info.get("column_summary") or []
    if summary:
        st.markdown("**Columns**")
        st.dataframe(pd.DataFrame(summary), hide_index=True, width="stretch")


def manage_dataset(client: ApiClient, by_id: dict[int, dict[str, Any]]) -> None:
    """One dataset: its info, appending rows, resetting, the trash and deleting for good."""
    st.subheader("Open a dataset")
    if st.session_state.get("dataset_pick") not in by_id:
        st.session_state.pop("dataset_pick", None)
    dataset_id = st.selectbox(
        "Dataset",
        list(by_id),
        format_func=lambda i: (
            f"#{i} {by_id[i]['name']} v{by_id[i]['version']} · {by_id[i]['rows']:,} rows"
            + (" · in the trash" if by_id[i].get("deleted") else "")
        ),
        key="dataset_pick",
    )
    dataset = by_id[int(dataset_id)]
    name = f"{dataset['name']} (#{dataset['id']})"
    if dataset.get("deleted"):
        st.info("This dataset is in the trash: restore it to train on it again.", icon=":material/delete:")
        if (
            st.button("Restore", icon=":material/restore_from_trash:", key="dataset_restore")
            and attempt(lambda: client.restore_dataset(int(dataset_id)), "The dataset was not restored: ") is not None
        ):
            done(f"Dataset {name} is back.")
    else:
        info = attempt(lambda: client.dataset_info(int(dataset_id)), "The dataset's summary cannot be shown: ")
        if info is not None:
            dataset_details(info)
        with st.form("append-rows", clear_on_submit=True):
            st.markdown(
                "**Append rows**: a CSV file with the dataset's columns; they become a new version "
                f"(at most {MAX_APPEND_BYTES // 2**20} MiB)."
            )
            more = st.file_uploader(
                f"CSV file with more rows (at most {MAX_APPEND_BYTES // 2**20} MB)",
                type=["csv"],
                key="append_file",
                max_upload_size=MAX_APPEND_BYTES // 2**20,
            )
            if st.form_submit_button("Append rows", icon=":material/playlist_add:"):
                if more is None:
                    st.error("Choose a CSV file first.")
                else:
                    try:
                        rows = csv_records(more.getvalue())
                    except ValueError as exc:
                        st.error(f"The rows were not appended: {exc}.", icon=":material/error:")
                    else:
                        grown = attempt(
                            lambda: client.append_rows(int(dataset_id), rows), "The rows were not appended: "
                        )
                        if grown is not None:
                            done(
                                f"Appended {len(rows):,} rows to {name}: version {grown['version']} "
                                f"has {grown['rows']:,} rows."
                            )
        actions = st.columns(2)
        if actions[0].button(
            "Reset to version 1",
            icon=":material/history:",
            key="dataset_reset",
            help="Adds a new version with the rows of the first one; earlier versions are kept.",
        ):
            reset = attempt(lambda: client.reset_dataset(int(dataset_id)), "The dataset was not reset: ")
            if reset is not None:
                done(
                    f"Dataset {name} is back to its first rows as version {reset['version']} ({reset['rows']:,} rows)."
                )
        if actions[1].button("Move to the trash", icon=":material/delete:", key="dataset_trash") and act(
            lambda: client.delete_dataset(int(dataset_id)), "The dataset was not deleted: "
        ):
            done(f"Dataset {name} is in the trash; restore it from here.")
    with st.expander("Delete for good"):
        sure = st.checkbox(
            f"Delete {name}, every version and its files for good; this cannot be undone",
            key=f"dataset_hard_sure-{dataset_id}",
        )
        if st.button(
            "Delete for good",
            type="primary",
            disabled=not sure,
            icon=":material/delete_forever:",
            key=f"dataset_hard-{dataset_id}",
        ) and act(lambda: client.delete_dataset(int(dataset_id), hard=True), "The dataset was not deleted: "):
            done(f"Dataset {name} is deleted for good.")


def job_label(job: dict[str, Any]) -> str:
    started = fmt.parse_time(job.get("created_at"))
    when = started.strftime("%Y-%m-%d %H:%M") if started else "?"
    label = f"{when} · {job.get('algorithm')} on {job.get('target')!r} · {job.get('status')} · {str(job.get('id'))[:8]}"
    return label + (" · in the trash" if job.get("deleted") else "")


def manage_job(client: ApiClient, by_id: dict[str, dict[str, Any]]) -> None:
    """One past training: its report, retraining, the trash and deleting for good."""
    st.subheader("Open a training")
    pending = st.session_state.pop(OPEN_JOB, None)
    if pending in by_id:
        st.session_state["job_pick"] = pending
    elif st.session_state.get("job_pick") not in by_id:
        st.session_state.pop("job_pick", None)
    job_id = str(st.selectbox("Training", list(by_id), format_func=lambda i: job_label(by_id[i]), key="job_pick"))
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
        with st.empty().container(key=f"past-job-{job_id}"):
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


datasets_tab, train_tab, jobs_tab, earnings_tab = st.tabs(["Datasets", "Train", "My trainings", "Models and earnings"])

with datasets_tab:
    with st.container(border=True):
        st.markdown(
            "**Add a dataset**: a CSV file with a header row; then choose the column the model should learn to predict."
        )
        upload = st.file_uploader(
            f"CSV file (at most {MAX_DATASET_MB} MB)",
            type=["csv"],
            key="dataset_file",
            max_upload_size=MAX_DATASET_MB,
        )
        header: list[str] = []
        encoding: str | None = None
        if upload is not None:
            encoding, text = csv_check.decode(upload.getvalue(), st.session_state.get("dataset_encoding"))
            if encoding is None or "dataset_encoding" in st.session_state:
                if encoding is None:
                    st.error(
                        "This file is not UTF-8 text. If a spreadsheet saved it, pick the encoding it used:",
                        icon=":material/error:",
                    )
                st.selectbox(
                    "File encoding",
                    list(csv_check.ENCODINGS),
                    index=None,
                    placeholder="Choose an encoding",
                    format_func=csv_check.ENCODINGS.get,
                    key="dataset_encoding",
                )
            if encoding is not None:
                first = next(csv.reader(io.StringIO(text)), [])
                header = [h.strip() for h in first if h.strip()]
                if not header:
                    st.error("The file is empty.", icon=":material/error:")
        target = None
        if header:
            default = header.index("target") if "target" in header else len(header) - 1
            target = st.selectbox(
                "Column to predict",
                header,
                index=default,
                key=f"dataset_target-{upload.name if upload else ''}",
                help="The other columns become the model's inputs.",
            )
        dataset_name = st.text_input("Name (optional)", key="dataset_name")
        if (
            st.button(
                "Add this dataset",
                type="primary",
                icon=":material/library_add:",
                disabled=upload is None or target is None,
                key="dataset_add",
            )
            and upload is not None
            and encoding is not None
        ):
            data = upload.getvalue() if encoding == "utf-8" else text.encode("utf-8")
            try:
                created = client.upload_dataset(upload.name, data, target, dataset_name.strip() or None)
            except ApiError as exc:
                session.show_error(exc, "The dataset was not accepted: ")
            else:
                st.success(
                    f"Dataset {created['name']} stored: {created['rows']:,} rows, "
                    f"{len(created['columns'])} columns, a {created['task']} task on {created['target']!r}.",
                    icon=":material/check_circle:",
                )
    all_datasets = session.call(lambda: client.datasets(include_deleted=True))
    if all_datasets:
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
                        "in trash": bool(d.get("deleted")),
                    }
                    for d in all_datasets
                ]
            ),
            hide_index=True,
            width="stretch",
        )
        st.divider()
        manage_dataset(client, {int(d["id"]): d for d in all_datasets})
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
                shards = 1
                if by_name[algorithm].get("shardable"):
                    shards = int(
                        st.number_input(
                            "Shards (parts trained at once)",
                            min_value=1,
                            max_value=8,
                            value=1,
                            step=1,
                            help="Split the training rows into this many parts, trained by several workers at once "
                            "and merged into one model.",
                            key=f"train_shards-{algorithm}",
                        )
                    )
                    st.caption(
                        "1 trains on one worker. 2 to 8 split the training rows into that many parts, trained by "
                        "several workers at the same time and merged into one model; the price stays the same."
                    )
                price = int(by_name[algorithm].get("price_per_1000_rows") or 0)
                rows = int(dataset.get("rows") or 0)
                cost = fmt.training_cost(rows, price)
                balance = int(session.call(client.wallet)["balance"])
                st.markdown(
                    f"**Cost: {fmt.credits(cost)}** ({rows:,} rows at {fmt.credits(price)} per started 1,000 rows)"
                    f" · your balance: {fmt.credits(balance)}"
                )
                short = balance < cost
                if short:
                    st.warning(
                        f"Your balance is {fmt.credits(cost - balance)} short of this training. Top up first.",
                        icon=":material/account_balance_wallet:",
                    )
                if st.form_submit_button(
                    f"Pay {fmt.credits(cost)} and start training",
                    type="primary",
                    icon=":material/play_arrow:",
                    disabled=short,
                ):
                    st.session_state.pop(CURRENT_JOB, None)  # a new training replaces the last one on screen
                    try:
                        job = client.start_training(
                            {
                                "dataset_id": int(dataset_id),
                                "algorithm": algorithm,
                                "hyperparameters": chosen,
                                "test_size": test_size,
                                **({"shards": shards} if shards > 1 else {}),
                            }
                        )
                    except ApiError as exc:
                        session.show_error(exc, "The training did not start: ")
                    else:
                        st.session_state[CURRENT_JOB] = job
                        st.rerun()  # so every balance on screen shows the charge
        current = st.session_state.get(CURRENT_JOB)
        if isinstance(current, dict):
            # A fresh placeholder first: no status, shard table or score of an earlier job stays under this one.
            with st.empty().container(key=f"job-{current.get('id')}"):
                st.divider()
                st.session_state[CURRENT_JOB] = current = follow(client, current)
                show_job(client, current)

with jobs_tab:
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

with earnings_tab:
    mine = [m for m in session.call(client.models) if fmt.is_mine(m, user)]
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
        names = sorted({str(m["name"]) for m in mine})
        with st.expander("Unpublish a model"):
            st.caption(
                "Takes every version of the model out of the catalog; predictions already made keep their history."
            )
            gone = st.selectbox("Model", names, key="unpublish_name")
            sure = st.checkbox(f"Take {gone} out of the catalog", key=f"unpublish_sure-{gone}")
            if st.button(
                "Unpublish", type="primary", disabled=not sure, icon=":material/unpublished:", key="unpublish"
            ):
                hidden = attempt(lambda: client.unpublish(str(gone)), "The model was not unpublished: ")
                if hidden is not None:
                    versions = len(hidden)
                    done(f"{gone} is out of the catalog ({versions} version{'s' if versions != 1 else ''}).")
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
