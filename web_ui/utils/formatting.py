"""How numbers, times and statuses read on every page."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import streamlit as st

STATUS_COLORS = {"queued": "gray", "running": "blue", "succeeded": "green", "failed": "red"}
STATUS_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/autorenew:",
    "succeeded": ":material/check_circle:",
    "failed": ":material/cancel:",
}
ENTRY_KINDS = {
    "top_up": "Top-up",
    "charge": "Prediction charge",
    "refund": "Refund",
    "payout": "Author payout",
    "fee": "Platform fee",
    "admin_credit": "Credit from an admin",
}


def entry_label(entry: dict[str, Any]) -> str:
    """What a ledger entry paid for, in words: a training's charge is not a prediction's."""
    kind = str(entry.get("kind"))
    memo = str(entry.get("memo") or "").lower()
    training = memo.startswith("training")
    if kind == "charge":
        return "Training charge" if training else "Prediction charge"
    if kind == "refund":
        return "Training refund" if training else "Prediction refund"
    return ENTRY_KINDS.get(kind, kind)


def training_cost(rows: int, price_per_1000_rows: int) -> int:
    """What the API charges to train on ``rows`` rows: the price per started 1,000 rows, at least one block."""
    return max(1, math.ceil(rows / 1000)) * price_per_1000_rows


TASK_LABELS = {"regression": "Regression", "classification": "Classification"}


def count(number: int, singular: str, plural: str | None = None) -> str:
    """ "1 row", "2 rows", "1,000 rows": a number with its noun, singular only for one."""
    return f"{number:,} " + (singular if number == 1 else plural or f"{singular}s")


def task_label(task: object) -> str:
    """A model's task as the badges write it ("Classification"), whatever the API's spelling."""
    return TASK_LABELS.get(str(task), str(task).capitalize() if task else "")


# A table's time column reads like the captions: "2026-12-01 10:20 UTC", never "+00:00".
TABLE_TIME = "YYYY-MM-DD HH:mm [UTC]"
TABLE_TIME_SECONDS = "YYYY-MM-DD HH:mm:ss [UTC]"


def time_column(label: str, *, seconds: bool = False) -> Any:
    """The column config of a table's time column (pass the times through parse_time)."""
    return st.column_config.DatetimeColumn(label, format=TABLE_TIME_SECONDS if seconds else TABLE_TIME, timezone="UTC")


def credits(amount: int | None) -> str:
    if amount is None:
        return "—"
    return f"{amount:,} credit" + ("" if abs(amount) == 1 else "s")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def when(value: Any) -> str:
    parsed = parse_time(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else "—"


def status_badge(status: str) -> str:
    """Markdown for a coloured status badge."""
    color = STATUS_COLORS.get(status, "gray")
    icon = STATUS_ICONS.get(status, "")
    return f":{color}-badge[{icon} {status}]"


def features_text(schema: list[dict[str, Any]]) -> str:
    parts = []
    for feature in schema:
        kind = feature.get("type", "")
        if feature.get("categories"):
            kind = "one of " + ", ".join(map(str, feature["categories"]))
        parts.append(f"`{feature.get('name')}` ({kind})")
    return ", ".join(parts)


def metrics_text(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return ""
    # Held-out scores say more to a buyer than training scores; show those when the model has them.
    shown = {k: v for k, v in metrics.items() if k.startswith("test_")} or metrics
    parts = []
    for name, value in shown.items():
        label = name.replace("_", " ")
        if isinstance(value, float):
            parts.append(f"{label} {value:.3f}")
        elif isinstance(value, int | str):
            parts.append(f"{label} {value}")
    return " · ".join(parts)


def amount_problem(amount: float | None, maximum: int) -> str | None:
    """Why a number of credits cannot be used (None when it can), in words shown next to the field."""
    if amount is None:
        return "Enter a number of credits."
    if amount != int(amount):
        return "Credits are whole numbers."
    if amount < 1:
        return f"Enter at least 1 credit ({int(amount):,} cannot be added)."
    if amount > maximum:
        return f"At most {maximum:,} credits at a time."
    return None


_SCRATCH_NAME = re.compile(r"^(test|tmp|temp|scratch|demo-test)([-_.]|$)|[-_.](test|tmp)$", re.IGNORECASE)


def author(model: dict[str, Any]) -> str:
    """The name a model's author shows to the public; never their email address."""
    name = model.get("author_name")
    if name:
        return str(name)
    owner = str(model.get("owner") or "")
    return owner if owner and "@" not in owner else "an mlmarket author"


def is_mine(model: dict[str, Any], user: dict[str, Any]) -> bool:
    """Whether ``user`` published ``model`` (by id; by email only from an API that does not send the id)."""
    if "author_id" in model:
        return model.get("author_id") == user.get("id")
    return bool(model.get("owner")) and model.get("owner") == user.get("email")


def recommended(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The catalog as a buyer should meet it: described, scored models first; scratch and test models last."""

    def rank(model: dict[str, Any]) -> tuple[int, int, int, str]:
        name = str(model.get("name") or "")
        return (
            1 if _SCRATCH_NAME.search(name) else 0,
            0 if str(model.get("description") or "").strip() else 1,
            0 if model.get("metrics") else 1,
            name,
        )

    return sorted(models, key=rank)
