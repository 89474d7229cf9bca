"""Between the Open Inference Protocol's tensors and a model's schema: the input tensors of a request checked
into one array per feature (:func:`to_columns`), predictions as an output tensor, and the model's schema as
the protocol's metadata. The protocol's messages themselves are decoded and encoded in app.services.oip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.core.errors import BadRequest, PayloadTooLarge
from app.runtime.schema import MAX_SAFE_INTEGER, Feature, convert_value
from app.services.oip import Tensor, object_array


def _layout(inputs: list[Tensor], features: list[Feature]) -> tuple[int, dict[str, np.ndarray[Any, Any]]]:
    """Rows and one flat array per feature: one [N, F] tensor in schema order, or one [N] / [N, 1] per feature."""
    names = [f.name for f in features]
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] == len(names) and len(names) > 1:
        tensor = inputs[0]
        n = tensor.shape[0]
        matrix = tensor.data.reshape(n, len(names))
        return n, {name: matrix[:, j] for j, name in enumerate(names)}
    by_name = {t.name: t for t in inputs}
    missing = [n for n in names if n not in by_name]
    unknown = [t.name for t in inputs if t.name not in names]
    if missing or unknown:
        raise BadRequest(
            f"send one [N, {len(names)}] tensor with the features in this order, or one tensor per feature named "
            f"{', '.join(names)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    lengths = set()
    for t in inputs:
        if len(t.shape) == 0 or (len(t.shape) == 2 and t.shape[1] != 1) or len(t.shape) > 2:
            raise BadRequest(f"input {t.name!r} must have shape [N] or [N, 1], got {t.shape}")
        lengths.add(t.shape[0])
    if len(lengths) != 1:
        raise BadRequest("every feature tensor must have the same number of rows")
    return lengths.pop(), {name: by_name[name].data for name in names}


def _show(value: Any) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _numbers(feature: Feature, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if values.dtype.kind == "b" or values.dtype == object:
        return _one_by_one(feature, values, float)
    column = values.astype(np.float64, copy=False)
    bad = ~np.isfinite(column)
    kind = "a finite number"
    if feature.type == "integer":
        bad |= (column != np.round(column)) | (np.abs(column) > MAX_SAFE_INTEGER)
        kind = f"an integer (at most {MAX_SAFE_INTEGER} in magnitude)"
    if bad.any():
        i = int(np.argmax(bad))
        raise BadRequest(f"row {i + 1}: feature {feature.name!r} must be {kind}, got {_show(values[i])}")
    return column


def _one_by_one(feature: Feature, values: np.ndarray[Any, Any], kind: type) -> np.ndarray[Any, Any]:
    """The schema's own check of each value (decimal strings for numbers, numbers for text, …)."""
    out: list[Any] = []
    for i, value in enumerate(values.tolist()):
        normalised, problem = convert_value(feature, value)
        if problem:
            raise BadRequest(f"row {i + 1}: {problem}")
        out.append(normalised)
    return np.asarray(out, dtype=np.float64) if kind is float else object_array(out)


def to_columns(
    inputs: list[Tensor], features: list[Feature], max_rows: int | None = None
) -> tuple[int, dict[str, np.ndarray[Any, Any]]]:
    """The rows of a request as one checked array per feature (float64 for numbers, ``str`` objects for text).

    The first bad value is refused with its row (from 1) and feature; nothing is billed for a refused request.
    """
    n, raw = _layout(inputs, features)
    if n == 0:
        raise BadRequest("the request has no rows")
    if max_rows is not None and n > max_rows:
        raise PayloadTooLarge(f"too many rows: {n}; at most {max_rows} per request")
    columns: dict[str, np.ndarray[Any, Any]] = {}
    for feature in features:
        values = raw[feature.name]
        if feature.type == "string":
            columns[feature.name] = _one_by_one(feature, values, str)
        else:
            columns[feature.name] = _numbers(feature, values)
    return n, columns


