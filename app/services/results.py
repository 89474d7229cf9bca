"""Tables in and out of a paid prediction: results streamed as JSON, CSV, Arrow or Parquet; Parquet uploads read in.

Results: a task keeps its accepted rows and predictions compactly (app.services.tabular). A download lists
every row the user sent, in request order: ``row`` (its 1-based position in the request), the features,
``prediction``, ``status`` (``ok`` or ``rejected``) and ``error`` (why a row was rejected). It is produced in
chunks of rows, so a body is never built whole. Arrow and Parquet need pyarrow, imported only when one of them
is asked for: the API process stays lean (tests/test_lean_imports.py).

Uploads: a Parquet file is read column by column, in record batches, into the per-feature arrays a
:class:`~app.services.predictions.PreparedRows` holds, with the rules and messages of JSON rows
(app.runtime.schema.convert_value): a value the fast vectorised checks doubt goes through ``convert_value``,
which has the last word. Text columns are read dictionary-encoded, so each distinct text is checked once and a
small file cannot expand into a huge table.
"""

from __future__ import annotations

import bisect
import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import numpy as np
import orjson
from sqlmodel import Session

from app.core.errors import AppError, BadRequest, Conflict, PayloadTooLarge, Unprocessable
from app.models.catalog import ModelVersion
from app.models.task import TaskStatus
from app.runtime.schema import MAX_SAFE_INTEGER, Feature, FeatureType, RowError, check_columns, convert_value
from app.services import catalog, predictions, tabular

# -- formats ------------------------------------------------------------------------------------------------

JSON: Final = "json"
CSV: Final = "csv"
ARROW: Final = "arrow"
PARQUET: Final = "parquet"
FORMATS: Final = (JSON, CSV, ARROW, PARQUET)
MEDIA_TYPES: Final = {
    JSON: "application/json",
    CSV: "text/csv",
    ARROW: "application/vnd.apache.arrow.stream",
    PARQUET: "application/vnd.apache.parquet",
}
# Other names clients use for the same formats in Accept.
_MEDIA_ALIASES: Final = {
    "application/x-parquet": PARQUET,
    "application/parquet": PARQUET,
    "application/x-apache-arrow-stream": ARROW,
}
_WILDCARDS: Final = {"*/*": JSON, "application/*": JSON, "text/*": CSV}
# Rows per chunk of a streamed body: text formats write row by row, columnar ones make a record batch (or a
# Parquet row group) per chunk.
TEXT_CHUNK_ROWS = 2_000
COLUMNAR_CHUNK_ROWS = 16_384

OK = "ok"
REJECTED = "rejected"


class NotAcceptable(AppError):
    status_code = 406


def format_from_accept(accept: str | None) -> str:
    """The format an Accept header asks for (highest quality first, then the order given); JSON without one.

    :class:`NotAcceptable` when it names none of the formats.
    """
    if accept is None or not accept.strip():
        return JSON
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        found = _WILDCARDS.get(media) or _MEDIA_ALIASES.get(media)
        found = found or next((name for name, media_type in MEDIA_TYPES.items() if media_type == media), None)
        if found is None or not quality > 0:
            continue
        if best is None or (-quality, position) < (-best[0], best[1]):
            best = (quality, position, found)
    if best is None:
        raise NotAcceptable(
            "results are available as " + ", ".join(MEDIA_TYPES.values()) + "; choose one with Accept or ?format="
        )
    return best[2]


def format_from_query(value: str) -> str:
    name = value.strip().lower()
    if name not in FORMATS:
        raise BadRequest(f"unknown results format {value[:40]!r}; use one of {', '.join(FORMATS)}")
    return name


