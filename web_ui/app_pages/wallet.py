"""The wallet: balance, top-ups, the ledger and how the balance moved over time."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from web_ui.utils import formatting as fmt
from web_ui.utils import session
from web_ui.utils.api import ApiError
from web_ui.utils.formatting import amount_problem

MAX_TOP_UP = 1_000_000
LEDGER_LIMIT = 500
TOPPED_UP = "wallet_topped_up"
MAX_TICKS = 6
MIN_SPAN_SECONDS = 60
MINUTE, HOUR, DAY = 60, 3600, 86400
# Tick intervals in seconds: the smallest that keeps at most MAX_TICKS labels is used.
TICK_STEPS = [1, 2, 5, 10, 15, 30]
TICK_STEPS += [m * MINUTE for m in (1, 2, 5, 10, 15, 30)] + [h * HOUR for h in (1, 2, 3, 6, 12)]
TICK_STEPS += [d * DAY for d in (1, 2, 7, 14, 30, 61, 91, 182, 365)]

client = session.client()
st.title(":material/account_balance_wallet: Wallet")

left, right = st.columns([1, 2], gap="large")
balance_slot = left.empty()

with left, st.container(border=True):
    # No form: Enter in the field only confirms the number, and only the button pays, once per click.
    st.markdown("**Top up**")
    amount = st.number_input("Credits to add", value=100, step=10, key="top_up_amount")
    problem = amount_problem(amount, MAX_TOP_UP)
    if problem:
        st.error(problem, icon=":material/error:")
    wanted = int(amount) if problem is None else 0
    if st.button(
        f"Add {fmt.credits(wanted)}" if problem is None else "Add credits",
        type="primary",
        icon=":material/add_card:",
        disabled=problem is not None,
        key="top_up_button",
    ):
        # A fresh key per click: a retried request of this click credits once, a second click credits again.
        try:
            result = client.top_up(wanted, idempotency_key=str(uuid.uuid4()))
        except ApiError as exc:
            session.show_error(exc, "The top-up did not go through: ")
        else:
            st.session_state[TOPPED_UP] = f"Added {fmt.credits(wanted)}. New balance: {fmt.credits(result['balance'])}."
            st.rerun()  # so every balance on screen shows the top-up
    if TOPPED_UP in st.session_state:
        # Shown once: the next thing the person does clears it.
        st.success(str(st.session_state.pop(TOPPED_UP)), icon=":material/check_circle:")

wallet = session.call(client.wallet)
entries = session.call(lambda: client.ledger(limit=LEDGER_LIMIT))

history = pd.DataFrame(
    [
        {
            "time": fmt.parse_time(e.get("created_at")),
            "what": fmt.entry_label(e),
            "amount": e.get("amount"),
            "balance after": e.get("balance_after"),
            "memo": e.get("memo") or "",
            "task": e.get("task_id") or "",
        }
        for e in entries
    ],
    columns=["time", "what", "amount", "balance after", "memo", "task"],
)

balance_slot.metric("Balance", fmt.credits(wallet["balance"]), border=True)


def timeline(history: pd.DataFrame, balance: int) -> pd.DataFrame:
    """Balance points, oldest first, from the balance before the first entry shown until now."""
    ordered = history.sort_values("time")[["time", "balance after"]].rename(columns={"balance after": "balance"})
    first = history.sort_values("time").iloc[0]
    before = pd.DataFrame([{"time": first["time"], "balance": int(first["balance after"] - first["amount"])}])
    now = pd.DataFrame([{"time": datetime.now(UTC), "balance": balance}])
    return pd.concat([before, ordered, now], ignore_index=True)


def time_axis(start: datetime, end: datetime) -> alt.Axis:
    """A time axis (UTC) whose labels fit the span and never repeat: seconds within a minute or two, hours and
    minutes within a day, dates across days; one tick per whole interval."""
    first, last = start.timestamp(), end.timestamp()
    step = next((s for s in TICK_STEPS if (last - first) / s <= MAX_TICKS), TICK_STEPS[-1])
    ticks: list[float] = [t * step for t in range(math.ceil(first / step), math.floor(last / step) + 1)] or [first]
    if step < MINUTE:
        label = "%H:%M:%S"
    elif step < DAY:
        label = "%H:%M" if start.astimezone(UTC).date() == end.astimezone(UTC).date() else "%b %d %H:%M"
    else:
        label = "%b %d" if last - first < 365 * DAY else "%Y-%m-%d"
    # ISO texts and an explicit UTC label: numbers and formatType "utc" are not drawn by Streamlit's Vega-Lite.
    values = [datetime.fromtimestamp(t, UTC).isoformat() for t in ticks]
    return alt.Axis(values=values, labelExpr=f"utcFormat(datum.value, '{label}')", labelOverlap=True)


with right:
    st.markdown("**Balance over time**")
    if history.empty:
        st.info("No movements yet: top up to get started.", icon=":material/info:")
    else:
        points = timeline(history, int(wallet["balance"]))
        start, end = points["time"].min().to_pydatetime(), points["time"].max().to_pydatetime()
        # At least a minute shown: a wallet topped up a second ago still gets an axis with several times on it.
        start = min(start, end - timedelta(seconds=MIN_SPAN_SECONDS))
        points["when"] = [fmt.when(t.isoformat()) for t in points["time"]]
        domain = [start.isoformat(), end.isoformat()]
        base = alt.Chart(points).encode(
            x=alt.X(
                "time:T", title="time (UTC)", scale=alt.Scale(type="utc", domain=domain), axis=time_axis(start, end)
            ),
            y=alt.Y("balance:Q", title="credits", scale=alt.Scale(zero=True)),
        )
        chart = base.mark_area(interpolate="step-after", opacity=0.25) + base.mark_line(
            interpolate="step-after"
        ).encode(tooltip=[alt.Tooltip("when:N", title="time"), "balance:Q"])
        st.altair_chart(chart, width="stretch", height=280)

st.subheader("Ledger")
if history.empty:
    st.caption("Every top-up, charge and refund will be listed here.")
else:
    st.dataframe(
        history,
        hide_index=True,
        width="stretch",
        column_config={
            "time": fmt.time_column("time", seconds=True),
            "amount": st.column_config.NumberColumn("amount", format="%+d"),
            "balance after": st.column_config.NumberColumn("balance after", format="%d"),
        },
    )
    if len(entries) == LEDGER_LIMIT:
        st.caption(f"The newest {LEDGER_LIMIT} movements are shown.")
