"""One prediction task on screen: its live status, rejected rows, results, a chart and the CSV download.

The predict page shows the task it just paid for; the history page shows the one a person opens.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any, Literal

import altair as alt
import pandas as pd
import streamlit as st

from web_ui.utils import formatting as fmt
from web_ui.utils.api import ApiClient, ApiError, SessionExpired
from web_ui.utils.session import show_error

FINISHED = ("succeeded", "failed")
STATUS_WORDS = {
    "queued": "Queued: waiting for a worker…",
    "running": "Running: the model is predicting…",
    "succeeded": "Done: the prediction succeeded",
    "failed": "The prediction failed",
}
POLL_SECONDS = 0.5
# The results CSV of a classifier asked for probabilities has one such column per class, after the prediction.
PROBABILITY = "probability_"
FOLLOW_MAX_SECONDS = 300.0
BAR_COLOUR = "#64748b"  # slate: neutral, readable on the light and the dark theme
LABEL_COLOUR = "#475569"
ROW_PX, CHART_PADDING_PX = 40, 100  # a class's line, and the title and axis around the bars


def follow(client: ApiClient, task: dict[str, Any], where: Any = None) -> dict[str, Any]:
    """Shows the task's status live until it finishes (or a time limit passes); returns the latest task.

    ``where`` (an ``st.empty()`` slot) holds the status line alone while it runs: one element, which takes the
    place of everything an earlier result left there at once.
    """
    if task.get("status") in FINISHED:
        return task
    task_id = str(task["id"])
    status = str(task.get("status", "queued"))
    with (where if where is not None else st).status(STATUS_WORDS.get(status, status), expanded=False) as box:
        try:
            for event in client.prediction_events(task_id, max_seconds=FOLLOW_MAX_SECONDS):
                status = str(event.get("status", status))
                box.update(label=STATUS_WORDS.get(status, status))
                if status in FINISHED:
                    break
        except SessionExpired:
            raise
        except ApiError:
            # The event stream can be cut by a proxy; asking now and then gets there too.
            deadline = time.monotonic() + FOLLOW_MAX_SECONDS
            while status not in FINISHED and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                status = str(client.prediction(task_id).get("status", status))
                box.update(label=STATUS_WORDS.get(status, status))
        latest = client.prediction(task_id)
        status = str(latest.get("status", status))
        box.update(label=STATUS_WORDS.get(status, status), state=_state(status))
    return latest


def _state(status: str) -> Literal["running", "complete", "error"]:
    return "complete" if status == "succeeded" else "error" if status == "failed" else "running"


def status_line(task: dict[str, Any]) -> None:
    """The status line a followed task ends with ("Done: the prediction succeeded"), drawn again with its result."""
    status = str(task.get("status", ""))
    st.status(STATUS_WORDS.get(status, status), state=_state(status), expanded=False)


def summary(task: dict[str, Any]) -> None:
    cols = st.columns(4)
    cols[0].markdown(f"**Status**  \n{fmt.status_badge(str(task.get('status')))}")
    cols[1].metric("Cost", fmt.credits(task.get("cost")))
    cols[2].metric("Rows predicted", task.get("rows_accepted", 0))
    cols[3].metric("Rows rejected", task.get("rows_rejected", 0))
    st.caption(
        f"Model **{task.get('model')}** v{task.get('version')} · task `{task.get('id')}`"
        + (f" · submitted {fmt.when(task.get('created_at'))}" if task.get("created_at") else "")
    )


def rejected_rows(errors: list[dict[str, Any]]) -> None:
    if not errors:
        return
    st.warning(
        f"{fmt.count(len(errors), 'row')} {'was' if len(errors) == 1 else 'were'} rejected and not charged:",
        icon=":material/warning:",
    )
    table = pd.DataFrame([{"row": e.get("row"), "reason": e.get("reason")} for e in errors])
    st.dataframe(table, hide_index=True, width="stretch")


def task_kind(client: ApiClient, task: dict[str, Any]) -> str | None:
    """ "classification" or "regression" for the model that ran ``task``: a classifier's answer names its classes
    when probabilities were asked, else the catalog knows the version's task. None when neither says."""
    if isinstance(task.get("classes"), list) and task["classes"]:
        return "classification"
    try:
        model = client.model(str(task.get("model")))
    except SessionExpired:
        raise
    except ApiError:
        return None  # unpublished since: the chart falls back to the type of the predictions
    same = [v for v in model.get("versions") or [] if str(v.get("version")) == str(task.get("version"))]
    kind = (same[0] if same else model).get("task") or model.get("task")
    return str(kind) if kind in ("classification", "regression") else None


