"""Predict: one row through a form built from the model's input schema, or a batch from a CSV file.

The cost is shown before paying; after paying, the status is followed live until the results arrive.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import streamlit as st

from web_ui.utils import csv_check, row_form, session, tasks
from web_ui.utils import formatting as fmt
from web_ui.utils.api import ApiClient, ApiError

PREDICT_MODEL = "predict_model"
# The page's address names the model and version shown, so a reload or a shared link opens the same ones.
MODEL_PARAM, VERSION_PARAM = "model", "version"
CURRENT_TASK = "predict_task"
PREVIEW_ROWS = 20
MAX_UPLOAD_MB = 5  # the API's limit for a prediction file (MLMARKET_PREDICT_MAX_BYTES, 5 MiB by default)
TIMES = "\N{MULTIPLICATION SIGN}"

client = session.client()
st.title(":material/online_prediction: Predict")

models = session.call(client.models)
if not models:
    st.info("No model is published yet, so there is nothing to predict with.", icon=":material/info:")
    st.stop()
by_name = {str(m["name"]): m for m in models}
names = [str(m["name"]) for m in fmt.recommended(models)]  # a scratch or test model is never the one offered first
linked = st.query_params.get(MODEL_PARAM)
if linked is not None and linked not in by_name:
    st.warning(f"The model “{linked}” of this link is not on sale; pick another one.", icon=":material/link_off:")
wanted = linked if linked in by_name else st.session_state.get(PREDICT_MODEL)
name = st.selectbox(
    "Model",
    names,
    index=names.index(wanted) if wanted in by_name else 0,
    format_func=lambda n: (
        f"{n} · {fmt.task_label(by_name[n].get('task'))} · {fmt.credits(by_name[n].get('price_per_row'))} per row"
    ),
)
st.session_state[PREDICT_MODEL] = name
if st.query_params.get(MODEL_PARAM) != name:
    st.query_params[MODEL_PARAM] = name
model: dict[str, Any] = by_name[name]
# Earlier versions stay on sale: a buyer can keep using the one they know.
versions = [
    v for v in session.call(lambda: client.model(name)).get("versions") or [] if v.get("status") in (None, "published")
]
if len(versions) > 1:
    newest = max(int(v["version"]) for v in versions)
    by_version = {int(v["version"]): v for v in versions}
    offered = sorted(by_version, reverse=True)
    asked = st.query_params.get(VERSION_PARAM) if linked == name else None
    picked = st.selectbox(
        "Version",
        offered,
        index=offered.index(int(asked)) if asked and asked.isdigit() and int(asked) in by_version else 0,
        format_func=lambda n: (
            f"v{n}{' (newest)' if n == newest else ''} · {fmt.credits(by_version[n].get('price_per_row'))} per row"
            f" · published {fmt.when(by_version[n].get('created_at'))[:10]}"
        ),
        key=f"version-{name}",
    )
    model = by_version[int(picked)]
    if st.query_params.get(VERSION_PARAM) != str(picked):
        st.query_params[VERSION_PARAM] = str(picked)
elif VERSION_PARAM in st.query_params:
    del st.query_params[VERSION_PARAM]
price = int(model.get("price_per_row") or 0)
features: list[dict[str, Any]] = list(model.get("input_schema") or [])
task_kind = str(model.get("task") or "") or None  # decides the chart of the results: classes or a histogram
classifier = task_kind == "classification"  # its results come with each class's probability

balance = session.call(client.wallet)["balance"]
info = st.container(horizontal=True, gap="small")
info.badge(f"v{model.get('version')}", color="gray")
info.badge(fmt.task_label(model.get("task")), color="violet")
info.badge(f"{fmt.credits(price)} per row", color="green")
if model.get("price_raised") and model.get("previous_price_per_row") is not None:
    info.badge(f"raised from {fmt.credits(model['previous_price_per_row'])} per row", color="orange")
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


def template(features: list[dict[str, Any]]) -> bytes:
    return (",".join(str(f["name"]) for f in features) + "\n").encode()


def highlighted(result: csv_check.CsvCheck) -> None:
    """The rows with a problem first, then the others; each bad cell in red, its reason on the right (a cell far
    outside the training range in amber)."""
    bad = sorted(result.bad_rows)
    shown = (bad + [i for i in range(len(result.records)) if i not in result.bad_rows])[:PREVIEW_ROWS]
    width = len(result.header)
    frame = pd.DataFrame(
        [(result.records[i] + [""] * width)[:width] for i in shown], columns=result.header, index=[i + 1 for i in shown]
    )
    frame.index.name = "row"
    frame["problem"] = [
        "; ".join(f"{c}: {why}" for (r, c), why in sorted(result.cell_problems.items()) if r == i) for i in shown
    ]

    def paint(table: pd.DataFrame) -> pd.DataFrame:
        colours = pd.DataFrame("", index=table.index, columns=table.columns)
        for row, column in result.far_outside:  # predicted, but far outside the training range
            if row + 1 in colours.index and column in colours.columns:
                colours.loc[row + 1, column] = "background-color: #fef3c7; color: #92400e"
        for row, column in result.cell_problems:
            if row + 1 in colours.index and column in colours.columns:
                colours.loc[row + 1, column] = "background-color: #fde2e1; color: #9f1c1c; font-weight: 600"
        return colours

    st.dataframe(frame.style.apply(paint, axis=None), width="stretch")
    if len(result.records) > PREVIEW_ROWS:
        st.caption(f"The first {PREVIEW_ROWS} of {len(result.records):,} rows, those with a problem first.")


def check_file(filename: str, data: bytes) -> None:
    """Reads the file here, says what is wrong before anyone pays, and offers to pay for the rows that are right."""
    # The encoding chosen is the file's: another file starts from detection again.
    key = f"encoding-{name}-{hashlib.sha256(data).hexdigest()[:16]}"
    chosen = st.session_state.get(key)
    result = csv_check.check(data, features, encoding=chosen)
    if result.encoding is None or chosen is not None:
        if result.encoding is None:
            st.error(
                "This file is not "
                + (csv_check.ENCODINGS.get(chosen or "utf-8", chosen or "") + " text")
                + ". If it was saved by a spreadsheet, pick the encoding it was saved in:",
                icon=":material/error:",
            )
        st.selectbox(
            "File encoding",
            list(csv_check.ENCODINGS),
            index=None,
            placeholder="Choose an encoding",
            format_func=lambda encoding: csv_check.ENCODINGS[encoding],
            key=key,
        )
        if result.encoding is None:
            return
    if result.encoding not in ("utf-8", None):
        st.caption(f"Read as {csv_check.ENCODINGS[result.encoding]}; it is sent to mlmarket as UTF-8.")
    if result.header_problem:
        st.error(result.header_problem, icon=":material/error:")
        st.button("Pay and predict", type="primary", icon=":material/bolt:", disabled=True, key=f"send-{name}")
        return
    highlighted(result)
    rows = result.good_rows
    if result.cell_problems:
        st.warning(
            f"{len(result.bad_rows):,} of {fmt.count(len(result.records), 'row')} "
            + ("has" if len(result.bad_rows) == 1 else "have")
            + " a problem and will not be predicted nor charged. Fix them in the file, or pay for the others:",
            icon=":material/warning:",
        )
        st.markdown("\n".join(f"- {line}" for line in csv_check.problems_text(result)))
    if result.far_outside:
        st.warning(
            f"{fmt.count(len(result.far_outside), 'cell')} "
            + ("is" if len(result.far_outside) == 1 else "are")
            + " far outside the values the model was trained on; "
            + ("its row is" if len(result.far_outside) == 1 else "their rows are")
            + " predicted and charged, but "
            + ("its prediction" if len(result.far_outside) == 1 else "their predictions")
            + " may mean little:",
            icon=":material/warning:",
        )
        st.markdown("\n".join(f"- {line}" for line in csv_check.far_text(result)))
    cost = price * rows
    st.markdown(f"**Cost: {fmt.credits(price)} {TIMES} {fmt.count(rows, 'row')} = {fmt.credits(cost)}**")
    short = cost > balance
    if short:
        st.warning(
            f"Your balance ({fmt.credits(balance)}) is {fmt.credits(cost - balance)} short of this prediction.",
            icon=":material/account_balance_wallet:",
        )
        st.page_link("app_pages/wallet.py", label="Top up your wallet", icon=":material/add_card:")
    if st.button(
        f"Pay {fmt.credits(cost)} and predict {fmt.count(rows, 'row')}",
        type="primary",
        icon=":material/bolt:",
        disabled=short or rows == 0,
        key=f"send-{name}",
    ):
        st.session_state.pop(CURRENT_TASK, None)  # a new submission replaces the last result, even if it fails
        try:
            submitted(
                client.predict_csv(
                    name, filename, result.utf8(), version=model.get("version"), probabilities=classifier
                )
            )
        except ApiError as exc:
            failed(exc)


one_row, batch = st.tabs(["One row", "A CSV file (batch)"])

with one_row:
    st.markdown("Fill in the model's inputs (each starts at a typical value of the data it was trained on):")
    row = row_form.inputs(name, features)
    go_ahead = row_form.confirmed(name, row_form.doubtful(features, row))
    st.markdown(f"**Cost: {fmt.credits(price)} {TIMES} 1 row = {fmt.credits(price)}**")
    if balance < price:
        st.warning(
            f"Your balance ({fmt.credits(balance)}) is {fmt.credits(price - balance)} short of this prediction.",
            icon=":material/account_balance_wallet:",
        )
    pay = st.button(
        f"Pay {fmt.credits(price)} and predict",
        type="primary",
        icon=":material/bolt:",
        disabled=balance < price or not go_ahead,
        key=f"pay-row-{name}",
    )
    # A value typed just before the click is checked in this run too: without the tick, no money moves.
    if pay and go_ahead:
        st.session_state.pop(CURRENT_TASK, None)  # a new submission replaces the last result, even if it fails
        try:
            submitted(client.predict_rows(name, [row], version=model.get("version"), probabilities=classifier))
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
    upload = st.file_uploader(
        f"CSV file (at most {MAX_UPLOAD_MB} MB)", type=["csv"], key=f"csv-{name}", max_upload_size=MAX_UPLOAD_MB
    )
    if upload is not None:
        check_file(upload.name, upload.getvalue())


def show_current(client: ApiClient) -> None:
    task = st.session_state.get(CURRENT_TASK)
    if not isinstance(task, dict) or task.get("model") not in (None, name):
        return
    st.divider()
    st.subheader("Your prediction")
    # While the task runs, its place holds only the status line, which replaces an earlier result at once (a new
    # container there would keep the old result on screen under it until the page's run ends).
    slot = st.empty()
    followed = task.get("status") not in tasks.FINISHED
    task = tasks.follow(client, task, slot)
    with slot.container(key=f"prediction-{task.get('id')}"):
        if followed:
            tasks.status_line(task)
        st.session_state[CURRENT_TASK] = tasks.show(client, task, live=True, kind=task_kind)


show_current(client)
