"""API keys: keys for programs that call mlmarket, each with its scopes, a monthly spending limit and an expiry.

A new key's secret is shown once, right after it is created (mlmarket keeps only a hash of it); revoking a key
refuses it at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pandas as pd
import streamlit as st

from web_ui.utils import formatting as fmt
from web_ui.utils import session
from web_ui.utils.api import ApiError

CREATED = "api_key_created"  # the new key, shown once
DONE = "api_key_done"
SCOPES = {
    "predict": "Predict (pays for predictions)",
    "read": "Read (tasks, results, wallet, datasets, trainings)",
    "train": "Train (datasets and trainings)",
    "publish": "Publish (publish and unpublish models)",
}

client = session.client()
st.title(":material/key: API keys")
st.caption(
    "Keys let your programs call the mlmarket API as you: send one as `Authorization: Bearer <key>`. "
    "Give each program its own key, with only the scopes it needs and a monthly limit on what it may spend."
)

created = st.session_state.pop(CREATED, None)
if isinstance(created, dict):
    with st.container(border=True, key="api-key-new"):
        st.success(f"Key **{created.get('name')}** created.", icon=":material/key:")
        st.warning(
            "Copy the key now: it is shown only this once, and mlmarket cannot show it again.",
            icon=":material/content_copy:",
        )
        st.code(str(created.get("key")), language=None)
if DONE in st.session_state:
    st.success(str(st.session_state.pop(DONE)), icon=":material/check_circle:")

with st.expander("Create a key", expanded=not isinstance(created, dict)), st.form("create-api-key"):
    name = st.text_input("Name", placeholder="e.g. nightly batch job", max_chars=100, key="api_key_name")
    scopes = st.multiselect(
        "Scopes", list(SCOPES), default=list(SCOPES), format_func=lambda scope: SCOPES[scope], key="api_key_scopes"
    )
    limit_col, expiry_col = st.columns(2)
    limit = limit_col.number_input(
        "Monthly spending limit (credits, optional)",
        min_value=0,
        value=None,
        step=100,
        placeholder="no limit",
        key="api_key_limit",
    )
    expires = expiry_col.date_input("Expires on (optional)", value=None, key="api_key_expires")
    if st.form_submit_button("Create the key", type="primary", icon=":material/add:"):
        if not name.strip():
            st.error("Give the key a name, so you know later which program uses it.")
        elif not scopes:
            st.error("Choose at least one scope.")
        else:
            body: dict[str, Any] = {"name": name.strip(), "scopes": scopes}
            if limit is not None:
                body["monthly_spend_limit"] = int(limit)
            if expires is not None:
                body["expires_at"] = datetime.combine(expires, time.max, tzinfo=UTC).isoformat()
            try:
                st.session_state[CREATED] = client.create_api_key(body)
            except ApiError as exc:
                session.show_error(exc, "The key was not created: ")
            else:
                st.rerun()

keys = session.call(client.api_keys)
st.subheader("Your keys")
if not keys:
    st.info("You have no API key yet.", icon=":material/info:")
    st.stop()


def spend(key: dict[str, Any]) -> str:
    spent = int(key.get("spent_this_month") or 0)
    limit = key.get("monthly_spend_limit")
    return f"{spent:,} of {int(limit):,}" if limit is not None else f"{spent:,} (no limit)"


st.dataframe(
    pd.DataFrame(
        [
            {
                "name": k.get("name"),
                "key": f"{k.get('prefix')}…",
                "scopes": ", ".join(k.get("scopes") or []),
                "spent this month (credits)": spend(k),
                "last used": fmt.parse_time(k.get("last_used_at")),
                "created": fmt.parse_time(k.get("created_at")),
                "expires": fmt.parse_time(k.get("expires_at")),
            }
            for k in keys
        ]
    ),
    hide_index=True,
    width="stretch",
    column_config={
        "last used": st.column_config.DatetimeColumn("last used", format="YYYY-MM-DD HH:mm"),
        "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
        "expires": st.column_config.DatetimeColumn("expires", format="YYYY-MM-DD"),
    },
)

st.subheader("Revoke a key")
by_id = {int(k["id"]): k for k in keys}
gone = st.selectbox(
    "Key", list(by_id), format_func=lambda i: f"{by_id[i].get('name')} ({by_id[i].get('prefix')}…)", key="revoke_key"
)
sure = st.checkbox("Revoke it: programs using this key are refused from now on", key=f"revoke_sure-{gone}")
if st.button("Revoke", type="primary", disabled=not sure, icon=":material/key_off:", key="revoke_button"):
    try:
        client.revoke_api_key(int(gone))
    except ApiError as exc:
        session.show_error(exc, "The key was not revoked: ")
    else:
        st.session_state[DONE] = f"Key {by_id[int(gone)].get('name')} is revoked."
        st.rerun()
