"""Administration: users and their balances, crediting a user, the ledger check, workers and the queue."""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd
import streamlit as st

from web_ui.utils import formatting as fmt
from web_ui.utils import session
from web_ui.utils.api import ApiError

CREDITED = "admin_credited"
MAX_CREDIT = 1_000_000

client = session.client()
st.title(":material/admin_panel_settings: Administration")

if not session.is_admin():
    st.error("This page is for administrators.")
    st.stop()

users_tab, ledger_tab, workers_tab = st.tabs(["Users", "Ledger", "Workers and queues"])

with users_tab:
    users = session.call(client.admin_users)
    total = sum(int(u.get("balance") or 0) for u in users)
    stats = st.columns(3)
    stats[0].metric("Users", len(users), border=True)
    stats[1].metric("Administrators", sum(1 for u in users if u.get("role") == "admin"), border=True)
    stats[2].metric("Credits held by users", f"{total:,}", border=True)
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "id": u.get("id"),
                    "email": u.get("email"),
                    "name": u.get("full_name") or "",
                    "role": u.get("role"),
                    "active": u.get("is_active"),
                    "balance": u.get("balance"),
                    "joined": fmt.parse_time(u.get("created_at")),
                }
                for u in users
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={"joined": st.column_config.DatetimeColumn("joined", format="YYYY-MM-DD HH:mm")},
    )

    st.subheader("Credit a user")
    by_id: dict[int, dict[str, Any]] = {int(u["id"]): u for u in users}
    # No form: picking a user shows their balance as it is now, and Enter never credits by itself.
    pick, figure = st.columns([3, 1], vertical_alignment="bottom")
    who = pick.selectbox(
        "User",
        list(by_id),
        format_func=lambda i: " · ".join(str(v) for v in (by_id[i].get("full_name"), by_id[i].get("email")) if v),
        key="credit_user",
    )
    if who is not None:
        figure.metric("Their balance now", fmt.credits(int(by_id[int(who)].get("balance") or 0)))
    amount = st.number_input("Credits", value=100, step=10, key="credit_amount")
    problem = fmt.amount_problem(amount, MAX_CREDIT)
    if problem:
        st.error(problem, icon=":material/error:")
    memo = st.text_input("Memo (optional)", max_chars=255, key="credit_memo")
    if st.button(
        f"Credit {fmt.credits(int(amount))}" if problem is None else "Credit",
        type="primary",
        icon=":material/add_card:",
        disabled=problem is not None or who is None,
        key="credit_button",
    ):
        try:
            result = client.admin_credit(
                int(who), int(amount), memo=memo.strip() or None, idempotency_key=str(uuid.uuid4())
            )
        except ApiError as exc:
            session.show_error(exc, "The credit did not go through: ")
        else:
            st.session_state[CREDITED] = (
                f"Credited {fmt.credits(int(amount))} to {by_id[int(who)].get('email')}. "
                f"Their balance is now {fmt.credits(result['balance'])}."
            )
            st.rerun()
    if CREDITED in st.session_state:
        st.success(str(st.session_state.pop(CREDITED)), icon=":material/check_circle:")

with ledger_tab:
    st.markdown(
        "Checks that every balance equals the sum of its entries, that every task has one charge "
        "and at most one refund or settlement, and that the credits minted match what is held."
    )
    report = session.call(client.verify_ledger)
    if report.get("ok"):
        st.success(
            f"The ledger balances: {report.get('accounts_checked')} accounts and "
            f"{report.get('entries_checked')} entries checked.",
            icon=":material/verified:",
        )
    else:
        st.error("The ledger does not balance: see the problems below.", icon=":material/report:")
    figures = st.columns(3)
    figures[0].metric("Credits in accounts", f"{int(report.get('total_balance') or 0):,}", border=True)
    figures[1].metric("Credits minted", f"{int(report.get('total_minted') or 0):,}", border=True)
    figures[2].metric("Held for running tasks", f"{int(report.get('total_held') or 0):,}", border=True)
    if report.get("mismatches"):
        st.markdown("**Accounts whose balance differs from their entries**")
        st.dataframe(pd.DataFrame(report["mismatches"]), hide_index=True, width="stretch")
    if report.get("running_balance_errors"):
        st.warning(f"{report['running_balance_errors']} entries have a wrong balance_after.")
    for problem in report.get("hold_errors") or []:
        st.warning(str(problem))
    if st.button("Check again", icon=":material/refresh:"):
        st.rerun()


def depth(value: Any) -> str:
    """A message count, or a dash when the broker could not be asked."""
    return "\u2014" if value is None else f"{int(value):,}"


with workers_tab:
    st.subheader("Queues")
    queues = session.call(client.queues)
    depths = queues.get("queues") or []
    waiting = st.columns(4)
    waiting[0].metric("Ready", depth(sum(int(q.get("ready") or 0) for q in depths)), border=True)
    waiting[1].metric("Retrying", depth(sum(int(q.get("retrying") or 0) for q in depths)), border=True)
    waiting[2].metric("Dead-lettered", depth(sum(int(q.get("dead") or 0) for q in depths)), border=True)
    waiting[3].metric("Outbox unsent", depth(queues.get("outbox_unsent")), border=True)
    if any(q.get(k) is None for q in depths for k in ("ready", "retrying", "dead")):
        st.warning(
            "The broker could not be reached for some counts; they are shown as \u2014.", icon=":material/warning:"
        )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "queue": q.get("queue"),
                    "ready": depth(q.get("ready")),
                    "retrying": depth(q.get("retrying")),
                    "dead": depth(q.get("dead")),
                }
                for q in depths
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    st.caption(
        f"Broker: {queues.get('broker')}. Ready messages wait for a worker, retrying ones wait out their "
        "backoff, dead ones failed every attempt (their tasks were refunded); the outbox holds committed "
        "tasks not yet published."
    )
    if st.button("Refresh", icon=":material/refresh:", key="queues_refresh"):
        st.rerun()
    st.subheader("Workers")
    workers = session.call(client.workers)
    if not workers:
        st.info("No worker has reported in yet.", icon=":material/info:")
    else:
        busy = sum(1 for w in workers if w.get("current_task"))
        counts = st.columns(3)
        counts[0].metric("Workers", len(workers), border=True)
        counts[1].metric("Busy now", busy, border=True)
        counts[2].metric("Tasks done", f"{sum(int(w.get('tasks_done') or 0) for w in workers):,}", border=True)
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "worker": w.get("name"),
                        "queues": ", ".join(w.get("queues") or []),
                        "current task": w.get("current_task") or "",
                        "tasks done": w.get("tasks_done"),
                        "memory (MiB)": round(int(w.get("memory_bytes") or 0) / 2**20, 1),
                        "last seen": fmt.parse_time(w.get("last_seen")),
                    }
                    for w in workers
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={"last seen": st.column_config.DatetimeColumn("last seen", format="YYYY-MM-DD HH:mm:ss")},
        )