def _safe_cell(value: Any) -> Any:
    """Neutralises spreadsheet formula injection in a text cell."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


# -- the results of a task ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultTable:
    """Everything a download needs, read from the task before the body is streamed (no database session
    stays open meanwhile)."""

    task_id: str
    model: str
    version: int
    features: list[Feature]
    inputs: dict[str, list[Any]]
    outputs: list[Any]
    row_numbers: list[int] | None
    rows_total: int
    errors: dict[int, str]

    @property
    def rows_accepted(self) -> int:
        return len(self.row_numbers) if self.row_numbers is not None else len(self.outputs)

    @property
    def columns(self) -> list[str]:
        """``row``, the features, ``prediction``, ``status``, ``error``; a column of ours that a feature's name
        takes is prefixed with ``_`` (as often as needed) so that every name is distinct."""
        taken = {f.name for f in self.features}

        def free(name: str) -> str:
            while name in taken:
                name = "_" + name
            taken.add(name)
            return name

        row = free("row")
        prediction, status, error = free("prediction"), free("status"), free("error")
        return [row, *(f.name for f in self.features), prediction, status, error]

    def chunks(self, size: int) -> Iterator[list[list[Any]]]:
        """The table in request order, ``size`` rows at a time, as one list per column (see ``columns``)."""
        numbers = self.row_numbers
        names = [f.name for f in self.features]
        for start in range(1, self.rows_total + 1, size):
            stop = min(start + size, self.rows_total + 1)
            count = stop - start
            if numbers is None:
                lo, hi = start - 1, stop - 1
            else:
                lo, hi = bisect.bisect_left(numbers, start), bisect.bisect_left(numbers, stop)
            outputs = self.outputs[lo:hi]
            if len(outputs) < hi - lo:
                outputs = outputs + [None] * (hi - lo - len(outputs))
            if hi - lo == count:  # every row of the chunk was accepted
                status: list[Any] = [OK] * count
                yield [
                    list(range(start, stop)),
                    *(self.inputs[name][lo:hi] for name in names),
                    outputs,
                    status,
                    [None] * count,
                ]
                continue
            at = [n - start for n in numbers[lo:hi]] if numbers is not None else []
            features: list[list[Any]] = []
            for name in names:
                column: list[Any] = [None] * count
                for i, value in zip(at, self.inputs[name][lo:hi], strict=True):
                    column[i] = value
                features.append(column)
            prediction: list[Any] = [None] * count
            for i, value in zip(at, outputs, strict=True):
                prediction[i] = value
            status = [REJECTED] * count
            for i in at:
                status[i] = OK
            error = [None if s == OK else self.errors.get(start + i) for i, s in enumerate(status)]
            yield [list(range(start, stop)), *features, prediction, status, error]


def load(session: Session, *, user_id: int, task_id: str) -> ResultTable:
    """The results of one of the user's tasks (:class:`NotFound` for another user's or an unknown one,
    :class:`Conflict` while it has none)."""
    task = predictions.get_for_user(session, user_id=user_id, task_id=task_id)
    if task.status != TaskStatus.succeeded.value or task.outputs is None:
        raise Conflict(f"prediction {task_id} has no results yet (status {task.status})")
    inputs = tabular.unpack_lists(task.inputs)
    model = session.get(ModelVersion, task.model_version_id)
    features = catalog.features_of(model) if model else [_guess_feature(name, inputs[name]) for name in inputs]
    outputs = tabular.unpack_values(task.outputs) or []
    numbers = sorted(task.row_numbers) if task.row_numbers is not None else None
    total = max(task.rows_total, numbers[-1] if numbers else 0, 0 if numbers is not None else len(outputs))
    return ResultTable(
        task_id=task.id,
        model=model.name if model else "",
        version=model.version if model else 0,
        features=features,
        inputs=inputs,
        outputs=outputs,
        row_numbers=numbers,
        rows_total=total,
        errors={int(e["row"]): str(e["reason"]) for e in task.errors or []},
    )


def _guess_feature(name: str, values: list[Any]) -> Feature:
    kind: FeatureType = "string" if any(isinstance(v, str) for v in values) else "number"
    return Feature(name=name, type=kind)


# -- CSV and JSON -------------------------------------------------------------------------------------------


def csv_chunks(table: ResultTable, rows: int = TEXT_CHUNK_ROWS) -> Iterator[bytes]:
    """The table as CSV (header first); text cells and names that a spreadsheet would run as a formula are
    prefixed with ``'``; a rejected row has empty feature and prediction cells."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([_safe_cell(name) for name in table.columns])
    # only the columns that can hold text are looked at cell by cell: the text features, the predictions (labels)
    # and the errors
    texts = [1 + i for i, f in enumerate(table.features) if f.type == "string"]
    texts += [len(table.features) + 1, len(table.features) + 3]
    for chunk in table.chunks(rows):
        for i in texts:
            chunk[i] = [_safe_cell(v) for v in chunk[i]]
        writer.writerows(zip(*chunk, strict=True))
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if out.tell():
        yield out.getvalue().encode()


