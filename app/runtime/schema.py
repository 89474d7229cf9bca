"""A model's input schema and the checking of rows against it, from JSON or from a CSV file.

Rows are numbered from 1 in the order the user sent them (for CSV: the data
records after the header, blank lines not counted). Every rejected row gets one
:class:`RowError` whose reason names the row and everything wrong with it. An
accepted row is normalised: exactly the schema's features, in schema order,
numbers as ``float``, integers as ``int``, strings stripped.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import Unprocessable

FeatureType = Literal["number", "integer", "string"]
MAX_STRING_LENGTH = 1000
# Integers beyond 2**53 lose precision as floats, which is what the estimators compute with.
MAX_SAFE_INTEGER = 2**53
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_SHOWN_CHARS = 40
# NUL and other control characters (tab excepted) cannot be stored in PostgreSQL JSON and are never data.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Feature(BaseModel):
    """One input column of a model. ``categories`` lists the values a string feature was trained on.

    A string outside ``categories`` is accepted: the model's encoder ignores unknown categories. The profile
    (``minimum``, ``maximum``: the finite range of a number or integer in the training data; ``example``: a
    typical value) helps a person fill in a row; it never refuses one. Versions trained before it have None.
    """

    # Stored schemas are read by every release that serves them: a field a newer release adds is ignored by an older
    # one (during a rolling upgrade), not a reason to refuse the model.
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(min_length=1, max_length=200)
    type: FeatureType
    categories: list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    example: float | int | str | None = None


class RowError(BaseModel):
    model_config = ConfigDict(frozen=True)

    row: int
    reason: str


def check_text(text: str, max_length: int) -> str | None:
    """What makes ``text`` unfit to store and echo (too long, control characters, lone surrogates), or None."""
    if len(text) > max_length:
        return f"is longer than {max_length} characters"
    if _CONTROL.search(text):
        return "contains control characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _parse_number(value: Any) -> float | None:
    """A finite float from a JSON number or a decimal string; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            number = float(value)
        except OverflowError:
            return None
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
    else:
        return None
    return number if math.isfinite(number) else None


def convert_value(feature: Feature, value: Any) -> tuple[Any, str | None]:
    """The normalised value, or None and what is wrong with it."""
    name = feature.name
    if feature.type == "string":
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return None, f"feature {name!r} must be a string, got {_show(value)}"
        text = value.strip()
        if not text:
            return None, f"feature {name!r} is empty"
        problem = check_text(text, MAX_STRING_LENGTH)
        if problem:
            shown = f", got {_show(text)}" if "control" in problem else ""
            return None, f"feature {name!r} {problem}{shown}"
        return text, None
    if isinstance(value, str) and not value.strip():
        return None, f"feature {name!r} is empty"
    number = _parse_number(value)
    if feature.type == "number":
        if number is None:
            return None, f"feature {name!r} must be a finite number, got {_show(value)}"
        return number, None
    if number is None or not number.is_integer():
        return None, f"feature {name!r} must be an integer, got {_show(value)}"
    if abs(number) > MAX_SAFE_INTEGER:
        return None, f"feature {name!r} is out of range (at most {MAX_SAFE_INTEGER} in magnitude)"
    return int(number), None


def _fast_row(row: Any, names: Sequence[str], numeric: Sequence[bool]) -> dict[str, Any] | None:
    """The common case at a fraction of the cost: exactly the schema's keys, finite floats for numbers.

    None sends the row through the full check, which gives the same result for every row this accepts.
    """
    if type(row) is not dict or len(row) != len(names):
        return None
    out: dict[str, Any] = {}
    for name, is_number in zip(names, numeric, strict=True):
        value = row.get(name, None)
        if not (is_number and type(value) is float and value - value == 0.0):  # finite floats only
            return None
        out[name] = value
    return out


