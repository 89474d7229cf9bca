"""Open Inference Protocol (KServe V2) tensors, shared by the REST and the gRPC transports.

A request decodes into :class:`InferRequest` whose tensors hold flat NumPy arrays
(numbers as their own dtype, BYTES as an object array of ``str``);
app.services.oip_columns checks them against a model's input schema, vectorised,
and gives one array per feature. REST supports the JSON form and the binary tensor
extension that standard clients (tritonclient) use by default: a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors, each
input naming its ``binary_data_size``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from app.core.errors import BadRequest
from app.runtime.schema import check_text

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
# What a request id may be: it is stored with the task and echoed, so it is checked before anything is billed.
MAX_ID_LENGTH = 64
MAX_NAME_LENGTH = 200


@dataclass
class Tensor:
    """One named tensor: ``data`` is flat (row-major), numbers in their NumPy dtype, BYTES as ``str`` objects."""

    name: str
    shape: list[int]
    datatype: str
    data: np.ndarray[Any, Any]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any]
    outputs: list[Tensor]


def check_request_id(value: Any) -> str | None:
    """The request id as stored and echoed: text of at most 64 characters without control characters."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest("'id' must be a string")
    text = str(value)
    problem = check_text(text, MAX_ID_LENGTH)
    if problem:
        raise BadRequest(f"'id' {problem}")
    return text


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ELEMENTS for d in shape
    ):
        raise BadRequest(f"input {name!r} needs a 'shape' of non-negative integers")
    if element_count(shape) > MAX_ELEMENTS:
        raise BadRequest(f"input {name!r} is too large")
    return list(shape)


def check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{where} needs a 'name'")
    problem = check_text(value, MAX_NAME_LENGTH)
    if problem:
        raise BadRequest(f"{where}: the name {problem}")
    return value


def decode_bytes_elements(raw: bytes, count: int, name: str) -> np.ndarray[Any, Any]:
    """The BYTES binary form: each element a little-endian uint32 length, then that many UTF-8 bytes."""
    values: list[str] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name!r}: malformed BYTES tensor (truncated length prefix)")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest(f"input {name!r}: malformed BYTES tensor (element longer than the data)")
        values.append(decode_text(raw[offset : offset + size], name))
        offset += size
    if len(values) != count:
        raise BadRequest(f"input {name!r}: BYTES tensor has {len(values)} elements, its shape says {count}")
    return object_array(values)


def decode_text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"input {name!r}: BYTES elements must be UTF-8 text") from exc


def object_array(values: Sequence[Any]) -> np.ndarray[Any, Any]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def from_buffer(raw: bytes, datatype: str, shape: list[int], name: str) -> np.ndarray[Any, Any]:
    """A numeric tensor from its raw little-endian bytes (binary extension, gRPC raw_input_contents)."""
    count = element_count(shape)
    if datatype == "BYTES":
        return decode_bytes_elements(raw, count, name)
    dtype = np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(f"input {name!r}: {len(raw)} bytes do not fit shape {shape} of {datatype}")
    return np.frombuffer(raw, dtype=dtype)


def from_values(values: Any, datatype: str, shape: list[int], name: str) -> np.ndarray[Any, Any]:
    """A tensor from JSON values (flat or nested lists) of the declared datatype, checked against its shape."""
    count = element_count(shape)
    if datatype == "BYTES":
        flat = _flatten(values) if isinstance(values, list) else [values]
        if len(flat) != count:
            raise BadRequest(f"input {name!r} has {len(flat)} values, its shape {shape} needs {count}")
        return object_array(flat)
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"input {name!r}: 'data' must be a flat or nested list of {datatype} values") from exc
    if array.size != count:
        raise BadRequest(f"input {name!r} has {array.size} values, its shape {shape} needs {count}")
    kind = array.dtype.kind
    if datatype == "BOOL":
        if kind != "b" and count:
            raise BadRequest(f"input {name!r}: BOOL data must be true or false")
        return array.reshape(-1).astype(np.bool_)
    if kind not in "iuf" and count:
        raise BadRequest(f"input {name!r}: {datatype} data must be numbers")
    try:
        return array.reshape(-1).astype(NUMPY_TYPES[datatype], casting="unsafe")
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"input {name!r}: values do not fit {datatype}") from exc


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request is not valid JSON: {exc}") from exc


def parse_infer_request(body: bytes, header_length: int | None) -> InferRequest:
    """The REST form: a JSON object, optionally followed by binary tensor data."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequest("Inference-Header-Content-Length is larger than the request body")
        header_bytes, binary = body[:header_length], body[header_length:]
    else:
        header_bytes, binary = body, b""
    header = loads(header_bytes)
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
        name = check_name(item.get("name"), f"inputs[{i}]")
        shape = check_shape(name, item.get("shape"))
        datatype = item.get("datatype")
        if datatype != "BYTES" and datatype not in NUMPY_TYPES:
            raise BadRequest(f"input {name!r} has unsupported datatype {datatype!r}")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest(f"input {name!r} has malformed parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(f"input {name!r}: binary_data_size does not match the binary data sent")
            data = from_buffer(binary[offset : offset + size], datatype, shape, name)
            offset += size
        else:
            if "data" not in item:
                raise BadRequest(f"input {name!r} has no 'data'")
            data = from_values(item["data"], datatype, shape, name)
        inputs.append(Tensor(name=name, shape=shape, datatype=datatype, data=data, parameters=parameters))
    requested: list[Any] = header["outputs"] if isinstance(header.get("outputs"), list) else []
    outputs = [str(o["name"]) for o in requested if isinstance(o, dict) and isinstance(o.get("name"), str)]
    parameters = header.get("parameters")
    return InferRequest(
        id=check_request_id(header.get("id")),
        inputs=inputs,
        outputs=outputs,
        parameters=parameters if isinstance(parameters, dict) else {},
    )


# -- encoding a response ----------------------------------------------------------------------------------


def json_values(values: np.ndarray[Any, Any]) -> list[Any]:
    """Values as JSON-ready Python values (a non-finite number becomes null), as tasks store their results."""
    plain: list[Any] = values.tolist()
    if values.dtype.kind == "f":
        return [v if math.isfinite(v) else None for v in plain]
    return plain


def plain_values(tensor: Tensor) -> list[Any]:
    return json_values(tensor.data)


def _output_json(tensor: Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tensor.name, "shape": tensor.shape, "datatype": tensor.datatype}
    if tensor.parameters:
        out["parameters"] = tensor.parameters
    out["data"] = plain_values(tensor)
    return out


def response_json(response: InferResponse) -> bytes:
    return orjson.dumps(
        {
            "model_name": response.model_name,
            "model_version": response.model_version,
            "id": response.id,
            "parameters": response.parameters,
            "outputs": [_output_json(t) for t in response.outputs],
        }
    )