def columns_of_rows(rows: Sequence[dict[str, Any]], features: list[Feature]) -> dict[str, np.ndarray[Any, Any]]:
    """Rows already checked against the schema (as a task stores them) as one array per feature."""
    return {
        f.name: object_array([r[f.name] for r in rows])
        if f.type == "string"
        else np.asarray([r[f.name] for r in rows], dtype=np.float64)
        for f in features
    }


def rows_of(columns: dict[str, np.ndarray[Any, Any]], features: list[Feature]) -> list[dict[str, Any]]:
    """Checked columns as the row objects a task stores (integers as ``int``, as the JSON path stores them)."""
    names = [f.name for f in features]
    lists = []
    for f in features:
        values = columns[f.name]
        lists.append([int(v) for v in values.tolist()] if f.type == "integer" else values.tolist())
    return [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]


# -- outputs and metadata ---------------------------------------------------------------------------------


PREDICT = "predict"
PROBABILITIES = "probabilities"
# The names an output of class probabilities may be asked by (MLServer calls it predict_proba).
PROBABILITY_NAMES = (PROBABILITIES, "predict_proba")


def requested_outputs(names: list[str], task: str) -> list[tuple[str, str]]:
    """The outputs a request names, each as (the name asked, ``predict`` or ``probabilities``), in the order
    asked; ``predict`` alone when it names none. BadRequest for an unknown name, or probabilities of a model
    that is not a classifier."""
    if not names:
        return [(PREDICT, PREDICT)]
    out: list[tuple[str, str]] = []
    for name in dict.fromkeys(names):
        if name == PREDICT:
            out.append((name, PREDICT))
        elif name in PROBABILITY_NAMES:
            if task != "classification":
                raise BadRequest(f"output {name!r}: only classifiers give class probabilities; this is a {task} model")
            out.append((name, PROBABILITIES))
        else:
            shown = name if len(name) <= 40 else name[:37] + "..."
            raise BadRequest(
                f"unknown output {shown!r}; this model has "
                + ", ".join(repr(o["name"]) for o in output_metadata(task, None))
            )
    return out


def probability_tensor(probabilities: np.ndarray[Any, Any], classes: list[Any], name: str = PROBABILITIES) -> Tensor:
    """Class probabilities as an FP64 tensor of shape [n, k], its classes (in column order) as a parameter."""
    matrix = np.ascontiguousarray(probabilities, dtype=np.float64)
    return Tensor(
        name=name,
        shape=[int(matrix.shape[0]), len(classes)],
        datatype="FP64",
        data=matrix.reshape(-1),
        parameters={"classes": list(classes)},
    )


def output_tensor(predictions: np.ndarray[Any, Any], name: str = PREDICT) -> Tensor:
    """Predictions as a tensor: FP64 for numbers, INT64 for integer labels, BOOL, or BYTES for text labels."""
    kind = predictions.dtype.kind
    if kind == "b":
        datatype = "BOOL"
    elif kind in "iu":
        datatype, predictions = "INT64", predictions.astype(np.int64, copy=False)
    elif kind == "f":
        datatype, predictions = "FP64", predictions.astype(np.float64, copy=False)
    else:
        datatype, predictions = "BYTES", object_array([str(p) for p in predictions.tolist()])
    return Tensor(name=name, shape=[len(predictions)], datatype=datatype, data=predictions)


def input_metadata(features: list[Feature]) -> list[dict[str, Any]]:
    return [{"name": f.name, "datatype": "BYTES" if f.type == "string" else "FP64", "shape": [-1, 1]} for f in features]


def output_metadata(task: str, classes: list[Any] | None) -> list[dict[str, Any]]:
    if task == "classification" and classes and all(isinstance(c, str) for c in classes):
        datatype = "BYTES"
    elif task == "classification":
        datatype = "INT64"
    else:
        datatype = "FP64"
    outputs: list[dict[str, Any]] = [{"name": PREDICT, "datatype": datatype, "shape": [-1]}]
    if task == "classification":
        outputs.append({"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, len(classes) if classes else -1]})
    return outputs
