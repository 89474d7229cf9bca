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
query = search_col.text_input("Search", placeholder="name, description, input or author", key="market_search")
tasks = ["All tasks", *sorted({str(m.get("task")) for m in models})]
chosen_task = task_col.selectbox(
    "Task", tasks, key="market_task", format_func=lambda t: t if t == "All tasks" else fmt.task_label(t)
)
ORDERS = ["Recommended", "Newest", "Most used", "Name", "Price: low to high", "Price: high to low"]
has_usage = any("predictions" in m for m in models)
order = sort_col.selectbox("Sort by", [o for o in ORDERS if o != "Most used" or has_usage], key="market_sort")

shown = [
    m
    for m in models
    if (chosen_task == "All tasks" or m.get("task") == chosen_task)
    and (
        not query.strip()
        or query.strip().lower()
        in " ".join(
            [
                *(str(m.get(k) or "") for k in ("name", "description", "algorithm")),
                fmt.author(m),
                *(str(f.get("name")) for f in m.get("input_schema") or []),
            ]
        ).lower()
    )
]
if order == "Recommended":
    shown = fmt.recommended(shown)
elif order == "Newest":
    shown.sort(key=lambda m: str(m.get("created_at") or ""), reverse=True)
elif order == "Most used":
    shown.sort(key=lambda m: (-int(m.get("predictions") or 0), str(m.get("name"))))
elif order == "Name":
    shown.sort(key=lambda m: str(m.get("name")))
else:
    shown.sort(key=lambda m: int(m.get("price_per_row") or 0), reverse=order == "Price: high to low")

if not shown:
    words = f"“{query.strip()}”" if query.strip() else "these filters"
    st.info(
        f"No model matches {words}. Try another word, or clear the search and the task filter.",
        icon=":material/search_off:",
    )
    st.stop()
st.caption(
    fmt.count(len(models), "model")
    if len(shown) == len(models)
    else f"{len(shown):,} of {fmt.count(len(models), 'model')}"
)


def use_model(name: str) -> None:
    st.session_state[PREDICT_MODEL] = name


for start in range(0, len(shown), CARDS_PER_ROW):
    columns = st.columns(CARDS_PER_ROW)
    for column, model in zip(columns, shown[start : start + CARDS_PER_ROW], strict=False):
        with column.container(border=True, height="stretch"):
            name = str(model.get("name"))
            st.subheader(f"{name}", anchor=False)
            badges = st.container(horizontal=True, gap="small")
            badges.badge(fmt.task_label(model.get("task")), color="violet")
            badges.badge(f"v{model.get('version')}", color="gray")
            badges.badge(f"{fmt.credits(model.get('price_per_row'))} / row", color="green")
            if model.get("price_raised") and model.get("previous_price_per_row") is not None:
                badges.badge(f"was {fmt.credits(model['previous_price_per_row'])} / row", color="orange")
            st.write(model.get("description") or "_No description._")
            st.markdown(f"**Inputs:** {fmt.features_text(model.get('input_schema') or [])}")
            if model.get("classes"):
                st.markdown("**Predicts one of:** " + ", ".join(f"`{c}`" for c in model["classes"]))
            scores = fmt.metrics_text(model.get("metrics"))
            if scores:
                st.caption(f"{model.get('algorithm')} · {scores}")
            st.caption(f"By {fmt.author(model)} · published {fmt.when(model.get('created_at'))[:10]}")
            if st.button("Predict with this model", key=f"use-{name}", icon=":material/arrow_forward:"):
                use_model(name)
                st.switch_page("app_pages/predict.py", query_params={"model": name})

with st.expander("All models as a table"):
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "model": m.get("name"),
                    "version": m.get("version"),
                    "task": fmt.task_label(m.get("task")),
                    "price per row": m.get("price_per_row"),
                    "inputs": ", ".join(str(f.get("name")) for f in m.get("input_schema") or []),
                    "author": fmt.author(m),
                    "description": m.get("description"),
                }
                for m in shown
            ]
        ),
        hide_index=True,
        width="stretch",
    )
