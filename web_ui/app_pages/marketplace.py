"""The catalog: every published model with its price, task, inputs, description and author."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from web_ui.utils import formatting as fmt
from web_ui.utils import session

CARDS_PER_ROW = 3
PREDICT_MODEL = "predict_model"

client = session.client()
st.title(":material/storefront: Marketplace")
st.caption("Models you can use right now. You pay per predicted row; rows a model rejects are free.")

models = session.call(client.models)
if not models:
    st.info("The catalog is empty: no model has been published yet.", icon=":material/info:")
    st.stop()

search_col, task_col, sort_col = st.columns([3, 2, 2])
query = search_col.text_input("Search", placeholder="name, description or author", key="market_search")
tasks = ["All tasks", *sorted({str(m.get("task")) for m in models})]
chosen_task = task_col.selectbox("Task", tasks, key="market_task", format_func=lambda t: fmt.TASK_LABELS.get(t, t))
order = sort_col.selectbox("Sort by", ["Name", "Price: low to high", "Price: high to low"], key="market_sort")

shown = [
    m
    for m in models
    if (chosen_task == "All tasks" or m.get("task") == chosen_task)
    and (
        not query.strip()
        or query.strip().lower()
        in " ".join(str(m.get(k) or "") for k in ("name", "description", "owner", "algorithm")).lower()
    )
]
if order == "Name":
    shown.sort(key=lambda m: str(m.get("name")))
else:
    shown.sort(key=lambda m: int(m.get("price_per_row") or 0), reverse=order == "Price: high to low")

st.caption(f"{len(shown)} of {len(models)} model(s)")


def use_model(name: str) -> None:
    st.session_state[PREDICT_MODEL] = name


for start in range(0, len(shown), CARDS_PER_ROW):
    columns = st.columns(CARDS_PER_ROW)
    for column, model in zip(columns, shown[start : start + CARDS_PER_ROW], strict=False):
        with column.container(border=True, height="stretch"):
            name = str(model.get("name"))
            st.subheader(f"{name}", anchor=False)
            badges = st.container(horizontal=True, gap="small")
            badges.badge(fmt.TASK_LABELS.get(str(model.get("task")), str(model.get("task"))), color="violet")
            badges.badge(f"v{model.get('version')}", color="gray")
            badges.badge(f"{fmt.credits(model.get('price_per_row'))} / row", color="green")
            st.write(model.get("description") or "_No description._")
            st.markdown(f"**Inputs:** {fmt.features_text(model.get('input_schema') or [])}")
            if model.get("classes"):
                st.markdown("**Predicts one of:** " + ", ".join(f"`{c}`" for c in model["classes"]))
            scores = fmt.metrics_text(model.get("metrics"))
            if scores:
                st.caption(f"{model.get('algorithm')} · {scores}")
            st.caption(f"By {model.get('owner') or 'mlmarket'} · published {fmt.when(model.get('created_at'))[:10]}")
            if st.button("Predict with this model", key=f"use-{name}", icon=":material/arrow_forward:"):
                use_model(name)
                st.switch_page("app_pages/predict.py")

with st.expander("All models as a table"):
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "model": m.get("name"),
                    "version": m.get("version"),
                    "task": m.get("task"),
                    "price per row": m.get("price_per_row"),
                    "inputs": ", ".join(str(f.get("name")) for f in m.get("input_schema") or []),
                    "author": m.get("owner"),
                    "description": m.get("description"),
                }
                for m in shown
            ]
        ),
        hide_index=True,
        width="stretch",
    )
