"""Publishing a trained model, and the "Models and earnings" tab."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from web_ui.studio.common import attempt, done
from web_ui.utils import formatting as fmt
from web_ui.utils import session
from web_ui.utils.api import ApiClient, ApiError


def publish_form(client: ApiClient, job: dict[str, Any], report: dict[str, Any], where: str) -> None:
    """Publishing a succeeded job under a catalog name: at once when the name is free, after a review when it is
    the author's own, never when it is another author's."""
    st.subheader("Publish this model")
    published = st.session_state.pop(f"{where}published-{job['id']}", None)
    if published:
        st.success(str(published), icon=":material/storefront:")
    review_key = f"{where}publish_review-{job['id']}"
    # One form per tab, not per job: its keyed fields keep their identity, so a form of another job never
    # holds on to them (the browser would then send nothing on "Publish").
    with st.form(f"{where}publish"):
        name = st.text_input(
            "Catalog name", placeholder="lowercase letters, digits and dashes", key=f"{where}publish_name"
        )
        description = st.text_area("Description", max_chars=2000, key=f"{where}publish_description")
        price = st.number_input(
            "Price per row (credits)", min_value=1, max_value=1_000_000, value=1, key=f"{where}publish_price"
        )
        if st.form_submit_button("Publish", type="primary", icon=":material/publish:"):
            st.session_state.pop(review_key, None)
            request: dict[str, Any] = {
                "name": name.strip(),
                "price": int(price),
                "description": description.strip(),
            }
            try:
                existing = existing_model(client, request["name"])
            except ApiError as exc:
                session.show_error(exc, "The model was not published: ")
            else:
                if existing is None:
                    publish(client, job, request, where)
                elif not fmt.is_mine(existing, session.current_user() or {}):
                    st.error(taken_by_another(request["name"]), icon=":material/block:")
                else:
                    st.session_state[review_key] = request
                    keep = description_kept(existing, job, request)
                    st.session_state[f"{where}publish_review_description-{job['id']}"] = request["description"] or (
                        str(existing.get("description") or "") if keep else ""
                    )
                    st.session_state.pop(f"{where}publish_description_fits-{job['id']}", None)
    review = st.session_state.get(review_key)
    if isinstance(review, dict):
        review_publishing(client, job, report, review, where)


def taken_by_another(name: str) -> str:
    return f"**{name}** belongs to another author; choose another name."


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


def description_kept(current: dict[str, Any], job: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether the review pre-fills the current version's description: only when none was typed and the new
    version is the same algorithm (a description of another kind of model would mislead buyers)."""
    return not request["description"] and bool(current.get("description")) and same_algorithm(current, job)


def same_algorithm(current: dict[str, Any], job: dict[str, Any]) -> bool:
    return not current.get("algorithm") or current.get("algorithm") == job.get("algorithm")


def publish(client: ApiClient, job: dict[str, Any], request: dict[str, Any], where: str) -> None:
    """Publishes, then reruns the page so it shows the success and the catalog as it now is (no stale review)."""
    try:
        model = client.publish(str(job["id"]), request["name"], request["price"], request["description"])
    except ApiError as exc:
        session.show_error(exc, "The model was not published: ")
        return
    st.session_state.pop(f"{where}publish_review-{job['id']}", None)
    version = int(model["version"])
    default = f" Buyers now get v{version} by default." if version > 1 else ""
    st.session_state[f"{where}published-{job['id']}"] = (
        f"Published {model['name']} v{version} at {fmt.credits(model['price_per_row'])} per row.{default} "
        f"Publishing again under this name would add v{version + 1}."
    )
    st.rerun()


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


def description_review(current: dict[str, Any], job: dict[str, Any], version: int, where: str) -> tuple[str, bool]:
    """The description of the new version, an explicit choice: v1's text is never carried over unseen.

    Returns the description to publish and whether the author has made the choice."""
    old = str(current.get("description") or "").strip()
    key = f"{where}publish_review_description-{job['id']}"
    text = str(st.session_state.get(key) or "").strip()
    new = f"v{version + 1}"
    ready = True
    if old and text == old:
        st.info(
            f"The description below is v{version}'s, written for v{version}: confirm that it describes {new} "
            "too, or edit it.",
            icon=":material/edit_note:",
        )
        ready = False  # until the box under the text is ticked
    elif old and not text and not same_algorithm(current, job):
        st.info(
            f"v{version} is a {current.get('algorithm')} model and {new} a {job.get('algorithm')}, so "
            f"v{version}'s description is not carried over: write one for {new}.  \nv{version}'s was: “{old}”",
            icon=":material/edit_note:",
        )
        ready = False
    elif old and not text:
        st.info(f"Write a description for {new}, or put back v{version}'s: “{old}”", icon=":material/edit_note:")
        ready = False
    st.text_area(f"Description of {new}", max_chars=2000, key=key)
    if old and text == old:
        ready = st.checkbox(f"v{version}'s description fits {new}", key=f"{where}publish_description_fits-{job['id']}")
    return text, ready


def description_change(current: dict[str, Any], text: str, version: int) -> str | None:
    old = str(current.get("description") or "").strip()
    new = f"v{version + 1}"
    if old and text == old:
        return f"The description stays v{version}'s (confirm it below)"
    if old and not text:
        return f"{new} needs a description (v{version}'s is not carried over unseen)"
    if text != old:
        return f"The description of {new} is new (below)"
    return None


def review_publishing(
    client: ApiClient, job: dict[str, Any], report: dict[str, Any], request: dict[str, Any], where: str
) -> None:
    """The name is the author's own: say what a new version changes for buyers, and publish only once the author
    agrees (and has chosen the description)."""
    current = existing_model(client, request["name"]) or {}
    version = int(current.get("version") or 0)
    with st.container(border=True, key=f"{where}publish-review"):
        if current and not fmt.is_mine(current, session.current_user() or {}):
            st.error(taken_by_another(request["name"]), icon=":material/block:")
            return
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
        if not same_algorithm(current, job):
            changes.append(f"Algorithm changes from {current.get('algorithm')} to {job.get('algorithm')}")
        text = str(st.session_state.get(f"{where}publish_review_description-{job['id']}") or "").strip()
        described = description_change(current, text, version)
        if described:
            changes.append(described)
        if changes:
            st.markdown("**What changes for buyers:**\n" + "\n".join(f"- {c}" for c in changes))
        else:
            st.markdown("Same inputs, same price: only the model behind them changes.")
        text, ready = description_review(current, job, version, where)
        go, cancel = st.columns(2)
        if go.button(
            f"Publish as v{version + 1}",
            type="primary",
            icon=":material/publish:",
            disabled=not ready,
            key=f"{where}publish-confirm",
        ):
            publish(client, job, {**request, "description": text}, where)
        if cancel.button("Cancel", key=f"{where}publish-cancel"):
            st.session_state.pop(f"{where}publish_review-{job['id']}", None)
            st.rerun()


def tab(client: ApiClient, user: dict[str, Any]) -> None:
    """The "Models and earnings" tab: the author's published models, unpublishing, and what they earned."""
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
