"""The "Train" tab of the training studio: a form generated from each algorithm's hyperparameters."""

from __future__ import annotations

from typing import Any

import streamlit as st

from web_ui.studio.common import CURRENT_JOB, TRAINING_PARAM
from web_ui.studio.report import show_job
from web_ui.utils import formatting as fmt
from web_ui.utils import session
from web_ui.utils.api import ApiClient, ApiError


def hyperparameter_input(algorithm: str, name: str, spec: dict[str, Any]) -> Any:
    """One widget per hyperparameter, from its JSON schema; None means 'leave it to the default'."""
    key = f"hp-{algorithm}-{name}"
    kinds = spec.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    nullable = "null" in kinds
    default = spec.get("default")
    help_text = spec.get("description")
    if "enum" in spec:
        options = [str(o) for o in spec["enum"]]
        return st.selectbox(name, options, index=options.index(str(default)) if default in options else 0, key=key)
    if "boolean" in kinds:
        return st.checkbox(name, value=bool(default), help=help_text, key=key)
    if "integer" in kinds or "number" in kinds:
        integer = "integer" in kinds
        if nullable and st.checkbox(f"{name}: none", value=default is None, help=help_text, key=f"{key}-none"):
            return None
        low, high = spec.get("minimum"), spec.get("maximum")
        start = default if default is not None else (low if low is not None else 0)
        if integer:
            return int(
                st.number_input(
                    name,
                    min_value=int(low) if low is not None else None,
                    max_value=int(high) if high is not None else None,
                    value=int(start),
                    step=1,
                    help=help_text,
                    key=key,
                )
            )
        return float(
            st.number_input(
                name,
                min_value=float(low) if low is not None else None,
                max_value=float(high) if high is not None else None,
                value=float(start),
                help=help_text,
                format="%.4g",
                key=key,
            )
        )
    text = st.text_input(name, value="" if default is None else str(default), help=help_text, key=key)
    return text or None


def current_job(client: ApiClient) -> dict[str, Any] | None:
    """The training on screen in this tab: the last one started, kept in the URL so a reload shows it again."""
    current = st.session_state.get(CURRENT_JOB)
    if isinstance(current, dict):
        if st.query_params.get(TRAINING_PARAM) != str(current["id"]):
            st.query_params[TRAINING_PARAM] = str(current["id"])
        return current
    linked = st.query_params.get(TRAINING_PARAM)
    if not linked:
        return None
    try:
        return client.training_job(str(linked))
    except ApiError:  # not this person's training, or gone: the link is dropped
        del st.query_params[TRAINING_PARAM]
        return None


def tab(client: ApiClient) -> None:
    """The "Train" tab: a dataset, an algorithm, its hyperparameters, the price, and the job on screen."""
    datasets = session.call(client.datasets)
    if not datasets:
        st.info("Upload a dataset first.", icon=":material/info:")
    else:
        by_id = {int(d["id"]): d for d in datasets}
        dataset_id = st.selectbox(
            "Dataset",
            list(by_id),
            format_func=lambda i: (
                f"{by_id[i]['name']} v{by_id[i]['version']} · {by_id[i]['rows']:,} rows"
                f" · {by_id[i]['task']} on {by_id[i]['target']!r}"
            ),
            key="train_dataset",
        )
        dataset = by_id[int(dataset_id)]
        algorithms = [a for a in session.call(client.algorithms) if a.get("task") == dataset.get("task")]
        by_name = {str(a["name"]): a for a in algorithms}
        algorithm = st.selectbox("Algorithm", list(by_name), key="train_algorithm")
        if algorithm:
            st.caption(str(by_name[algorithm].get("description") or ""))
            with st.form(f"train-{algorithm}"):
                st.markdown("**Hyperparameters**")
                properties = (by_name[algorithm].get("hyperparameters") or {}).get("properties") or {}
                columns = st.columns(2)
                chosen: dict[str, Any] = {}
                for index, (name, spec) in enumerate(properties.items()):
                    with columns[index % 2]:
                        value = hyperparameter_input(algorithm, name, spec)
                    if value is not None:
                        chosen[name] = value
                test_size = st.slider(
                    "Share of rows held out for testing", 0.05, 0.5, 0.2, 0.05, key=f"train_test-{algorithm}"
                )
                shards = 1
                if by_name[algorithm].get("shardable"):
                    shards = int(
                        st.number_input(
                            "Shards (parts trained at once)",
                            min_value=1,
                            max_value=8,
                            value=1,
                            step=1,
                            help="Split the training rows into this many parts, trained by several workers at once "
                            "and merged into one model.",
                            key=f"train_shards-{algorithm}",
                        )
                    )
                    st.caption(
                        "1 trains on one worker. 2 to 8 split the training rows into that many parts, trained by "
                        "several workers at the same time and merged into one model; the price stays the same."
                    )
                price = int(by_name[algorithm].get("price_per_1000_rows") or 0)
                rows = int(dataset.get("rows") or 0)
                cost = fmt.training_cost(rows, price)
                balance = int(session.call(client.wallet)["balance"])
                st.markdown(
                    f"**Cost: {fmt.credits(cost)}** ({rows:,} rows at {fmt.credits(price)} per started 1,000 rows)"
                    f" · your balance: {fmt.credits(balance)}"
                )
                short = balance < cost
                if short:
                    st.warning(
                        f"Your balance is {fmt.credits(cost - balance)} short of this training. Top up first.",
                        icon=":material/account_balance_wallet:",
                    )
                if st.form_submit_button(
                    f"Pay {fmt.credits(cost)} and start training",
                    type="primary",
                    icon=":material/play_arrow:",
                    disabled=short,
                ):
                    st.session_state.pop(CURRENT_JOB, None)  # a new training replaces the last one on screen
                    try:
                        job = client.start_training(
                            {
                                "dataset_id": int(dataset_id),
                                "algorithm": algorithm,
                                "hyperparameters": chosen,
                                "test_size": test_size,
                                **({"shards": shards} if shards > 1 else {}),
                            }
                        )
                    except ApiError as exc:
                        session.show_error(exc, "The training did not start: ")
                    else:
                        st.session_state[CURRENT_JOB] = job
                        st.query_params[TRAINING_PARAM] = str(job["id"])
                        st.rerun()  # so every balance on screen shows the charge
        current = current_job(client)
        if current is not None:
            st.divider()
            st.session_state[CURRENT_JOB] = show_job(client, current)
