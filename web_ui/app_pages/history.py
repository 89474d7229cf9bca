"""History: the person's prediction tasks, newest first, with a status filter; any of them can be opened."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from web_ui.utils import formatting as fmt
from web_ui.utils import session, tasks
from web_ui.utils.api import ApiError, SessionExpired

PAGE_SIZE = 25
OFFSET = "history_offset"
STATUSES = ["all", "queued", "running", "succeeded", "failed"]
OPEN_PARAM = "prediction"  # the opened prediction, in the page's address: a reload or a link opens it again

client = session.client()
st.title(":material/history: History")

filter_col, refresh_col = st.columns([3, 1], vertical_alignment="bottom")
status = filter_col.segmented_control(
    "Status", STATUSES, default="all", key="history_status", format_func=lambda s: s.capitalize()
)
if refresh_col.button("Refresh", icon=":material/refresh:", width="stretch"):
    st.rerun()

status = status or "all"
if st.session_state.get("history_shown_status") != status:
    st.session_state[OFFSET] = 0
    st.session_state["history_shown_status"] = status
offset = int(st.session_state.get(OFFSET, 0))

rows = session.call(
    lambda: client.predictions(status=None if status == "all" else status, limit=PAGE_SIZE + 1, offset=offset)
)
has_more = len(rows) > PAGE_SIZE
rows = rows[:PAGE_SIZE]

if not rows:
    if offset:
        st.info("No more predictions.", icon=":material/info:")
    elif status == "all":
        st.info("You have not made any prediction yet.", icon=":material/info:")
        st.page_link("app_pages/marketplace.py", label="Browse the marketplace", icon=":material/storefront:")
    else:
        st.info(f"No {status} prediction.", icon=":material/info:")
else:
    table = pd.DataFrame(
        [
            {
                "time": fmt.parse_time(t.get("created_at")),
                "model": f"{t.get('model')} v{t.get('version')}",
                "status": t.get("status"),
                "rows": t.get("rows_accepted"),
                "rejected": t.get("rows_rejected"),
                "cost": t.get("cost"),
                "id": t.get("id"),
            }
            for t in rows
        ]
    )
    spent = sum(int(t.get("cost") or 0) for t in rows if t.get("status") != "failed")
    st.caption(
        f"{fmt.count(len(rows), 'prediction')} shown · {fmt.credits(spent)} spent on "
        + ("it" if len(rows) == 1 else "them")
        + " (a failed prediction is refunded)"
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "time": fmt.time_column("time", seconds=True),
            "cost": st.column_config.NumberColumn("cost (credits)", format="%d"),
        },
    )

prev_col, _, next_col = st.columns([1, 4, 1])
if offset and prev_col.button("Newer", icon=":material/chevron_left:", width="stretch"):
    st.session_state[OFFSET] = max(0, offset - PAGE_SIZE)
    st.rerun()
if has_more and next_col.button("Older", icon=":material/chevron_right:", icon_position="right", width="stretch"):
    st.session_state[OFFSET] = offset + PAGE_SIZE
    st.rerun()


def linked_task(task_id: str | None) -> dict[str, Any] | None:
    """The prediction named in the address, even when it is not on this page of the list; None (with a word of
    why) when it cannot be opened."""
    if not task_id:
        return None
    try:
        return client.prediction(task_id)
    except SessionExpired:
        raise
    except ApiError as exc:
        st.warning(f"The prediction of this link cannot be opened: {exc.detail}", icon=":material/link_off:")
        del st.query_params[OPEN_PARAM]
        return None


labels: dict[str, dict[str, Any]] = {str(t["id"]): t for t in rows}
linked = st.query_params.get(OPEN_PARAM)
if linked and linked not in labels:
    found = linked_task(linked)
    if found is not None:
        linked = str(found.get("id") or linked)
        labels = {linked: found, **{k: t for k, t in labels.items() if k != linked}}
if labels:
    st.subheader("Open a prediction")
    ids = list(labels)
    chosen = st.selectbox(
        "Prediction",
        ids,
        index=ids.index(linked) if linked in labels else None,
        placeholder="Choose a prediction to see its results",
        format_func=lambda i: (
            f"{fmt.when(labels[i].get('created_at'))} · {labels[i].get('model')} · "
            f"{labels[i].get('status')} · {fmt.credits(labels[i].get('cost'))}"
        ),
        key="history_open",
    )
    if chosen and st.query_params.get(OPEN_PARAM) != chosen:
        st.query_params[OPEN_PARAM] = chosen
    elif not chosen and OPEN_PARAM in st.query_params:
        del st.query_params[OPEN_PARAM]
    if chosen:
        opened: str = chosen
        task = session.call(lambda: client.prediction(opened))
        slot = st.empty()  # the status line alone while it runs, then the task (see predict.py)
        followed = task.get("status") not in tasks.FINISHED
        task = tasks.follow(client, task, slot)
        with slot.container(key=f"history-task-{chosen}"):
            if followed:
                tasks.status_line(task)
            tasks.show(client, task, live=True)
