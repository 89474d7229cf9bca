"""The Open Inference Protocol (KServe V2) over gRPC, on its own port: decode, call the data plane, encode.

Everything else (who is calling, which model, the rows' checks, the bill) is the
transport-free :class:`~app.services.dataplane.DataPlane` that the REST routes
call too. Standard clients work unmodified: ``tritonclient.grpc`` sends tensors
as ``raw_input_contents`` by default; typed ``contents`` are accepted as well.
Outputs go back as ``raw_output_contents`` (little-endian; BYTES elements each
after a 4-byte length), which is what ``InferResult.as_numpy`` reads. A classifier's ``probabilities`` output
(asked for in ``outputs``) carries its ``classes`` parameter as a JSON string, the protocol's parameters being
scalars.

ModelInfer needs ``authorization: Bearer <token>`` (a login token or an API key
with the ``predict`` scope) in the call's metadata, as REST does; health and
metadata calls need nothing. A ``max_price_per_row`` request parameter caps the
price per row (ABORTED when the model costs more, nothing charged). Errors carry the status code
of the protocol error they are (see ``_STATUS``) and the same message as REST.
"""

from __future__ import annotations

import functools
import logging
import re
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np
import orjson

from app.api.grpc import open_inference_pb2 as pb
from app.api.grpc import open_inference_pb2_grpc as pb_grpc
from app.core.config import Settings
from app.core.errors import AppError, BadRequest, InsufficientFunds, NotFound
from app.models.catalog import MODEL_NAME_PATTERN
from app.services import oip
from app.services.dataplane import DataPlane

log = logging.getLogger("mlmarket.grpc")

MAX_VERSION = 2**31 - 1
STOP_GRACE_SECONDS = 5.0
INTERNAL_MESSAGE = "internal error; the server log has the details"

_STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    402: grpc.StatusCode.FAILED_PRECONDITION,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

# Where typed (non-raw) tensor data lives in InferTensorContents, by datatype. FP16 has no field: raw only.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Method = Callable[[Any, _Request, Any], Awaitable[_Response]]


def _status_of(exc: AppError) -> tuple[grpc.StatusCode, str]:
    code = _STATUS.get(exc.status_code)
    if code is None:
        log.error("gRPC: unmapped %s (%s): %s", type(exc).__name__, exc.status_code, exc.detail)
        return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
    message = exc.detail
    if isinstance(exc, InsufficientFunds) and not message.startswith("insufficient balance"):
        message = f"insufficient balance: {message}"
    return code, message


def _rpc(method: _Method[_Request, _Response]) -> _Method[_Request, _Response]:
    """Turns mlmarket's errors into gRPC statuses; anything unexpected is logged and answered INTERNAL."""

    @functools.wraps(method)
    async def call(self: Any, request: _Request, context: Any) -> _Response:
        try:
            return await method(self, request, context)
        except AppError as exc:
            code, message = _status_of(exc)
        except Exception:
            log.exception("gRPC %s failed", method.__name__)
            code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
        await context.abort(code, message)
        raise AssertionError("context.abort() returns only by raising")

    return call


# -- decoding -----------------------------------------------------------------------------------------------


def bearer_token(metadata: Any) -> str | None:
    """The token of ``authorization: Bearer <token>`` in the call's metadata (keys arrive in lower case)."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def model_version(text: str) -> int | None:
    """The protocol's version string: empty for the newest version, else a whole number from 1 to 2**31-1."""
    if text == "":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or not 1 <= int(text) <= MAX_VERSION:
        raise BadRequest(f"model version must be empty (the newest) or a whole number from 1 to {MAX_VERSION}")
    return int(text)


def model_name(name: str) -> str:
    """A name the catalog could hold; any other is unknown, as REST answers for such a path."""
    if not _MODEL_NAME.fullmatch(name):
        shown = name if len(name) <= 64 else name[:61] + "..."
        raise NotFound(f"model {shown!r} not found; GET /api/v1/models lists the catalog")
    return name


def parameters_of(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        out[key] = getattr(parameter, choice) if choice else None
    return out


def _typed_contents(tensor: pb.ModelInferRequest.InferInputTensor, name: str, shape: list[int]) -> np.ndarray[Any, Any]:
    datatype = tensor.datatype
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"input {name!r}: {datatype} data can only be sent in raw_input_contents")
    misplaced = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if misplaced:
        raise BadRequest(f"input {name!r}: {datatype} values go in contents.{field}, not {', '.join(misplaced)}")
    values = getattr(tensor.contents, field)
    if datatype == "BYTES":
        return oip.from_values([oip.decode_text(v, name) for v in values], datatype, shape, name)
    return oip.from_values(list(values), datatype, shape, name)


