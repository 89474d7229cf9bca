"""Training data from CSV: strict checks with fixed messages, column types, and the task the target suggests.

The messages of :class:`CsvProblem` are part of the API contract (clients match
them), so they never change wording: "file is empty", "file must be utf-8 csv",
"csv must contain header row", "csv must contain target column",
"csv must have at most N columns", "csv must have at most N rows".

pandas is imported by the functions that build or read a data frame, not with
this module: the API process that serves models never needs it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from app.core.errors import BadRequest

if TYPE_CHECKING:
    import pandas as pd

DType = Literal["integer", "number", "string", "boolean"]
# An integer target with at most this many distinct values is taken for class labels.
MAX_CLASSES_GUESSED = 20
MAX_COLUMN_NAME_LENGTH = 200


class CsvProblem(BadRequest):
    """A dataset upload that cannot be used; 400 with one of the fixed messages."""


@dataclass(frozen=True)
class CsvLimits:
    max_columns: int = 50
    max_rows: int = 10_000


@dataclass
class ParsedCsv:
    text: str
    frame: pd.DataFrame
    columns: list[str]
    dtypes: dict[str, DType]
    task: Literal["regression", "classification"]

    @property
    def rows(self) -> int:
        return len(self.frame)


def decode(data: bytes) -> str:
    if not data.strip():
        raise CsvProblem("file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvProblem("file must be utf-8 csv") from exc
    if "\x00" in text:
        raise CsvProblem("file must be utf-8 csv")
    return text


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _records(text: str) -> tuple[list[str], list[list[str]]]:
    try:
        records = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise CsvProblem("file must be utf-8 csv") from exc
    if not records:
        raise CsvProblem("file is empty")
    header = [c.strip() for c in records[0]]
    # A header names every column; a first line of numbers (or with blank names) is data, not a header.
    if any(not c for c in header) or all(_looks_numeric(c) for c in header):
        raise CsvProblem("csv must contain header row")
    return header, records[1:]


def dtype_of(series: pd.Series) -> DType:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    return "string"


def guess_task(series: pd.Series) -> Literal["regression", "classification"]:
    """Numbers with many distinct values are regressed; labels (text, booleans, few integers) are classified."""
    import pandas as pd

    values = series.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "classification"
    integral = bool(values.map(lambda v: float(v).is_integer()).all()) if len(values) else False
    if integral and values.nunique() <= MAX_CLASSES_GUESSED:
        return "classification"
    return "regression"


def parse_csv(data: bytes | str, target: str, limits: CsvLimits) -> ParsedCsv:
    """Checks a dataset upload; raises :class:`CsvProblem` (400) with the contract's message."""
    import pandas as pd

    text = decode(data) if isinstance(data, bytes) else data
    header, records = _records(text)
    if len(header) > limits.max_columns:
        raise CsvProblem(f"csv must have at most {limits.max_columns} columns")
    if len(records) > limits.max_rows:
        raise CsvProblem(f"csv must have at most {limits.max_rows} rows")
    if target not in header:
        raise CsvProblem("csv must contain target column")
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise CsvProblem(f"csv header repeats column(s): {', '.join(duplicates)}")
    too_long = [c for c in header if len(c) > MAX_COLUMN_NAME_LENGTH]
    if too_long:
        raise CsvProblem(f"csv column names must be at most {MAX_COLUMN_NAME_LENGTH} characters")
    for number, record in enumerate(records, start=1):
        if len(record) != len(header):
            raise CsvProblem(f"csv row {number} has {len(record)} values, the header has {len(header)} columns")
    if not records:
        raise CsvProblem("csv must contain at least one data row below the header")
    try:
        frame = pd.read_csv(io.StringIO(text), skip_blank_lines=True, skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as exc:
        raise CsvProblem("file must be utf-8 csv") from exc
    frame.columns = header
    dtypes = {str(c): dtype_of(frame[c]) for c in frame.columns}
    return ParsedCsv(text=text, frame=frame, columns=header, dtypes=dtypes, task=guess_task(frame[target]))


def append_records(text: str, columns: list[str], rows: list[dict[str, Any]]) -> str:
    """The CSV text with ``rows`` (objects keyed by column name) added at the end."""
    out = io.StringIO()
    if text and not text.endswith(("\n", "\r")):
        out.write("\n")
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _cell(row[c]) for c in columns])
    return text + out.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def check_appended_rows(columns: list[str], rows: list[Any]) -> list[dict[str, Any]]:
    """Rows to append: objects whose keys are columns of the dataset and whose values are plain scalars."""
    checked: list[dict[str, Any]] = []
    known = set(columns)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise CsvProblem(f"row {number} must be an object with column names as keys")
        unknown = [str(k) for k in row if k not in known]
        if unknown:
            raise CsvProblem(f"row {number} has unknown column(s) {', '.join(unknown)}; columns: {', '.join(columns)}")
        for key, value in row.items():
            if value is not None and not isinstance(value, str | int | float | bool):
                raise CsvProblem(f"row {number}: column {key!r} must be a number, a string, a boolean or null")
            if isinstance(value, float) and not math.isfinite(value):
                raise CsvProblem(f"row {number}: column {key!r} must be a finite number")
        checked.append(row)
    return checked


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows (missing values as null)."""
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return records


def column_summary(frame: pd.DataFrame, dtypes: dict[str, DType]) -> list[dict[str, Any]]:
    summary = []
    for column in frame.columns:
        series = frame[column]
        item: dict[str, Any] = {
            "name": str(column),
            "dtype": dtypes.get(str(column), dtype_of(series)),
            "missing": int(series.isna().sum()),
            "unique": int(series.nunique()),
        }
        if item["dtype"] in ("integer", "number") and series.notna().any():
            item.update(min=float(series.min()), max=float(series.max()), mean=float(series.mean()))
        summary.append(item)
    return summary
