"""A CSV file read and checked in the page, before anyone pays: its text encoding, its header, every cell.

The API has the last word (it checks again and charges only the rows it accepts); this lets a person see
what is wrong and fix it first, and see the real cost before clicking.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from web_ui.utils import profile

# The encodings a person can pick when a file is not UTF-8 (spreadsheets on some systems save these).
ENCODINGS = {
    "utf-8": "UTF-8",
    "latin-1": "Latin-1 (ISO-8859-1)",
    "cp1252": "Windows-1252",
    "utf-16": "UTF-16",
}
MAX_PROBLEMS = 50


@dataclass
class CsvCheck:
    """What the page knows about an uploaded file."""

    encoding: str | None = None  # the one that decoded it; None when it could not be decoded
    text: str = ""
    header: list[str] = field(default_factory=list)
    records: list[list[str]] = field(default_factory=list)  # data rows, blank lines left out
    header_problem: str | None = None  # a problem that stops the whole file
    cell_problems: dict[tuple[int, str], str] = field(default_factory=dict)  # (data row index, column) → why
    # Cells of rows without a problem that lie far outside the training range: predicted, but doubtful.
    far_outside: dict[tuple[int, str], str] = field(default_factory=dict)

    @property
    def bad_rows(self) -> set[int]:
        return {row for row, _ in self.cell_problems}

    @property
    def good_rows(self) -> int:
        return len(self.records) - len(self.bad_rows)

    def utf8(self) -> bytes:
        """The file as UTF-8, which the API reads."""
        return self.text.encode("utf-8")


def decode(data: bytes, encoding: str | None = None) -> tuple[str | None, str]:
    """(the encoding used, the text); ``encoding`` None means UTF-8, or UTF-16 when the file starts with its mark."""
    if encoding is None:
        encoding = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8"
    try:
        text = data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except (UnicodeDecodeError, LookupError):
        return None, ""
    return encoding, text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cell_problem(value: str, feature: dict[str, Any]) -> str | None:
    kind = feature.get("type")
    text = value.strip()
    if not text:
        return "is empty"
    if kind in ("number", "integer"):
        try:
            number = float(text)
        except ValueError:
            return f"{text!r} is not a number"
        if not math.isfinite(number):
            return f"{text!r} is not a finite number"
        if kind == "integer" and number != int(number):
            return f"{text!r} is not a whole number"
        return None
    categories = feature.get("categories")
    if categories and text not in {str(c) for c in categories}:
        return f"{text!r} is not one of " + ", ".join(map(str, categories))
    return None


def check(data: bytes, features: list[dict[str, Any]], encoding: str | None = None) -> CsvCheck:
    result = CsvCheck()
    used, text = decode(data, encoding)
    if used is None:
        return result
    result.encoding, result.text = used, text
    try:
        lines = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    except csv.Error as exc:
        result.header_problem = f"The file does not read as CSV: {exc}."
        return result
    if not lines:
        result.header_problem = "The file is empty."
        return result
    header = [h.strip() for h in lines[0]]
    result.header, result.records = header, lines[1:]
    names = [str(f["name"]) for f in features]
    expected = ", ".join(names)
    if header and all(_is_number(h) for h in header if h):
        result.header_problem = (
            f"The first line holds values, not column names. Add a first line naming the inputs: {expected}."
        )
        return result
    duplicates = sorted({h for h in header if header.count(h) > 1})
    missing = [n for n in names if n not in header]
    unknown = [h for h in header if h not in names]
    problems = []
    if duplicates:
        problems.append("repeats " + ", ".join(map(repr, duplicates)))
    if missing:
        problems.append("lacks " + ", ".join(map(repr, missing)))
    if unknown:
        problems.append("has columns the model does not take: " + ", ".join(map(repr, unknown)))
    if problems:
        result.header_problem = f"The header {'; '.join(problems)}. The model expects: {expected}."
        return result
    if not result.records:
        result.header_problem = "The file has a header but no rows."
        return result
    by_name = {str(f["name"]): f for f in features}
    for index, record in enumerate(result.records):
        if len(record) != len(header):
            result.cell_problems[(index, header[0])] = f"has {len(record)} cells, the header {len(header)}"
            continue
        for column, value in zip(header, record, strict=True):
            problem = _cell_problem(value, by_name[column])
            if problem:
                result.cell_problems[(index, column)] = problem
            elif profile.far_outside(by_name[column], value):
                result.far_outside[(index, column)] = profile.far_reason(by_name[column], value)
    bad = result.bad_rows
    result.far_outside = {cell: why for cell, why in result.far_outside.items() if cell[0] not in bad}
    return result


def problems_text(result: CsvCheck) -> list[str]:
    """One line per bad cell (at most MAX_PROBLEMS), numbered as a person counts rows: the first data row is 1."""
    return _lines(result.cell_problems)


def far_text(result: CsvCheck) -> list[str]:
    """One line per cell far outside the training range (at most MAX_PROBLEMS), rows numbered from 1."""
    return _lines(result.far_outside)


def _lines(cells: dict[tuple[int, str], str]) -> list[str]:
    lines = [f"Row {row + 1}, `{column}`: {why}" for (row, column), why in sorted(cells.items())]
    if len(lines) > MAX_PROBLEMS:
        lines = [*lines[:MAX_PROBLEMS], f"… and {len(lines) - MAX_PROBLEMS} more"]
    return lines
