"""Parquet uploads of a paid prediction, read in.

A Parquet file is read column by column, in record batches, into the per-feature arrays a
:class:`~app.services.predictions.PreparedRows` holds, with the rules and messages of JSON rows
(app.runtime.schema.convert_value): a value the fast vectorised checks doubt goes through ``convert_value``,
which has the last word. Text columns are read dictionary-encoded, so each distinct text is checked once and a
small file cannot expand into a huge table. pyarrow is imported only when a Parquet file comes in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np

from app.core.errors import BadRequest, PayloadTooLarge, Unprocessable
from app.runtime.schema import MAX_SAFE_INTEGER, Feature, RowError, check_columns, convert_value
from app.services import predictions

PARQUET_MAGIC = b"PAR1"
PARQUET_MEDIA_TYPES = frozenset({"application/vnd.apache.parquet", "application/x-parquet", "application/parquet"})
# Rows per record batch read from an upload.
READ_BATCH_ROWS = 8_192
# The data of an upload, uncompressed, may be this many times the byte limit of a request: Parquet compresses
# well, but a small file must not expand into a huge table.
EXPANSION_LIMIT = 4
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def is_parquet(filename: str | None, content_type: str | None, data: bytes) -> bool:
    """Whether an upload is a Parquet file: by its name, its declared type or its first bytes."""
    media = (content_type or "").split(";")[0].strip().lower()
    return (filename or "").lower().endswith(".parquet") or media in PARQUET_MEDIA_TYPES or data[:4] == PARQUET_MAGIC


def _unreadable(exc: Exception) -> BadRequest:
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return BadRequest(f"the Parquet file cannot be read: {reason}")


def _open_parquet(data: bytes, read_dictionary: list[str] | None = None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if data[:4] != PARQUET_MAGIC or data[-4:] != PARQUET_MAGIC:
        raise BadRequest("the file is not a Parquet file (it must start and end with PAR1)")
    try:
        return pq.ParquetFile(pa.BufferReader(data), read_dictionary=read_dictionary)
    except (pa.ArrowException, OSError, ValueError, IndexError, TypeError) as exc:
        raise _unreadable(exc) from exc


def check_parquet(data: bytes, *, max_rows: int, max_bytes: int) -> None:
    """Refuses a Parquet upload by its footer alone: unreadable (400), no rows (422), too many rows or too many
    bytes once uncompressed (413). Nothing but the footer is read."""
    metadata = _open_parquet(data).metadata
    rows = int(metadata.num_rows)
    if rows > max_rows:
        raise PayloadTooLarge(f"too many rows: {rows}; at most {max_rows} rows per request")
    if rows <= 0:
        raise Unprocessable("the Parquet file has no rows; add one row per prediction")
    size = sum(int(metadata.row_group(i).total_byte_size) for i in range(metadata.num_row_groups))
    limit = EXPANSION_LIMIT * max_bytes
    if size > limit:
        raise PayloadTooLarge(f"the Parquet file holds {size} bytes of data uncompressed; at most {limit} bytes")


def _accepts(pa: Any, kind: Any) -> bool:
    """Column types whose values can be checked one by one (anything else cannot hold a valid value)."""
    if pa.types.is_dictionary(kind):
        return bool(_accepts(pa, kind.value_type))
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
        or pa.types.is_temporal(kind)
    )


def _columns_of(pa: Any, schema: Any, features: Sequence[Feature]) -> list[str]:
    """The file's columns checked against the model's features, like a CSV header; the text columns."""
    names = [name for name in schema.names if not _PANDAS_INDEX.fullmatch(name)]
    check_columns(names, features, "the Parquet file")
    text = []
    for f in features:
        kind = schema.field(f.name).type
        if not _accepts(pa, kind):
            wanted = "text (or whole numbers)" if f.type == "string" else "numbers"
            raise Unprocessable(f"the Parquet column {f.name!r} has type {kind}; feature {f.name!r} needs {wanted}")
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            text.append(f.name)
    return text


def _plain_value(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _check_values(feature: Feature, values: list[Any]) -> tuple[list[Any], dict[int, str]]:
    """Each value through ``convert_value``: the normalised values (None where rejected) and the problems."""
    out: list[Any] = []
    problems: dict[int, str] = {}
    for i, value in enumerate(values):
        normalised, problem = convert_value(feature, _plain_value(value))
        if problem:
            problems[i] = problem
        out.append(normalised)
    return out, problems


def _as_array(feature: Feature, values: list[Any]) -> np.ndarray[Any, Any]:
    if feature.type == "string":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _check_column(pa: Any, pc: Any, feature: Feature, column: Any) -> tuple[np.ndarray[Any, Any], dict[int, str]]:
    """One column of a record batch checked for ``feature``: normalised values (float64 for numbers, objects for
    text; anything where rejected) and the problem of each rejected position."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        # each distinct value is checked once; a null index is checked as a null
        distinct, bad = _check_values(feature, [*column.dictionary.to_pylist(), None])
        lookup = _as_array(feature, distinct)
        indices = pc.fill_null(column.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        values = lookup[indices]
        problems: dict[int, str] = {}
        null_at = len(distinct) - 1
        for k, problem in bad.items():
            for i in np.flatnonzero(indices == (-1 if k == null_at else k)).tolist():
                problems[i] = problem
        return values, problems
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    if feature.type == "string" or not numeric:
        checked, problems = _check_values(feature, column.to_pylist())
        return _as_array(feature, checked), problems
    floats = pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(floats) & ~column.is_null().to_numpy(zero_copy_only=False)
        if feature.type == "integer":
            good &= (np.floor(floats) == floats) & (np.abs(floats) <= MAX_SAFE_INTEGER)
    problems = {}
    if not good.all():
        floats = floats.copy()
        for i in np.flatnonzero(~good).tolist():
            # convert_value has the last word on a value the checks above doubt
            normalised, doubt = convert_value(feature, _plain_value(column[i].as_py()))
            if doubt:
                problems[i] = doubt
            else:
                floats[i] = float(normalised)
    return floats, problems


def prepare_parquet(features: list[Feature], data: bytes, *, max_rows: int) -> predictions.PreparedRows:
    """A Parquet upload checked against a model's features: one column per feature (any order; a pandas index
    is ignored), every row through the rules of JSON rows; a bad file is 400 and a bad set of columns 422."""
    import pyarrow as pa
    import pyarrow.compute as pc

    opened = _open_parquet(data)
    if int(opened.metadata.num_rows) > max_rows:
        raise PayloadTooLarge(f"too many rows: {opened.metadata.num_rows}; at most {max_rows} rows per request")
    text = _columns_of(pa, opened.schema_arrow, features)
    parquet = _open_parquet(data, read_dictionary=text)
    names = [f.name for f in features]
    kept: dict[str, list[np.ndarray[Any, Any]]] = {name: [] for name in names}
    errors: list[RowError] = []
    total = 0
    try:
        for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=names, use_pandas_metadata=False):
            count = batch.num_rows
            if total + count > max_rows:
                raise PayloadTooLarge(f"too many rows: more than {max_rows}; at most {max_rows} rows per request")
            bad: dict[int, list[str]] = {}
            values = {}
            for f in features:
                values[f.name], problems = _check_column(pa, pc, f, batch.column(f.name))
                for i, problem in problems.items():
                    bad.setdefault(i, []).append(problem)
            keep = np.ones(count, dtype=bool)
            for i in sorted(bad):
                keep[i] = False
                errors.append(RowError(row=total + i + 1, reason=f"row {total + i + 1}: " + "; ".join(bad[i])))
            for name in names:
                kept[name].append(values[name][keep])
            total += count
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
        raise _unreadable(exc) from exc
    if total == 0:
        raise Unprocessable("the Parquet file has no rows; add one row per prediction")
    columns = {}
    for f in features:
        parts = kept[f.name]
        columns[f.name] = np.concatenate(parts) if parts else np.empty(0, dtype=object if f.type == "string" else float)
        if f.type != "string":
            columns[f.name] = columns[f.name].astype(np.float64, copy=False)
    return predictions.PreparedRows(
        columns=columns, accepted=len(columns[names[0]]) if names else 0, errors=errors, total=total
    )
