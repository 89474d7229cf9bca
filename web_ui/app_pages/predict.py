"""Predict: one row through a form built from the model's input schema, or a batch from a CSV file.

The cost is shown before paying; after paying, the status is followed live until the results arrive.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pandas as pd
import streamlit as st

from web_ui.utils import formatting as fmt
from web_ui.utils import session, tasks
from web_ui.utils.api import ApiClient, ApiError

PREDICT_MODEL = "predict_model"
CURRENT_TASK = "predict_task"
PREVIEW_ROWS = 20
TIMES = "\N{MULTIPLICATION SIGN}"

client = session.client()
st.title(":material/online_prediction: Predict")

models = session.call(client.models)
if not models:
    st.info("No model is published yet, so there is nothing to predict with.", icon=":material/info:")
    st.stop()
by_name = {str(m["name"]): m for m in models}
names = sorted(by_name)
wanted = st.session_state.get(PREDICT_MODEL)
name = st.selectbox(
    "Model",
    names,
    index=names.index(wanted) if wanted in by_name else 0,
    format_func=lambda n: (
        f"{n} · {fmt.TASK_LABELS.get(str(by_name[n].get('task')), '')}"
        f" · {fmt.credits(by_name[n].get('price_per_row'))} per row"
    ),
)
st.session_state[PREDICT_MODEL] = name
model: dict[str, Any] = by_name[name]
price = int(model.get("price_per_row") or 0)
features: list[dict[str, Any]] = list(model.get("input_schema") or [])

balance = session.call(client.wallet)["balance"]
info = st.container(horizontal=True, gap="small")
info.badge(f"v{model.get('version')}", color="gray")
info.badge(fmt.TASK_LABELS.get(str(model.get("task")), str(model.get("task"))), color="violet")
info.badge(f"{fmt.credits(price)} per row", color="green")
info.badge(f"Your balance: {fmt.credits(balance)}", color="blue", icon=":material/account_balance_wallet:")
if model.get("description"):
    st.caption(str(model["description"]))


def submitted(accepted: dict[str, Any]) -> None:
    st.session_state[CURRENT_TASK] = accepted
    st.rerun()  # so every balance on screen shows the charge


def failed(exc: ApiError) -> None:
    session.show_error(exc)
    if exc.row_errors:
        st.dataframe(pd.DataFrame(exc.row_errors), hide_index=True, width="stretch")
    if exc.status == 402:
        st.page_link("app_pages/wallet.py", label="Top up your wallet", icon=":material/add_card:")


def feature_input(feature: dict[str, Any]) -> Any:
    label = str(feature["name"])
    key = f"feature-{name}-{label}"
    kind = feature.get("type")
    if kind == "string" and feature.get("categories"):
        return st.selectbox(label, [str(c) for c in feature["categories"]], key=key)
    if kind == "string":
        return st.text_input(label, key=key)
    if kind == "integer":
        return int(st.number_input(label, value=0, step=1, key=key))
    return float(st.number_input(label, value=0.0, step=0.1, format="%.4f", key=key))


def count_rows(data: bytes) -> int | None:
    """Data rows in a CSV file (the header and blank lines aside), or None when it is not readable text."""
    try:
        text = data.decode("utf-8-sig")
        return sum(1 for record in list(csv.reader(io.StringIO(text)))[1:] if any(cell.strip() for cell in record))
    except (UnicodeDecodeError, csv.Error):
        return None


def template(features: list[dict[str, Any]]) -> bytes:
    return (",".join(str(f["name"]) for f in features) + "\n").encode()


one_row, batch = st.tabs(["One row", "A CSV file (batch)"])

with one_row, st.form(f"row-{name}"):
    st.markdown("Fill in the model's inputs:")
    columns = st.columns(3)
    row = {}
    for number, feature in enumerate(features):
        with columns[number % 3]:
            row[str(feature["name"])] = feature_input(feature)
    st.markdown(f"**Cost: {fmt.credits(price)} {TIMES} 1 row = {fmt.credits(price)}**")
    if st.form_submit_button(f"Pay {fmt.credits(price)} and predict", type="primary", icon=":material/bolt:"):
        try:
            submitted(client.predict_rows(name, [row], version=model.get("version")))
        except ApiError as exc:
            failed(exc)

with batch:
    st.markdown(
        "Upload a CSV file whose first line names the inputs: "
        + ", ".join(f"`{f['name']}`" for f in features)
        + ". Each further line is one row."
    )
    st.download_button(
        "Download an empty template",
        data=template(features),
        file_name=f"{name}-template.csv",
        mime="text/csv",
        icon=":material/description:",
        on_click="ignore",
        key=f"template-{name}",
    )
    upload = st.file_uploader("CSV file", type=["csv"], key=f"csv-{name}")
    if upload is not None:
        data = upload.getvalue()
        rows = count_rows(data)
        try:
            st.dataframe(pd.read_csv(io.BytesIO(data), nrows=PREVIEW_ROWS), hide_index=True, width="stretch")
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
            st.caption("No preview: the file does not read as a CSV table. The API will say what is wrong.")
        if rows is None:
            st.markdown("**Cost:** cannot be counted before sending: the file is not UTF-8 text.")
            label = "Send the file"
        else:
            st.markdown(
                f"**Cost: {fmt.credits(price)} {TIMES} {rows} row(s) = {fmt.credits(price * rows)}** "
                "(rows the model rejects are not charged)"
            )
            label = f"Pay up to {fmt.credits(price * rows)} and predict"
        if st.button(label, type="primary", icon=":material/bolt:", key=f"send-{name}"):
            try:
                submitted(client.predict_csv(name, upload.name, data, version=model.get("version")))
            except ApiError as exc:
                failed(exc)


def show_current(client: ApiClient) -> None:
    task = st.session_state.get(CURRENT_TASK)
    if not isinstance(task, dict):
        return
    st.divider()
    st.subheader("Your prediction")
    st.session_state[CURRENT_TASK] = tasks.show(client, task, live=True)


show_current(client)
