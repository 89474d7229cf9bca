"""What the blocking and the async client share: settings, retries, request bodies, answers and result types.

Nothing here does input or output, so both clients behave the same by construction.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from mlmarket_client import errors

__version__ = "0.1.0"

DEFAULT_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
# Backoff without a Retry-After: 0.5 s, 1 s, 2 s, ... (each cut by up to half at random), at most this long.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
# A Retry-After longer than this is not waited for: the error is raised with the header, for the caller to decide.
MAX_RETRY_AFTER_SECONDS = 60.0
# The server waits at most this long on one `Prefer: wait=N` request.
MAX_PREFER_WAIT_SECONDS = 60
FINISHED = frozenset({"succeeded", "failed"})

PREDICTIONS = "/api/v1/predictions"


@dataclass(frozen=True)
class Config:
    base_url: str
    authorization: str | None
    timeout: float
    max_retries: int

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        token: str | None,
        timeout: float,
        max_retries: int,
    ) -> Config:
        """Arguments first, then ``MLMARKET_URL`` and ``MLMARKET_API_KEY`` from the environment."""
        if api_key and token:
            raise ValueError("give an api_key or a token, not both")
        url = base_url or os.environ.get("MLMARKET_URL") or DEFAULT_URL
        secret = api_key or token or os.environ.get("MLMARKET_API_KEY") or None
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        return cls(url.rstrip("/"), f"Bearer {secret}" if secret else None, timeout, max_retries)

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"mlmarket-client/{__version__}", "Accept": "application/json"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        return headers


# -- retries ----------------------------------------------------------------------------------------------

RETRY_STATUSES = frozenset({429, 503})


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number of seconds or an HTTP date); None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text)) if math.isfinite(float(text)) else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    # timezone.utc rather than datetime.UTC: the client supports Python 3.10
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)  # noqa: UP017
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())  # noqa: UP017


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter for retry number ``attempt`` (from 0)."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
    # Jitter spreads clients that failed together; it has nothing to do with security.
    return float(ceiling * random.uniform(0.5, 1.0))  # noqa: S311


def status_retry_delay(response: httpx.Response, attempt: int) -> float | None:
    """How long to wait before sending again after a 429 or 503; None when this answer is not retried."""
    if response.status_code not in RETRY_STATUSES:
        return None
    header = response.headers.get("retry-after")
    wait = retry_after_seconds(header)
    if wait is None:
        return backoff_seconds(attempt)
    return wait if wait <= MAX_RETRY_AFTER_SECONDS else None


def transport_retryable(exc: httpx.TransportError, idempotent: bool) -> bool:
    """A connection that was never made can always be tried again (nothing was sent); one that broke after
    the request went out only for calls that change nothing (a paid prediction may have been charged)."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True
    return idempotent


def connection_error(exc: httpx.TransportError, request: httpx.Request) -> errors.ConnectionFailed:
    return errors.ConnectionFailed(f"{request.method} {request.url}: {type(exc).__name__}: {exc}")


def raise_for_status(response: httpx.Response, *, price_capped: bool = False) -> None:
    """Raises the typed error for a 4xx or 5xx answer (its body must have been read)."""
    if response.status_code < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise errors.error_for(response.status_code, body, dict(response.headers), price_capped=price_capped)


# -- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    name: str
    type: str
    categories: list[str] | None = None