def json_chunks(table: ResultTable, rows: int = TEXT_CHUNK_ROWS) -> Iterator[bytes]:
    """``{"id", "model", "version", "rows_total", "rows_accepted", "rows_rejected", "columns", "rows": [[…]]}``,
    one array per row, in the order of ``columns``."""
    head = {
        "id": table.task_id,
        "model": table.model,
        "version": table.version,
        "rows_total": table.rows_total,
        "rows_accepted": table.rows_accepted,
        "rows_rejected": table.rows_total - table.rows_accepted,
        "columns": table.columns,
    }
    yield orjson.dumps(head)[:-1] + b',"rows":['
    first = True
    for chunk in table.chunks(rows):
        body = orjson.dumps(list(zip(*chunk, strict=True)))[1:-1]
        if body:
            yield body if first else b"," + body
            first = False
    yield b"]}"


# -- Arrow and Parquet --------------------------------------------------------------------------------------


class _Drain:
    """A write-only file that hands over what was written since the last ``take`` (so a body streams)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        return None

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _prediction_type(pa: Any, outputs: Sequence[Any]) -> Any:
    kinds = {type(v) for v in outputs if v is not None}
    if not kinds:
        return pa.float64()
    if kinds <= {bool}:
        return pa.bool_()
    if kinds <= {int} and all(-(2**63) <= v < 2**63 for v in outputs if v is not None):
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    return pa.string()


def _arrow_values(pa: Any, values: list[Any], kind: Any) -> Any:
    if pa.types.is_string(kind):
        values = [v if v is None or isinstance(v, str) else str(v) for v in values]
    elif pa.types.is_integer(kind):
        values = [None if v is None else int(v) for v in values]
    elif pa.types.is_floating(kind):
        values = [None if v is None else float(v) for v in values]
    return pa.array(values, type=kind)


def _arrow_schema(pa: Any, table: ResultTable) -> Any:
    kind = {"number": pa.float64(), "integer": pa.int64(), "string": pa.string()}
    names = table.columns
    types = [
        pa.int64(),
        *(kind[f.type] for f in table.features),
        _prediction_type(pa, table.outputs),
        pa.string(),
        pa.string(),
    ]
    metadata = {"mlmarket.task": table.task_id, "mlmarket.model": table.model, "mlmarket.version": str(table.version)}
    fields = [pa.field(name, t, nullable=i > 0) for i, (name, t) in enumerate(zip(names, types, strict=True))]
    return pa.schema(fields, metadata=metadata)


def _batches(pa: Any, table: ResultTable, schema: Any, rows: int) -> Iterator[Any]:
    for chunk in table.chunks(rows):
        arrays = [_arrow_values(pa, values, f.type) for values, f in zip(chunk, schema, strict=True)]
        yield pa.record_batch(arrays, schema=schema)


def arrow_chunks(table: ResultTable, rows: int = COLUMNAR_CHUNK_ROWS) -> Iterator[bytes]:
    """The table as an Arrow IPC stream: the schema, one record batch per chunk, the end-of-stream marker."""
    import pyarrow as pa

    schema = _arrow_schema(pa, table)
    sink = _Drain()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), schema) as writer:
        for batch in _batches(pa, table, schema, rows):
            writer.write_batch(batch)
            yield sink.take()
    yield sink.take()


def parquet_chunks(table: ResultTable, rows: int = COLUMNAR_CHUNK_ROWS) -> Iterator[bytes]:
    """The table as a Parquet file (zstd), one row group per chunk, the footer last."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(pa, table)
    sink = _Drain()
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, compression="zstd") as writer:
        written = False
        for batch in _batches(pa, table, schema, rows):
            writer.write_batch(batch)
            written = True
            yield sink.take()
        if not written:
            writer.write_table(schema.empty_table())
    yield sink.take()


CHUNKS = {JSON: json_chunks, CSV: csv_chunks, ARROW: arrow_chunks, PARQUET: parquet_chunks}
EXTENSIONS = {JSON: "json", CSV: "csv", ARROW: "arrows", PARQUET: "parquet"}


# -- Parquet uploads ----------------------------------------------------------------------------------------

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
