"""The "Datasets" tab of the training studio: upload, summary, appending rows, reset, trash and delete."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pandas as pd
import streamlit as st

from web_ui.studio.common import MAX_APPEND_BYTES, MAX_DATASET_MB, act, attempt, done
from web_ui.studio.report import bars
from web_ui.utils import csv_check, session
from web_ui.utils import formatting as fmt
from web_ui.utils.api import ApiClient, ApiError


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
    # The task's name is the longest figure ("Classification"): its column is wider, so it is never cut.
    figures = st.columns([2, 2, 2, 4])
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
            counts = [{"class": str(k), "rows": int(v)} for k, v in classes.items()]
            st.altair_chart(bars(counts, "class", "rows"), width="stretch")
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
            column_config={"created": fmt.time_column("created")},
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


def tab(client: ApiClient) -> None:
    """The "Datasets" tab: adding a dataset from a CSV file, the list of datasets, and opening one."""
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
                    format_func=lambda e: str(csv_check.ENCODINGS.get(e, e)),
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