def class_chart(predictions: pd.Series) -> None:
    """One horizontal bar per class with its count, the most frequent first; as tall as the classes need."""
    counts = predictions.astype(str).value_counts().rename_axis("prediction").reset_index(name="rows")
    counts = counts.sort_values(["rows", "prediction"], ascending=[False, True], kind="stable")
    order = list(counts["prediction"])
    base = alt.Chart(counts).encode(
        y=alt.Y(
            "prediction:N",
            sort=order,
            title=None,
            scale=alt.Scale(paddingInner=0.3, paddingOuter=0.15),
            axis=alt.Axis(labelLimit=260, labelFontSize=13),
        ),
        # Room on the right for the count printed after the longest bar.
        x=alt.X(
            "rows:Q",
            title="rows",
            scale=alt.Scale(domain=[0, math.ceil(int(counts["rows"].max()) * 1.15)], nice=False),
            axis=alt.Axis(tickMinStep=1, format="d"),
        ),
        tooltip=[alt.Tooltip("prediction:N", title="class"), alt.Tooltip("rows:Q", title="rows")],
    )
    # One quiet colour: no class looks like an alarm; the count at the end of each bar.
    bars = base.mark_bar(color=BAR_COLOUR, cornerRadiusEnd=3)
    labels = base.mark_text(align="left", dx=4, color=LABEL_COLOUR, fontSize=12).encode(text="rows:Q")
    height = CHART_PADDING_PX + ROW_PX * len(counts)
    st.altair_chart((bars + labels).properties(title="Predicted classes"), width="stretch", height=height)


def _chart(frame: pd.DataFrame, kind: str | None) -> None:
    predictions = frame["prediction"]
    numeric = pd.api.types.is_numeric_dtype(predictions) and not pd.api.types.is_bool_dtype(predictions)
    if kind == "classification" or (kind is None and not numeric):
        class_chart(predictions)
        return
    chart = (
        alt.Chart(frame)
        .mark_bar(color=BAR_COLOUR)
        .encode(
            x=alt.X("prediction:Q", bin=alt.Bin(maxbins=30), title="prediction"),
            y=alt.Y("count():Q", title="rows", axis=alt.Axis(tickMinStep=1, format="d")),
        )
        .properties(title="Distribution of the predictions")
    )
    st.altair_chart(chart, width="stretch", height=260)


def _predicted(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that were predicted, as plain NumPy columns (whole numbers stay whole).

    The CSV lists every row sent, the rejected ones with ``status`` "rejected" and empty cells: they are shown
    above with their reasons, the table and the chart show the others.
    """
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"].drop(columns=["status", "error"], errors="ignore")
    plain = {}
    for name in frame.columns:
        column = frame[name]
        if not column.isna().any():
            plain[name] = column.to_numpy()
        elif pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
            plain[name] = column.to_numpy(dtype="float64", na_value=float("nan"))
        else:
            plain[name] = column.to_numpy(dtype=object, na_value=None)
    # The answer first: on a wide model the prediction would otherwise sit far to the right, off-screen.
    first = [c for c in ("row", "prediction") if c in frame.columns]
    return pd.DataFrame(plain, columns=first + [c for c in frame.columns if c not in first])


def _share(value: Any) -> float | None:
    """A probability from the API as a float in [0, 1], or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, float(value))) if -1e-9 <= value <= 1 + 1e-9 else None