def _check_row(
    features: Sequence[Feature], row: Any, known: frozenset[str] | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    if not isinstance(row, dict):
        return None, [f"must be an object with the features as keys, got {_show(row)}"]
    problems: list[str] = []
    known = known if known is not None else frozenset(f.name for f in features)
    for key in row:
        if key not in known:
            problems.append(f"unknown feature {_show(key)}")
    normalised: dict[str, Any] = {}
    for feature in features:
        if feature.name not in row:
            problems.append(f"missing feature {feature.name!r}")
            continue
        value, problem = convert_value(feature, row[feature.name])
        if problem:
            problems.append(problem)
        else:
            normalised[feature.name] = value
    return (None, problems) if problems else (normalised, [])


def _row_error(number: int, problems: list[str], where: str = "") -> RowError:
    return RowError(row=number, reason=f"row {number}{where}: " + "; ".join(problems))


def validate_rows(features: Sequence[Feature], rows: list[Any]) -> tuple[list[dict[str, Any]], list[RowError]]:
    """The accepted rows, normalised, and one error for each rejected row (numbered from 1)."""
    accepted: list[dict[str, Any]] = []
    errors: list[RowError] = []
    names = [f.name for f in features]
    numeric = [f.type == "number" for f in features]
    known = frozenset(names)
    for number, row in enumerate(rows, start=1):
        fast = _fast_row(row, names, numeric)
        if fast is not None:
            accepted.append(fast)
            continue
        normalised, problems = _check_row(features, row, known)
        if normalised is None:
            errors.append(_row_error(number, problems))
        else:
            accepted.append(normalised)
    return accepted, errors


def _expected(features: Sequence[Feature]) -> str:
    return ", ".join(f.name for f in features)


def _header(reader: Any, features: Sequence[Feature]) -> list[str]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise Unprocessable(f"the CSV header cannot be read: {exc}") from exc
    if not header or not any(cell.strip() for cell in header):
        raise Unprocessable(f"the first line of the CSV file must be a header naming {_expected(features)}")
    columns = [cell.strip().lstrip("\ufeff").strip() for cell in header]
    check_columns(columns, features, "the CSV header")
    return columns


def check_columns(columns: Sequence[str], features: Sequence[Feature], what: str) -> None:
    """Raises :class:`Unprocessable` unless ``columns`` name each feature once and nothing else, in any order;
    ``what`` says where they come from ("the CSV header")."""
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise Unprocessable(f"{what} repeats column(s) {', '.join(map(repr, duplicates))}")
    known = {f.name for f in features}
    missing = [f.name for f in features if f.name not in columns]
    unknown = [c for c in columns if c not in known]
    problems = []
    if missing:
        problems.append(f"lacks feature column(s) {', '.join(map(repr, missing))}")
    if unknown:
        problems.append(f"has unknown column(s) {', '.join(map(repr, unknown))}")
    if problems:
        raise Unprocessable(f"{what} {' and '.join(problems)}; the model expects: {_expected(features)}")


def number_columns(features: Sequence[Feature], rows: list[Any]) -> dict[str, Any] | None:
    """The common case of a big JSON request, column by column: every feature a number, every row an object
    with exactly the features as keys and finite floats as values. None sends the rows through
    :func:`validate_rows`, which accepts each row this accepts, with the same values (and explains every row it
    refuses)."""
    if not rows or not features or any(f.type != "number" for f in features):
        return None
    width = len(features)
    if not all(type(row) is dict and len(row) == width for row in rows):
        return None
    columns: dict[str, Any] = {}
    for feature in features:
        values = [row.get(feature.name) for row in rows]
        if not all(type(v) is float for v in values):
            return None
        array = np.asarray(values, dtype=np.float64)
        if not np.isfinite(array).all():
            return None
        columns[feature.name] = array
    return columns


def number_columns_from_csv(text: str, features: Sequence[Feature]) -> dict[str, Any] | None:
    """The common case of a big CSV upload, column by column (no object per row): every feature a number and
    every record well formed with a finite decimal number in each cell. None sends the text through
    :func:`rows_from_csv`, which accepts each row this accepts, with the same values (and explains every row it
    refuses). A bad header raises :class:`Unprocessable`, as there."""
    if not features or any(f.type != "number" for f in features):
        return None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns = _header(reader, features)
    cells: list[list[str]] = [[] for _ in columns]
    try:
        for record in reader:
            if len(record) != len(columns):
                return None  # blank lines and short or long records: the row-by-row reading says which
            for values, cell in zip(cells, record, strict=True):
                values.append(cell)
    except csv.Error:
        return None
    if not cells[0]:
        return None
    out: dict[str, Any] = {}
    for column, values in zip(columns, cells, strict=True):
        raw = np.asarray(values)
        if raw.dtype.kind != "U" or (np.char.find(raw, "_") >= 0).any():
            return None  # NumPy reads 1_000 as a number; the schema does not
        try:
            numbers = raw.astype(np.float64)
        except ValueError:
            return None
        if not np.isfinite(numbers).all():
            return None
        out[column] = numbers
    return {f.name: out[f.name] for f in features}


def rows_from_csv(text: str, features: Sequence[Feature]) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Rows from CSV text with a header line naming exactly the model's features, in any order.

    A bad header raises :class:`Unprocessable`; a bad record (wrong number of
    values, a broken quote, a value of the wrong type) becomes that row's error.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns = _header(reader, features)
    by_name = {f.name: f for f in features}
    accepted: list[dict[str, Any]] = []
    errors: list[RowError] = []
    number = 0
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number += 1
            hint = " (a quote that is never closed?)" if "unexpected end of data" in str(exc) else ""
            errors.append(_row_error(number, [f"malformed CSV: {exc}{hint}"], f" (line {line})"))
            continue
        if not record or (len(record) == 1 and not record[0].strip() and len(columns) > 1):
            continue  # a blank line
        number += 1
        where = f" (line {line})"
        if len(record) != len(columns):
            wrong_count = f"has {len(record)} value(s), the header has {len(columns)} column(s)"
            errors.append(_row_error(number, [wrong_count], where))
            continue
        normalised: dict[str, Any] = {}
        problems: list[str] = []
        for column, cell in zip(columns, record, strict=True):
            value, problem = convert_value(by_name[column], cell)
            if problem:
                problems.append(problem)
            else:
                normalised[column] = value
        if problems:
            errors.append(_row_error(number, problems, where))
        else:
            accepted.append({f.name: normalised[f.name] for f in features})
    if number == 0:
        raise Unprocessable(
            f"the CSV file has a header but no rows; add one row per prediction ({_expected(features)})"
        )
    return accepted, errors
