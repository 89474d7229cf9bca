"""API keys: keys for programs that call mlmarket, each with its scopes, a monthly spending limit and an expiry.

A new key's secret is shown once, right after it is created (mlmarket keeps only a hash of it); revoking a key
refuses it at once. The API lists the keys that are not revoked; the keys revoked on this page stay listed, as
revoked, for the rest of the session (and any the API sends with a ``revoked_at`` join them).
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pandas as pd
import streamlit as st

from web_ui.utils import messages, session
from web_ui.utils.api import ApiError, SessionExpired

CREATED = "api_key_created"  # the new key, shown once
DONE = "api_key_done"
CLEAR = "api_key_clear"  # set once a key is created: the form is emptied for the next one
REVOKED = "api_keys_revoked"  # {user id: [keys revoked in this session, with their revoked_at]}
SCOPES = {
    "predict": "Predict (pays for predictions)",
    "read": "Read (tasks, results, wallet, datasets, trainings)",
    "train": "Train (datasets and trainings)",
    "publish": "Publish (publish and unpublish models)",
}
LABELS = {
    "name": "the name",
    "scopes": "the scopes",
    "monthly_spend_limit": "the monthly spending limit",
    "expires_at": "the expiry date",
}
ERROR = ":material/error:"


def refused(exc: ApiError, what: str) -> None:
    """What the API refused, in sentences; an expired session goes back to sign in."""
    if isinstance(exc, SessionExpired):
        session.expire()
    st.error(f"{what} {messages.describe(exc, LABELS)}", icon=ERROR)


def spend(key: dict[str, Any]) -> str:
    spent = int(key.get("spent_this_month") or 0)
    limit = key.get("monthly_spend_limit")
    return f"{spent:,} of {int(limit):,}" if limit is not None else f"{spent:,} (no limit)"


def expiry(key: dict[str, Any], now: datetime) -> str:
    ends = messages.parse_time(key.get("expires_at"))
    if ends is None:
        return "no expiry"
    return messages.moment(ends) + (" (expired)" if ends <= now else "")


def revoked_here() -> list[dict[str, Any]]:
    """The keys this person revoked in this session (signing out forgets them with the rest of the session)."""
    user = session.current_user() or {}
    by_user: dict[Any, list[dict[str, Any]]] = st.session_state.setdefault(REVOKED, {})
    return by_user.setdefault(user.get("id"), [])


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

if st.session_state.pop(CLEAR, False):  # the next key starts from an empty form
    st.session_state.update(api_key_name="", api_key_limit=None, api_key_expires=None)
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
    expires = expiry_col.date_input(
        "Expires on (optional)",
        value=None,
        min_value=datetime.now(UTC).date(),
        help="The key works until the end of this day (UTC).",
        key="api_key_expires",
    )
    if st.form_submit_button("Create the key", type="primary", icon=":material/add:"):
        if not name.strip():
            st.error("Give the key a name, so you know later which program uses it.", icon=ERROR)
        elif not scopes:
            st.error("Choose at least one scope.", icon=ERROR)
        else:
            body: dict[str, Any] = {"name": name.strip(), "scopes": scopes}
            if limit is not None:
                body["monthly_spend_limit"] = int(limit)
            if expires is not None:
                body["expires_at"] = datetime.combine(expires, time.max, tzinfo=UTC).isoformat()
            try:
                st.session_state[CREATED] = client.create_api_key(body)
            except ApiError as exc:
                refused(exc, "The key was not created.")
            else:
                st.session_state[CLEAR] = True
                st.rerun()

try:
    listed = client.api_keys()
except ApiError as exc:
    refused(exc, "Your keys could not be loaded.")
    st.stop()
keys = [k for k in listed if not k.get("revoked_at")]
live_ids = {k.get("id") for k in keys}
revoked = [k for k in listed if k.get("revoked_at")]
from_api = bool(revoked)
revoked += [k for k in revoked_here() if k.get("id") not in live_ids | {r.get("id") for r in revoked}]
now = datetime.now(UTC)

st.subheader("Your keys")
if keys:
    st.container(key="api-keys-active").dataframe(
        pd.DataFrame(
            [
                {
                    "name": k.get("name"),
                    "key": f"{k.get('prefix')}…",
                    "scopes": ", ".join(k.get("scopes") or []),
                    "spent this month (credits)": spend(k),
                    "last used": messages.moment(k.get("last_used_at"), "never"),
                    "created": messages.moment(k.get("created_at")),
                    "expires": expiry(k, now),
                }
                for k in keys
            ]
        ),
        hide_index=True,
        width="stretch",
    )
else:
    st.info("You have no active API key. Create one above to let a program call mlmarket.", icon=":material/info:")

if revoked:
    with st.expander(f"Revoked keys ({len(revoked)})", icon=":material/key_off:"):
        st.caption(
            "Programs that send these keys are refused; revoking cannot be undone."
            + ("" if from_api else " The list shows the keys revoked during this visit.")
        )
        st.container(key="api-keys-revoked").dataframe(
            pd.DataFrame(
                [
                    {
                        "name": k.get("name"),
                        "key": f"{k.get('prefix')}…",
                        "scopes": ", ".join(k.get("scopes") or []),
                        "created": messages.moment(k.get("created_at")),
                        "revoked": messages.moment(k.get("revoked_at")),
                    }
                    for k in revoked
                ]
            ),
            hide_index=True,
            width="stretch",
        )

if not keys:
    st.stop()

st.subheader("Revoke a key")
by_id = {int(k["id"]): k for k in keys}
gone = st.selectbox(
    "Key", list(by_id), format_func=lambda i: f"{by_id[i].get('name')} ({by_id[i].get('prefix')}…)", key="revoke_key"
)
sure = st.checkbox("Revoke it: programs using this key are refused from now on", key=f"revoke_sure-{gone}")
if st.button("Revoke", type="primary", disabled=not sure, icon=":material/key_off:", key="revoke_button"):
    key = by_id[int(gone)]
    try:
        client.revoke_api_key(int(gone))
    except ApiError as exc:
        if exc.status != 404:
            refused(exc, "The key was not revoked.")
            st.stop()
        # Revoked meanwhile (another tab, another program): it is refused all the same.
    revoked_here().append({**key, "revoked_at": datetime.now(UTC).isoformat()})
    st.session_state[DONE] = f"Key {key.get('name')} is revoked: programs that send it are refused from now on."
    st.rerun()
