"""Open Inference Protocol (KServe V2) tensors: decoding requests into rows and encoding predictions.

Supports the JSON form and the binary tensor extension that standard clients
(tritonclient) use by default: a JSON header of ``Inference-Header-Content-Length``
bytes followed by the raw tensors, each input naming its ``binary_data_size``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core.errors import BadRequest
from app.runtime.schema import Feature

NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
MAX_ELEMENTS = 50_000_000


@dataclass
class Tensor:
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[str]


def _decode_bytes(raw: bytes, count: int) -> list[Any]:
    values: list[Any] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest("malformed BYTES tensor: truncated length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest("malformed BYTES tensor: element longer than the data")
        chunk = raw[offset : offset + size]
        offset += size
        try:
            values.append(chunk.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BadRequest("BYTES tensor elements must be utf-8 text") from exc
    if len(values) != count:
        raise BadRequest(f"BYTES tensor has {len(values)} elements, its shape says {count}")
    return values


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            out.extend(_flatten(item))
        return out
    return [data]


def _element_count(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _is_dim(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d >= 0


def parse_infer_request(body: bytes, header_length: int | None) -> InferRequest:
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequest("Inference-Header-Content-Length is larger than the request body")
        header_bytes, binary = body[:header_length], body[header_length:]
    else:
        header_bytes, binary = body, b""
    try:
        header = json.loads(header_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise BadRequest("the request must be a JSON object with 'inputs'")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the request needs a non-empty 'inputs' list")
    offset = 0
    inputs: list[Tensor] = []
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise BadRequest(f"inputs[{i}] must be an object with name, shape, datatype and data")
        name, shape, datatype = item.get("name"), item.get("shape"), item.get("datatype")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"inputs[{i}] needs a 'name'")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(f"input {name!r} needs a 'shape' of non-negative integers")
        if datatype != "BYTES" and datatype not in NUMPY_TYPES:
            raise BadRequest(f"input {name!r} has unsupported datatype {datatype!r}")
        count = _element_count(shape)
        if count > MAX_ELEMENTS:
            raise BadRequest(f"input {name!r} is too large")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest(f"input {name!r} has malformed parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size does not match the binary data sent")
            chunk = binary[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                data = _decode_bytes(chunk, count)
            else:
                dtype = np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")
                if len(chunk) != count * dtype.itemsize:
                    raise BadRequest(f"input {name!r}: {len(chunk)} bytes do not fit shape {shape} of {datatype}")
                data = np.frombuffer(chunk, dtype=dtype).tolist()
        else:
            if "data" not in item:
                raise BadRequest(f"input {name!r} has no 'data'")
            data = _flatten(item["data"])
            if len(data) != count:
                raise BadRequest(f"input {name!r} has {len(data)} values, its shape {shape} needs {count}")
        inputs.append(Tensor(name=name, shape=shape, datatype=datatype, data=data, parameters=parameters))
    requested: list[Any] = header["outputs"] if isinstance(header.get("outputs"), list) else []
    outputs = [str(o["name"]) for o in requested if isinstance(o, dict) and isinstance(o.get("name"), str)]
    request_id = header.get("id")
    return InferRequest(id=str(request_id) if request_id is not None else None, inputs=inputs, outputs=outputs)


def _value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return v  # refused by the schema check with the row number
    return v


def tensors_to_rows(inputs: list[Tensor], features: list[Feature]) -> list[dict[str, Any]]:
    """One [N, F] tensor with the features in schema order, or one [N] / [N, 1] tensor per feature."""
    names = [f.name for f in features]
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] == len(names) and len(names) > 1:
        tensor = inputs[0]
        n, width = tensor.shape
        return [{names[j]: _value(tensor.data[i * width + j]) for j in range(width)} for i in range(n)]
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
    n = lengths.pop()
    return [{name: _value(by_name[name].data[i]) for name in names} for i in range(n)]


def output_tensor(predictions: list[Any]) -> dict[str, Any]:
    """The ``predict`` output: FP64 for numbers, INT64 for integer labels, BYTES for text labels."""
    if all(isinstance(p, bool) for p in predictions):
        datatype = "BOOL"
    elif all(isinstance(p, int) and not isinstance(p, bool) for p in predictions):
        datatype = "INT64"
    elif all(isinstance(p, int | float) and not isinstance(p, bool) for p in predictions):
        datatype = "FP64"
        predictions = [float(p) for p in predictions]
    else:
        datatype = "BYTES"
        predictions = [str(p) for p in predictions]
    return {"name": "predict", "shape": [len(predictions)], "datatype": datatype, "data": predictions}


def input_metadata(features: list[Feature]) -> list[dict[str, Any]]:
    return [{"name": f.name, "datatype": "BYTES" if f.type == "string" else "FP64", "shape": [-1, 1]} for f in features]


def output_metadata(task: str, classes: list[Any] | None) -> list[dict[str, Any]]:
    if task == "classification" and classes and all(isinstance(c, str) for c in classes):
        datatype = "BYTES"
    elif task == "classification":
        datatype = "INT64"
    else:
        datatype = "FP64"
    return [{"name": "predict", "datatype": datatype, "shape": [-1]}]
