"""Writers of a task's results (a :class:`~app.services.results.ResultTable`) as JSON, CSV, Arrow or Parquet.

Each produces the body in chunks of rows, so it is never built whole. Arrow and Parquet need pyarrow, imported
only when one of them is asked for: the API process stays lean (tests/test_lean_imports.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from app.services.results import ARROW, CSV, JSON, PARQUET, ResultTable

# Rows per chunk of a streamed body: text formats write row by row, columnar ones make a record batch (or a
# Parquet row group) per chunk.
TEXT_CHUNK_ROWS = 2_000
COLUMNAR_CHUNK_ROWS = 16_384


def _safe_cell(value: Any) -> Any:
    """Neutralises spreadsheet formula injection in a text cell."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


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
    texts += [len(table.features) + 1, len(table.features) + table.width + 3]
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
        *(pa.float64() for _ in range(table.width)),
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