def infer_request(request: pb.ModelInferRequest) -> oip.InferRequest:
    """The protobuf request as the data plane's tensors, checked as the REST decoder checks them."""
    if not request.inputs:
        raise BadRequest("the request needs at least one input tensor")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input"
        )
    inputs: list[oip.Tensor] = []
    for i, tensor in enumerate(request.inputs):
        name = oip.check_name(tensor.name, f"inputs[{i}]")
        shape = oip.check_shape(name, list(tensor.shape))
        datatype = tensor.datatype
        if datatype != "BYTES" and datatype not in oip.NUMPY_TYPES:
            raise BadRequest(f"input {name!r} has unsupported datatype {datatype!r}")
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(f"input {name!r}: with raw_input_contents, no input may carry contents")
            data = oip.from_buffer(raw[i], datatype, shape, name)
        else:
            data = _typed_contents(tensor, name, shape)
        inputs.append(
            oip.Tensor(
                name=name, shape=shape, datatype=datatype, data=data, parameters=parameters_of(tensor.parameters)
            )
        )
    return oip.InferRequest(
        id=oip.check_request_id(request.id or None),
        inputs=inputs,
        outputs=[o.name for o in request.outputs],
        parameters=parameters_of(request.parameters),
    )


# -- encoding -----------------------------------------------------------------------------------------------


def set_parameter(target: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool | np.bool_):
        target.bool_param = bool(value)
    elif isinstance(value, int | np.integer) and -(2**63) <= int(value) < 2**63:
        target.int64_param = int(value)
    elif isinstance(value, int | np.integer) and 0 <= int(value) < 2**64:
        target.uint64_param = int(value)
    elif isinstance(value, float | np.floating):
        target.double_param = float(value)
    elif isinstance(value, list | tuple | dict):  # such as a probabilities output's classes: as a JSON string
        target.string_param = orjson.dumps(value).decode()
    else:
        target.string_param = str(value)


def raw_bytes(tensor: oip.Tensor) -> bytes:
    """A tensor's data in the raw encoding: little-endian numbers, or length-prefixed UTF-8 for BYTES."""
    if tensor.datatype == "BYTES":
        parts: list[bytes] = []
        for value in tensor.data.tolist():
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    dtype = np.dtype(oip.NUMPY_TYPES[tensor.datatype]).newbyteorder("<")
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()


def infer_response(response: oip.InferResponse) -> pb.ModelInferResponse:
    out = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version, id=response.id)
    for key, value in response.parameters.items():
        set_parameter(out.parameters[key], value)
    for tensor in response.outputs:
        output = out.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        for key, value in tensor.parameters.items():
            set_parameter(output.parameters[key], value)
        out.raw_output_contents.append(raw_bytes(tensor))
    return out


def model_metadata_response(meta: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    def tensors(items: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            for t in items
        ]

    out = pb.ModelMetadataResponse(
        name=meta["name"],
        versions=meta.get("versions", []),
        platform=meta.get("platform", ""),
        inputs=tensors(meta.get("inputs", [])),
        outputs=tensors(meta.get("outputs", [])),
    )
    for key, value in (meta.get("parameters") or {}).items():
        set_parameter(out.parameters[key], value)
    return out


# -- the service --------------------------------------------------------------------------------------------


class OpenInferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    @_rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    @_rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        meta = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta.get("extensions", [])
        )

    @_rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        version = model_version(request.version)
        meta = await self.dataplane.model_metadata(model_name(request.name), version)
        return model_metadata_response(meta)

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        version = model_version(request.version)
        ready = await self.dataplane.model_ready(model_name(request.name), version)
        return pb.ModelReadyResponse(ready=bool(ready["ready"]))

    @_rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        principal = await self.dataplane.authenticate(bearer_token(context.invocation_metadata()))
        version = model_version(request.model_version)
        name = model_name(request.model_name)
        response = await self.dataplane.infer(principal, name, version, infer_request(request))
        return infer_response(response)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def start_grpc_server(source: Any, host: str, port: int, settings: Settings | None = None) -> grpc.aio.Server:
    """Serves the protocol on ``host:port`` until :func:`stop_grpc_server`; call it on the running event loop.

    ``source`` is the :class:`DataPlane`, or the app's state holding it as ``dataplane``. Messages larger than
    ``max_request_bytes`` (of ``settings``, by default the data plane's) are refused with RESOURCE_EXHAUSTED, by
    gRPC itself. A port already in use is an error, not shared (SO_REUSEPORT off), except between the worker
    processes of one API (``api_workers`` > 1), which share it as they share the HTTP port.
    """
    dataplane: DataPlane = source if isinstance(source, DataPlane) else source.dataplane
    settings = settings or dataplane.settings
    max_bytes = settings.max_request_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.so_reuseport", 1 if settings.api_workers > 1 else 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(OpenInferenceServicer(dataplane), server)  # type: ignore[no-untyped-call]
    address = _address(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises when it cannot bind
        raise RuntimeError(f"gRPC cannot listen on {address}: {exc}") from exc
    if bound == 0:  # older grpcio reports a failed bind as port 0
        raise RuntimeError(f"gRPC cannot listen on {address}")
    await server.start()
    log.info("gRPC Open Inference Protocol on %s", _address(host, bound))
    return server


async def stop_grpc_server(server: grpc.aio.Server, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stops taking calls and lets those in flight finish for up to ``grace`` seconds."""
    await server.stop(grace)
