"""How numbers, times and statuses read on every page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
TASK_LABELS = {"regression": "Regression", "classification": "Classification"}


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