def class_probabilities(task: dict[str, Any], frame: pd.DataFrame | None) -> list[tuple[str, float]]:
    """Each class's probability for a one-row result, the most likely first: from the task's ``classes`` and
    ``probabilities`` (one list per result), else from the ``probability_<class>`` columns of the results CSV.
    Empty when the answer has none (a regressor, a version of the API without them, more than one row)."""
    classes, given = task.get("classes"), task.get("probabilities")
    pairs: list[tuple[str, Any]] = []
    if isinstance(classes, list) and isinstance(given, list) and len(given) == 1 and isinstance(given[0], list):
        if len(given[0]) == len(classes):
            pairs = [(str(c), p) for c, p in zip(classes, given[0], strict=True)]
    elif frame is not None and len(frame) == 1:
        named = [str(c) for c in frame.columns if str(c).startswith(PROBABILITY)]
        pairs = [(c[len(PROBABILITY) :], frame[c].iloc[0]) for c in named]
    shares = [(label, _share(p)) for label, p in pairs]
    clean = [(label, p) for label, p in shares if p is not None]
    if not clean or len(clean) != len(pairs):
        return []
    return sorted(clean, key=lambda pair: -pair[1])


def probability_bars(pairs: list[tuple[str, float]]) -> None:
    """One bar per class, the most likely first, with its percentage."""
    with st.container(key="class-probabilities"):
        st.markdown("**Class probabilities**")
        for label, share in pairs:
            st.progress(share, text=f"{label}: {share:.1%}")


def _columns(frame: pd.DataFrame) -> dict[str, Any]:
    """The prediction pinned on the left, each class's probability as a percentage bar."""
    config: dict[str, Any] = {"prediction": st.column_config.Column("prediction", pinned=True)}
    for column in frame.columns:
        if str(column).startswith(PROBABILITY):
            config[str(column)] = st.column_config.ProgressColumn(
                str(column), format="percent", min_value=0.0, max_value=1.0
            )
    return config


def results(client: ApiClient, task: dict[str, Any], kind: str | None = None) -> None:
    """The results table, a chart (one bar per class for a classifier, a histogram for a regressor) and the CSV."""
    task_id = str(task["id"])
    try:
        data = client.results_csv(task_id)
    except ApiError as exc:
        show_error(exc, "The results cannot be shown: ")
        return
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype_backend="numpy_nullable")
    except (ValueError, pd.errors.ParserError):
        st.error("The results arrived but could not be read as a table; download them instead.")
        frame = None
    if frame is not None:
        frame = _predicted(frame)
    if frame is not None and "prediction" in frame.columns:
        if len(frame) == 1:
            value = frame["prediction"].iloc[0]
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            st.metric("Prediction", shown)
            pairs = class_probabilities(task, frame)
            if pairs:
                probability_bars(pairs)
        st.dataframe(frame, hide_index=True, width="stretch", column_config=_columns(frame))
        if len(frame) > 1:
            _chart(frame, kind or task_kind(client, task))
    st.caption(
        "The CSV lists every row you sent in order, with its `status` (ok or rejected) and, "
        "for a rejected row, the `error` that says why."
    )
    st.download_button(
        "Download the results (CSV)",
        data=data,
        file_name=f"prediction-{task_id}.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key=f"download-{task_id}",
    )


def show(client: ApiClient, task: dict[str, Any], *, live: bool = True, kind: str | None = None) -> dict[str, Any]:
    """Everything about one task; with ``live``, waits for an unfinished task and shows each status change.

    ``kind`` is the model's task ("classification" or "regression") when the page knows it; else it is looked up.
    """
    if live:
        task = follow(client, task)
    summary(task)
    rejected_rows(list(task.get("errors") or []))
    status = task.get("status")
    if status == "succeeded":
        results(client, task, kind)
    elif status == "failed":
        reason = task.get("error") or "the worker could not run the model"
        st.error(f"The prediction failed: {reason}. Its {fmt.credits(task.get('cost'))} were refunded.")
    else:
        st.info("The prediction is not finished yet. Open it again in a moment.", icon=":material/schedule:")
    return task
