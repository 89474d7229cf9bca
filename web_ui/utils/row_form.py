"""The one-row form of the predict page: a field per input, starting at a typical value of the training data with
the range it was trained on, and a warning (to be confirmed before paying) for a value far outside that range."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import streamlit as st

from web_ui.utils import profile

ANYWAY = "Predict anyway"
NUMBER_FORMAT = "%g"  # printf style, drawn by the browser: the shortest text of the number, no trailing zeros


def _step(feature: dict[str, Any]) -> float:
    """A step of about a hundredth to a tenth of the training range (0.1 for iris sizes), else 0.1."""
    seen = profile.training_range(feature)
    if seen is None or seen[1] <= seen[0]:
        return 0.1
    return float(10 ** (math.floor(math.log10(seen[1] - seen[0])) - 1))


def feature_input(model: str, feature: dict[str, Any]) -> Any:
    """One field, starting at the feature's example (or 0 and empty without one), its training range below it."""
    label = str(feature["name"])
    key = f"feature-{model}-{label}"
    kind = feature.get("type")
    example = profile.example_value(feature)
    if kind == "string" and feature.get("categories"):
        options = [str(c) for c in feature["categories"]]
        index = options.index(example) if example in options else 0
        return st.selectbox(label, options, index=index, key=key)
    if kind == "string":
        return st.text_input(label, value=example or "", key=key)
    if kind == "integer":
        value: Any = int(st.number_input(label, value=example if example is not None else 0, step=1, key=key))
    else:
        step = _step(feature)
        start = float(example) if example is not None else 0.0
        # "%g" shows a number as typed (98, 5.1, 0.0123), not padded to a fixed number of decimals.
        value = float(st.number_input(label, value=start, step=step, format=NUMBER_FORMAT, key=key))
    seen = profile.range_text(feature)
    if seen:
        st.caption(f"Seen in training: {seen}")
    return value


def inputs(model: str, features: list[dict[str, Any]], per_line: int = 3) -> dict[str, Any]:
    """The row as the person filled it in, the fields in a grid."""
    columns = st.columns(per_line)
    row: dict[str, Any] = {}
    for number, feature in enumerate(features):
        with columns[number % per_line]:
            row[str(feature["name"])] = feature_input(model, feature)
    return row


def doubtful(features: list[dict[str, Any]], row: dict[str, Any]) -> list[str]:
    """One sentence per value far outside the training range of its feature, naming the feature and the range."""
    return [
        f"**{f['name']}** = {profile.far_reason(f, row[str(f['name'])])}."
        for f in features
        if str(f["name"]) in row and profile.far_outside(f, row[str(f["name"])])
    ]


def confirmed(model: str, warnings: list[str]) -> bool:
    """Shows the warnings, and whether the person ticked "Predict anyway" for exactly these values (a new doubtful
    value needs a new tick). True when nothing is doubtful."""
    if not warnings:
        return True
    for warning in warnings:
        st.warning(f"{warning} Its prediction may mean little.", icon=":material/warning:")
    digest = hashlib.sha256("\n".join(warnings).encode()).hexdigest()[:12]
    ticked = st.checkbox(ANYWAY, key=f"anyway-{model}-{digest}", help="Pay for this row with the values as they are")
    if not ticked:
        st.caption(f"Correct the value, or tick **{ANYWAY}** to pay for this row as it is.")
    return ticked
