"""A training job on screen: its progress, status, shards, scores, charts and downloads."""

from __future__ import annotations

import time
from typing import Any, cast

import altair as alt
import pandas as pd
import streamlit as st

from web_ui.studio.common import FINISHED, FOLLOW_MAX_SECONDS, POLL_SECONDS
from web_ui.studio.publish import publish_form
from web_ui.utils import formatting as fmt
from web_ui.utils import session
from web_ui.utils.api import ApiClient, ApiError


def follow(client: ApiClient, job: dict[str, Any], slot: Any = None) -> dict[str, Any]:
    """A progress bar (in ``slot``, an ``st.empty()``, when given) until the training job finishes."""
    if job.get("status") in FINISHED:
        return job
    bar = (slot or st).progress(0, text="Queued: waiting for a worker…")
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


ROW_PX = 30  # the height of one bar: room for its label, never hidden for lack of space
AXIS_PX = 70  # the value axis under the bars, with its title
TITLE_PX = 36


def bars(rows: list[dict[str, Any]], label: str, value: str, title: str | None = None) -> alt.Chart:
    """Horizontal bars in one colour, longest first: one row of ``ROW_PX`` per label, every label written in full
    across, so long names stay readable and no bar looks like an alarm."""
    counts = value == "rows"
    height = AXIS_PX + (TITLE_PX if title else 0) + ROW_PX * len(rows)
    chart = (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar(color="#4f46e5")
        .encode(
            y=alt.Y(f"{label}:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320, labelOverlap=False)),
            # The first and last tick labels are drawn inside the chart's width, never cut at its edge.
            x=alt.X(
                f"{value}:Q",
                title=value,
                axis=alt.Axis(tickMinStep=1, labelFlush=True) if counts else alt.Axis(labelFlush=True),
            ),
            tooltip=[f"{label}:N", alt.Tooltip(f"{value}:Q", format=",d" if counts else ".3f")],
        )
        # Room on the right, so the last tick label (flush with the axis's end) is never cut by the chart's edge.
        .properties(height=height, padding={"left": 5, "top": 5, "bottom": 5, "right": 16})
    )
    return cast(alt.Chart, chart.properties(title=title)) if title else chart


def confusion_chart(report: dict[str, Any]) -> alt.Chart | None:
    matrix, classes = report.get("confusion_matrix"), report.get("classes")
    if not matrix or not classes:
        return None
    names = [str(c) for c in classes]
    cells = [
        {"actual": names[i], "predicted": names[j], "rows": int(count)}
        for i, row in enumerate(matrix)
        for j, count in enumerate(row)
    ]
    # Class names are written across, as they are read; only many classes are slanted to fit.
    across = alt.Axis(labelAngle=0 if len(names) <= 6 else -45, labelLimit=160)
    base = alt.Chart(pd.DataFrame(cells)).encode(
        x=alt.X("predicted:N", sort=names, axis=across),
        y=alt.Y("actual:N", sort=names, axis=alt.Axis(labelLimit=160, labelOverlap=False)),
    )
    heat = base.mark_rect().encode(color=alt.Color("rows:Q", scale=alt.Scale(scheme="blues")), tooltip=["rows:Q"])
    labels = base.mark_text(fontSize=14).encode(text="rows:Q")
    height = AXIS_PX + TITLE_PX + max(ROW_PX, 60) * len(names)
    layered = (heat + labels).properties(title="Confusion matrix (held-out rows)", height=max(320, height))
    return cast(alt.Chart, layered)


IMPORTANCE_MEANING = {
    "native": (
        "Each bar is the input's share of the model's importance (how much the trees' splits on it improved "
        "them); the shares add up to 1, and a longer bar mattered more."
    ),
    "permutation": (
        "Each bar is how much the held-out score drops when that input's values are shuffled (permutation "
        "importance): a longer bar mattered more. A bar near zero or below it means the input did not help; "
        "shuffling it changed the score by chance alone. These are not the model's coefficients."
    ),
}


def importance_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    importance = report.get("feature_importance") or {}
    values = importance.get("values", importance) if isinstance(importance, dict) else {}
    return [{"feature": str(k), "importance": float(v)} for k, v in values.items() if isinstance(v, int | float)]


def importance_method(report: dict[str, Any]) -> str:
    importance = report.get("feature_importance") or {}
    return str(importance.get("method") or "") if isinstance(importance, dict) else ""


def importance_chart(report: dict[str, Any]) -> alt.Chart | None:
    rows = importance_rows(report)
    if not rows:
        return None
    chart = bars(rows, "feature", "importance", title="Feature importance")
    if any(r["importance"] < 0 for r in rows):
        # Below zero is "did not help", not an alarm: those bars are grey.
        chart = chart.encode(color=alt.condition(alt.datum.importance < 0, alt.value("#9ca3af"), alt.value("#4f46e5")))
    return chart


def importance_caption(report: dict[str, Any]) -> str | None:
    """What the bars of the importance chart mean for the way they were measured."""
    if not importance_rows(report):
        return None
    return IMPORTANCE_MEANING.get(importance_method(report), IMPORTANCE_MEANING["native"])


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


def show_job(client: ApiClient, job: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Follows a job until it finishes, then shows it; returns the job as it finished.

    ``where`` prefixes the widget keys, so the same job can be shown in two tabs.
    """
    slot = st.empty()
    # While the job runs, its place holds only the progress bar: one element, which takes the place of everything
    # an earlier job left there at once. (A new container there would keep the old one's status, shard table and
    # scores on screen under the bar until the page's run ends.)
    job = follow(client, job, slot)
    with slot.container(key=f"{where}job-{job['id']}"):
        job_details(client, job, where)
    return job


def job_details(client: ApiClient, job: dict[str, Any], where: str) -> None:
    """A finished job's status and, once it succeeded, its report, downloads and the publish form."""
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
        right.caption(importance_caption(report) or "")
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
    publish_form(client, job, report, where)
