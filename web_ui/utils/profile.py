"""A feature's profile in the training data (its range and a typical value, from the catalog) and the values that
lie far outside it: a model says little about inputs unlike anything it was trained on.

Pure functions, shared by the one-row form and the in-page check of a CSV file. A version published before the
catalog kept profiles has none: then only a value that no measurement could hold (not finite, or beyond
``ABSURD`` in magnitude) is flagged.
"""

from __future__ import annotations

import math
from typing import Any

# No real input of a marketplace model is this large: 1e308 is a typing accident, not a measurement.
ABSURD = 1e15
NUMERIC = ("number", "integer")
DASH = "\N{EN DASH}"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def training_range(feature: dict[str, Any]) -> tuple[float, float] | None:
    """(minimum, maximum) of a number or integer in the training data, when the catalog knows it."""
    if feature.get("type") not in NUMERIC:
        return None
    low, high = _finite(feature.get("minimum")), _finite(feature.get("maximum"))
    if low is None or high is None or low > high:
        return None
    return low, high


def tolerated(feature: dict[str, Any]) -> tuple[float, float] | None:
    """The values not flagged: the training range widened by its span on each side (by max(|maximum|, 1) when
    every training value was the same)."""
    seen = training_range(feature)
    if seen is None:
        return None
    low, high = seen
    span = high - low or max(abs(high), 1.0)
    return low - span, high + span


def number_text(value: float, feature: dict[str, Any] | None = None) -> str:
    """A number as a person reads it: 4.3, 1e+308, 12 for an integer."""
    if feature is not None and feature.get("type") == "integer" and math.isfinite(value) and value.is_integer():
        return f"{int(value):,}" if abs(value) < ABSURD else f"{value:.4g}"
    return f"{value:.4g}"


def range_text(feature: dict[str, Any]) -> str | None:
    """ "4.3 to 7.9" with an en dash: the training range of the feature, or None when the catalog has none."""
    seen = training_range(feature)
    if seen is None:
        return None
    return f"{number_text(seen[0], feature)} {DASH} {number_text(seen[1], feature)}"


def far_outside(feature: dict[str, Any], value: Any) -> bool:
    """Whether a number is far outside the training range, not finite, or absurdly large. Never for strings, nor
    for text that is no number (the checks of the type say what is wrong with it)."""
    if feature.get("type") not in NUMERIC or isinstance(value, bool):
        return False
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        return False
    if not math.isfinite(number) or abs(number) > ABSURD:
        return True
    bounds = tolerated(feature)
    return bounds is not None and not bounds[0] <= number <= bounds[1]


def far_reason(feature: dict[str, Any], value: Any) -> str:
    """Why a flagged value is doubtful, naming the range the model was trained on."""
    try:
        shown = number_text(float(value), feature)
    except (TypeError, ValueError, OverflowError):
        shown = str(value)
    seen = range_text(feature)
    trained = f"the model was trained on {seen}" if seen else "no real measurement is that large"
    return f"{shown} is far outside the values seen in training ({trained})"


def example_value(feature: dict[str, Any]) -> Any:
    """The value a form field starts at: the catalog's example when it fits the feature's type, else None."""
    example = feature.get("example")
    kind = feature.get("type")
    if kind == "string":
        return example if isinstance(example, str) and example else None
    number = _finite(example)
    if number is None:
        return None
    if kind == "integer":
        return int(number) if number.is_integer() and abs(number) < 2**53 else None
    return number
