"""How a task keeps its rows and its results: one array per column, as compact JSON bytes.

A task's accepted input rows are stored as ``{"feature": [v1, v2, …], …}`` and
its predictions as ``[p1, p2, …]`` (orjson, numbers written straight from
NumPy, a non-finite number as ``null``), in binary columns: no JSON object per
row, no key repeated per row, nothing for the database to parse. Readers turn
them back into NumPy arrays (for predicting) or stream them out as JSON, CSV,
Arrow or Parquet (app.services.results, app.services.result_writers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from app.runtime.schema import Feature

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _plain(feature: Feature, values: np.ndarray[Any, Any]) -> Any:
    if feature.type == "string" or values.dtype.kind == "O":
        return values.tolist()
    if feature.type == "integer":
        return values.astype(np.int64, copy=False)
    return np.ascontiguousarray(values, dtype=np.float64)


def pack_columns(columns: dict[str, np.ndarray[Any, Any]], features: Sequence[Feature]) -> bytes:
    """Checked input columns (one array per feature, as app.services.oip makes them) as stored bytes."""
    return orjson.dumps({f.name: _plain(f, columns[f.name]) for f in features}, option=_NUMPY)


def unpack_columns(data: bytes, features: Sequence[Feature]) -> dict[str, np.ndarray[Any, Any]]:
    """Stored input bytes as one array per feature: float64 for numbers, objects for text."""
    stored: dict[str, list[Any]] = orjson.loads(data)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for f in features:
        values = stored[f.name]
        if f.type == "string":
            array = np.empty(len(values), dtype=object)
            array[:] = values
            out[f.name] = array
        else:
            out[f.name] = np.asarray(values, dtype=np.float64)
    return out


def unpack_lists(data: bytes) -> dict[str, list[Any]]:
    """Stored input bytes as plain lists per column, as they were sent (integers stay integers)."""
    stored: dict[str, list[Any]] = orjson.loads(data)
    return stored


def pack_values(values: np.ndarray[Any, Any]) -> bytes:
    """Predictions as stored bytes (a non-finite number becomes null)."""
    if values.dtype.kind in "fiub":
        return orjson.dumps(np.ascontiguousarray(values), option=_NUMPY)
    return orjson.dumps(values.tolist())


def unpack_values(data: bytes | None) -> list[Any] | None:
    if data is None:
        return None
    values: list[Any] = orjson.loads(data)
    return values


def pack_probabilities(classes: Sequence[Any], probabilities: np.ndarray[Any, Any]) -> bytes:
    """Class probabilities as stored bytes: ``{"classes": [...], "rows": [[p1, …, pk], …]}``, one row per
    accepted row, in the order of ``classes``."""
    matrix = np.ascontiguousarray(probabilities, dtype=np.float64)
    return orjson.dumps({"classes": list(classes), "rows": matrix}, option=_NUMPY)


def unpack_probabilities(data: bytes | None) -> tuple[list[Any], list[list[float]]] | None:
    """The classes and one list of probabilities per accepted row, or None when none were stored."""
    if data is None:
        return None
    stored: dict[str, Any] = orjson.loads(data)
    return list(stored["classes"]), list(stored["rows"])


def rows_of_lists(columns: dict[str, list[Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Columns as row objects (for the few places that show rows one by one)."""
    lists = [columns[name] for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]