@dataclass(frozen=True)
class Model:
    """A catalog model version; ``versions`` is filled by ``model(name)``. ``raw`` is the API's JSON."""

    name: str
    version: int
    task: str
    price_per_row: int
    features: list[Feature]
    description: str
    owner: str | None
    classes: list[Any] | None
    raw: dict[str, Any] = field(repr=False)
    versions: list[Model] = field(default_factory=list, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        return cls(
            name=data["name"],
            version=int(data["version"]),
            task=str(data.get("task", "")),
            price_per_row=int(data.get("price_per_row", 0)),
            features=[
                Feature(f["name"], f.get("type", "number"), f.get("categories")) for f in data.get("input_schema", [])
            ],
            description=str(data.get("description") or ""),
            owner=data.get("owner"),
            classes=data.get("classes"),
            raw=data,
            versions=[cls.from_json(v) for v in data.get("versions") or []],
        )

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


@dataclass(frozen=True)
class RowError:
    """A row the server refused (not charged): ``index`` is its position in the input, from 0."""

    index: int
    reason: str


@dataclass(frozen=True)
class Task:
    """A prediction task as the API shows it; ``results`` (aligned with the rows sent, None where a row was
    rejected) once it succeeded and was read with ``get``."""

    id: str
    status: str
    model: str
    version: int
    cost: int
    rows_accepted: int
    rows_rejected: int
    errors: list[RowError]
    results: list[Any] | None
    error: str | None
    raw: dict[str, Any] = field(repr=False)
    # Only for a task that asked for them: the class labels, and per entry of ``results`` its probability per
    # class in that order (None for a rejected row).
    classes: list[Any] | None = None
    probabilities: list[list[float] | None] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            model=str(data.get("model", "")),
            version=int(data.get("version") or 0),
            cost=int(data.get("cost") or 0),
            rows_accepted=int(data.get("rows_accepted") or 0),
            rows_rejected=int(data.get("rows_rejected") or 0),
            errors=[RowError(int(e["row"]) - 1, str(e["reason"])) for e in data.get("errors") or []],
            results=data.get("results"),
            error=data.get("error"),
            raw=data,
            classes=data.get("classes"),
            probabilities=data.get("probabilities"),
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class PredictionResult:
    """Predictions aligned with the rows given: ``predictions[i]`` belongs to row ``i`` (None if it was rejected,
    and then ``errors`` says why)."""

    predictions: list[Any]
    errors: list[RowError]
    task: Task

    @property
    def classes(self) -> list[Any] | None:
        """The class labels, when probabilities were asked for."""
        return self.task.classes

    @property
    def probabilities(self) -> list[list[float] | None] | None:
        """Per row, its probability per class (in the order of ``classes``), when asked for."""
        return self.task.probabilities

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def cost(self) -> int:
        return self.task.cost

    @property
    def error_by_row(self) -> dict[int, str]:
        return {e.index: e.reason for e in self.errors}

    def __len__(self) -> int:
        return len(self.predictions)


@dataclass(frozen=True)
class InferResult:
    """An Open Inference Protocol answer; ``predictions`` is the data of its ``predict`` output."""

    model_name: str
    model_version: str | None
    id: str | None
    outputs: list[dict[str, Any]]
    parameters: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InferResult:
        return cls(
            model_name=str(data.get("model_name", "")),
            model_version=data.get("model_version"),
            id=data.get("id"),
            outputs=list(data.get("outputs") or []),
            parameters=dict(data.get("parameters") or {}),
            raw=data,
        )

    @property
    def predictions(self) -> list[Any]:
        for output in self.outputs:
            if output.get("name") == "predict":
                return list(output.get("data") or [])
        return list(self.outputs[0].get("data") or []) if self.outputs else []


# -- requests ---------------------------------------------------------------------------------------------


def path_part(value: str) -> str:
    return quote(str(value), safe="")


def is_dataframe(data: Any) -> bool:
    """A pandas DataFrame, recognised without importing pandas."""
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns") and hasattr(data, "to_dict")


def plain(value: Any) -> Any:
    """A JSON-ready value: NumPy scalars as Python ones, a missing value (NaN, NaT, None) as None."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # a NumPy scalar
        try:
            return plain(value.item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value != value:  # pandas' NA and NaT are not equal to themselves
        return None
    return value


def frame_rows(frame: Any, features: Sequence[str]) -> list[dict[str, Any]]:
    """A DataFrame's rows as objects with the model's features only (other columns stay in the frame)."""
    columns = [c for c in features if c in frame.columns]
    if not columns:
        expected = ", ".join(features)
        raise errors.ValidationError(f"the DataFrame has none of the model's feature columns ({expected})")
    records = frame[columns].to_dict(orient="records")
    return [{str(k): plain(v) for k, v in record.items()} for record in records]


def listed_rows(rows: Iterable[Any]) -> list[Any]:
    if isinstance(rows, (str, bytes, Mapping)):
        raise TypeError("rows must be a list of objects ({feature: value}) or a pandas DataFrame")
    return [{str(k): plain(v) for k, v in r.items()} if isinstance(r, Mapping) else r for r in rows]


def features_of(model: Model, version: int | None) -> list[str]:
    if version is None or version == model.version:
        return model.feature_names
    for v in model.versions:
        if v.version == version:
            return v.feature_names
    raise errors.NotFound(f"model {model.name!r} has no published version {version}", status=404)


def prediction_body(
    model: str, rows: list[Any], version: int | None, max_price_per_row: int | None, probabilities: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "rows": rows}
    if probabilities:
        body["probabilities"] = True
    if version is not None:
        body["version"] = version
    if max_price_per_row is not None:
        body["max_price_per_row"] = max_price_per_row
    return body


def encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def prefer_wait(seconds: float | None) -> int:
    """Whole seconds for `Prefer: wait=N`: at least 1, at most what the server allows."""
    if seconds is None:
        return MAX_PREFER_WAIT_SECONDS
    return int(min(MAX_PREFER_WAIT_SECONDS, max(1, math.ceil(seconds))))


def wait_deadline(wait: bool | float, now: float) -> float | None:
    """The monotonic deadline of ``wait`` (True: none)."""
    if wait is True:
        return None
    if wait is False or isinstance(wait, bool) or not wait > 0:
        raise ValueError("wait must be True or a number of seconds above 0; use submit() not to wait")
    return now + float(wait)


def infer_body(
    inputs: Any, features: Sequence[str] | None, max_price_per_row: int | None, request_id: str | None
) -> dict[str, Any]:
    """An OIP infer request from tensors (passed through), a DataFrame, ``{feature: [values]}`` or rows."""
    tensors: list[dict[str, Any]]
    if is_dataframe(inputs):
        names = [c for c in (features or [str(c) for c in inputs.columns]) if c in inputs.columns]
        tensors = [_tensor(name, [plain(v) for v in inputs[name].tolist()]) for name in names]
    elif isinstance(inputs, Mapping):
        tensors = [_tensor(str(name), [plain(v) for v in values]) for name, values in inputs.items()]
    else:
        items = list(inputs)
        if items and all(isinstance(t, Mapping) and "datatype" in t and "data" in t for t in items):
            tensors = [dict(t) for t in items]
        elif items and all(isinstance(r, Mapping) for r in items):
            names = list(features or items[0].keys())
            tensors = [_tensor(name, [plain(r.get(name)) for r in items]) for name in names]
        else:
            raise TypeError("inputs must be OIP tensors, a DataFrame, {feature: [values]} or a list of row objects")
    body: dict[str, Any] = {"inputs": tensors}
    if request_id is not None:
        body["id"] = request_id
    if max_price_per_row is not None:
        body["parameters"] = {"max_price_per_row": max_price_per_row}
    return body


def _tensor(name: str, values: list[Any]) -> dict[str, Any]:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return {"name": name, "shape": [len(values)], "datatype": "FP64" if numeric else "BYTES", "data": values}


def finished_result(task: Task, accepted: Task | None = None) -> PredictionResult:
    """The result of a finished task; a failed task raises :class:`errors.TaskFailed`."""
    if task.status == "failed":
        raise errors.TaskFailed(
            f"prediction {task.id} failed and was refunded: {task.error or 'no reason given'}", task=task
        )
    row_errors = task.errors or (accepted.errors if accepted else [])
    total = task.rows_accepted + task.rows_rejected
    predictions = list(task.results) if task.results is not None else [None] * total
    return PredictionResult(predictions=predictions, errors=row_errors, task=task)


def shaped(result: PredictionResult, data: Any, column: str) -> Any:
    """A DataFrame given: a copy with the ``column`` of predictions added (then ``probability_<class>`` per class
    when probabilities were asked for, and ``error`` when rows were rejected). Rows given: the
    :class:`PredictionResult`."""
    if not is_dataframe(data):
        return result
    out = data.copy()
    out[column] = result.predictions
    if result.classes is not None and result.probabilities is not None:
        # one column per class, right after the predictions
        at = list(out.columns).index(column) + 1
        for j, label in enumerate(result.classes):
            values = [None if row is None else row[j] for row in result.probabilities]
            out.insert(at + j, f"probability_{label}", values, allow_duplicates=True)
    if result.errors:
        reasons = result.error_by_row
        out["error"] = [reasons.get(i) for i in range(len(out))]
    return out


# -- Server-Sent Events -----------------------------------------------------------------------------------


@dataclass
class SSEDecoder:
    """Turns the lines of an event stream into ``(event, data)`` pairs (comments and keep-alives are skipped)."""

    event: str = ""
    data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> tuple[str, str] | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self.data:
                self.event = ""
                return None
            out = (self.event or "message", "\n".join(self.data))
            self.event, self.data = "", []
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def tasks_of(lines: Iterable[str]) -> Iterator[Task]:
    decoder = SSEDecoder()
    for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield Task.from_json(json.loads(event[1]))


async def atasks_of(lines: AsyncIterable[str]) -> AsyncIterator[Task]:
    decoder = SSEDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield Task.from_json(json.loads(event[1]))
