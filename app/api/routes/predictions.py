from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from app.api.deps import CurrentPrincipal, CurrentUser, DataPlaneDep, ReadSessionDep, SettingsDep, get_engine
from app.api.errors import describe_validation_errors
from app.api.routes.common import Limit, Offset
from app.api.routes.webhooks import WEBHOOK_PROPERTIES, webhook_target
from app.api.sse import state_events
from app.core.config import Settings
from app.core.db import read_session
from app.core.errors import BadRequest, PayloadTooLarge, Unprocessable
from app.core.logging import current_request_id
from app.core.notify import Watch
from app.models.catalog import ModelVersion
from app.models.task import (
    FINISHED_STATUSES,
    PredictionRequest,
    RowErrorPublic,
    Task,
    TaskAccepted,
    TaskPublic,
    TaskStatus,
)
from app.services import predictions, results, submissions, webhooks
from app.services.billing import Priced, check_price
from app.services.dataplane import ServedModel

router = APIRouter(prefix="/predictions", tags=["predictions"])

SSE_MAX_SECONDS = 600


class PredictionInput:
    """A prediction request as JSON rows, a CSV upload or a Parquet upload, parsed but not yet checked against a
    model."""

    def __init__(
        self,
        model: str,
        version: int | None,
        rows: list[Any] | None = None,
        csv_text: str | None = None,
        parquet: bytes | None = None,
        max_price_per_row: int | None = None,
        webhook: webhooks.Target | None = None,
    ):
        self.model = model
        self.version = version
        self.rows = rows
        self.csv_text = csv_text
        self.parquet = parquet
        self.max_price_per_row = max_price_per_row
        self.webhook = webhook


class PriceCap(BaseModel):
    """``max_price_per_row``: the most the caller pays per row; a model that costs more answers 409."""

    max_price_per_row: int | None = Field(default=None, ge=1, le=2**53, strict=True)


def _price_cap(value: Any) -> int | None:
    try:
        return PriceCap.model_validate({"max_price_per_row": value}).max_price_per_row
    except ValidationError as exc:
        raise Unprocessable("max_price_per_row must be a whole number of credits, at least 1") from exc


async def read_prediction_input(request: Request, settings: SettingsDep) -> PredictionInput:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request, settings)
    if content_type not in ("application/json", ""):
        raise Unprocessable(
            "send JSON {model, version?, rows: [...]} or a multipart form with a CSV or Parquet 'file' and 'model'"
        )
    body = await request.body()
    if len(body) > settings.predict_max_bytes:
        raise PayloadTooLarge(f"request body is larger than {settings.predict_max_bytes} bytes")
    try:
        # orjson: about half of the time of a full JSON validation for big requests (rows are checked later)
        loaded = orjson.loads(body)
        parsed = PredictionRequest.model_validate(loaded)
    except orjson.JSONDecodeError as exc:
        raise Unprocessable(f"request body is not valid JSON ({exc})") from exc
    except ValidationError as exc:
        raise Unprocessable(describe_validation_errors(exc.errors())) from exc
    cap = _price_cap(loaded.get("max_price_per_row"))
    hook = webhook_target(loaded, settings)
    return PredictionInput(parsed.model, parsed.version, rows=parsed.rows, max_price_per_row=cap, webhook=hook)


async def _read_multipart(request: Request, settings: Settings) -> PredictionInput:
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=settings.predict_max_bytes + 1)
    except Exception as exc:  # python-multipart raises several types for malformed bodies
        raise BadRequest(f"malformed multipart form: {exc}") from exc
    model = form.get("model")
    upload = form.get("file")
    if not isinstance(model, str) or not model.strip():
        raise Unprocessable("the form needs a 'model' field naming a catalog model")
    if not isinstance(upload, UploadFile):
        raise Unprocessable("the form needs a 'file' field with a CSV or Parquet file")
    version_raw = form.get("version")
    version: int | None = None
    if isinstance(version_raw, str) and version_raw.strip():
        if not version_raw.strip().isdigit() or int(version_raw) < 1:
            raise Unprocessable("version must be a positive whole number")
        version = int(version_raw)
    cap_raw = form.get("max_price_per_row")
    cap: int | None = None
    if isinstance(cap_raw, str) and cap_raw.strip():
        if not cap_raw.strip().isdigit() or len(cap_raw.strip()) > 15:
            raise Unprocessable("max_price_per_row must be a whole number of credits, at least 1")
        cap = _price_cap(int(cap_raw.strip()))
    events = ",".join(v for v in form.getlist("webhook_events") if isinstance(v, str))
    hook = webhook_target({"webhook": form.get("webhook"), "webhook_events": events or None}, settings)
    data = await upload.read(settings.predict_max_bytes + 1)
    parquet = results.is_parquet(upload.filename, upload.content_type, data)
    if len(data) > settings.predict_max_bytes:
        kind = "Parquet" if parquet else "CSV"
        raise PayloadTooLarge(f"the {kind} file is larger than {settings.predict_max_bytes} bytes")
    if not data.strip():
        raise BadRequest("file is empty")
    if parquet:
        # the footer alone: a corrupt file, too many rows or too much data is refused before the model is looked up
        await asyncio.to_thread(
            results.check_parquet, data, max_rows=settings.predict_max_rows, max_bytes=settings.predict_max_bytes
        )
        return PredictionInput(model.strip(), version, parquet=data, max_price_per_row=cap, webhook=hook)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest("file must be utf-8 csv") from exc
    return PredictionInput(model.strip(), version, csv_text=text, max_price_per_row=cap, webhook=hook)


PredictionInputDep = Annotated[PredictionInput, Depends(read_prediction_input)]

_MAX_PRICE_SCHEMA = {
    "type": "integer",
    "minimum": 1,
    "description": "The most you pay per row: a model (or its newest version) that costs more answers 409 and "
    "charges nothing",
}


def _json_schema() -> dict[str, Any]:
    schema = PredictionRequest.model_json_schema()
    properties = {**schema.get("properties", {}), "max_price_per_row": _MAX_PRICE_SCHEMA, **WEBHOOK_PROPERTIES}
    return {**schema, "properties": properties}


_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": _json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["model", "file"],
                "properties": {
                    "model": {"type": "string"},
                    "version": {"type": "integer", "minimum": 1},
                    "max_price_per_row": _MAX_PRICE_SCHEMA,
                    **WEBHOOK_PROPERTIES,
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "A CSV file with a header naming the features, or a Parquet file with one "
                        "column per feature (recognised by a .parquet name, the type application/vnd.apache.parquet "
                        "or its first bytes)",
                    },
                },
            },
            "encoding": {"file": {"contentType": "text/csv, application/vnd.apache.parquet"}},
        },
    },
}


def to_public(task: Task, model: ModelVersion | ServedModel | None, *, with_results: bool = True) -> TaskPublic:
    return TaskPublic.model_validate(
        task,
        update={
            "model": model.name if model else "",
            "version": model.version if model else 0,
            "results": predictions.aligned_results(task) if with_results else None,
        },
    )


# Inputs with at least this many rows are checked in a thread, so the event loop keeps serving others.
CHECK_IN_THREAD_ROWS = 200


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        200: {"model": TaskPublic, "description": "Finished within the wait asked for with `Prefer: wait=N`"},
        400: {"description": "A malformed multipart form or CSV file"},
        402: {"description": "The balance does not cover the accepted rows"},
        403: {"description": "An API key without the 'predict' scope"},
        404: {"description": "Unknown model or version"},
        409: {"description": "The model costs more per row than `max_price_per_row`"},
        413: {"description": "Too many rows or bytes"},
        422: {"description": "No valid row, or a malformed request"},
    },
)
async def create_prediction(
    request: Request,
    payload: PredictionInputDep,
    principal: CurrentPrincipal,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    prefer: Annotated[
        str | None,
        Header(description="`wait=N`: answer 200 with the finished task if it finishes within N seconds (max 60)"),
    ] = None,
) -> Any:
    model = await dataplane.model(payload.model, payload.version)
    check_price(model.name, model.version, model.price_per_row, payload.max_price_per_row)
    rows = await _prepared(payload, model, settings.predict_max_rows)
    submission = submissions.Submission(
        user_id=principal.user_id,
        model=Priced(model.id, model.name, model.version, model.price_per_row, model.owner_id),
        features=model.features,
        rows=rows,
        request_id=current_request_id(),
        api_key_id=principal.api_key_id,
        webhook=payload.webhook,
    )
    submission.check()
    wait = requested_wait(prefer)
    # Watching starts before the task exists: no notice of its end can come before the watch.
    with contextlib.ExitStack() as stack:
        watch = stack.enter_context(predictions.WATCHERS.watch(submission.task_id)) if wait else None
        queued = await dataplane.submit_task(submission)
        accepted = TaskAccepted(
            id=queued.task_id,
            status=TaskStatus.queued,
            model=model.name,
            version=model.version,
            cost=queued.cost,
            rows_accepted=rows.accepted,
            rows_rejected=rows.total - rows.accepted,
            errors=[RowErrorPublic(row=e.row, reason=e.reason) for e in rows.errors],
        )
        if wait is None or watch is None:
            return accepted
        finished = await wait_for_finish(get_engine(request), principal.user_id, queued.task_id, model, wait, watch)
    if finished is None:
        return accepted
    return Response(
        finished.model_dump_json(),
        status_code=200,
        media_type="application/json",
        headers={"Preference-Applied": f"wait={wait:g}"},
    )


async def _prepared(payload: PredictionInput, model: ServedModel, max_rows: int) -> predictions.PreparedRows:
    features = model.features
    if payload.parquet is not None:
        return await asyncio.to_thread(results.prepare_parquet, features, payload.parquet, max_rows=max_rows)
    if payload.csv_text is not None:
        text = payload.csv_text
        if len(text) < 64 * CHECK_IN_THREAD_ROWS:
            return predictions.prepare_csv(features, text, max_rows=max_rows)
        return await asyncio.to_thread(predictions.prepare_csv, features, text, max_rows=max_rows)
    rows = payload.rows or []
    if len(rows) < CHECK_IN_THREAD_ROWS:
        return predictions.prepare_rows(features, rows, max_rows=max_rows)
    return await asyncio.to_thread(predictions.prepare_rows, features, rows, max_rows=max_rows)


MAX_PREFER_WAIT_SECONDS = 60.0
DEFAULT_PREFER_WAIT_SECONDS = 30.0
# Without a notice for this long, a waiting request looks at the task itself (a notice may have been lost).
RECHECK_SECONDS = 5.0
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait(?:\s*=\s*(\d+(?:\.\d+)?))?(?:$|[,;\s])", re.IGNORECASE)


def requested_wait(prefer: str | None) -> float | None:
    """Seconds the client will wait, from an RFC 7240 ``Prefer: wait=N`` header (capped); None if not asked."""
    if not prefer:
        return None
    match = _PREFER_WAIT.search(prefer)
    if match is None:
        return None
    seconds = float(match.group(1)) if match.group(1) else DEFAULT_PREFER_WAIT_SECONDS
    return min(seconds, MAX_PREFER_WAIT_SECONDS)


def _finished(engine: Any, user_id: int, task_id: str, model: ServedModel) -> TaskPublic | None:
    with read_session(engine) as session:
        task = predictions.get_for_user(session, user_id=user_id, task_id=task_id, with_inputs=False)
        if task.status not in FINISHED_STATUSES:
            return None
        return to_public(task, model)


async def wait_for_finish(
    engine: Any, user_id: int, task_id: str, model: ServedModel, seconds: float, watch: Watch
) -> TaskPublic | None:
    """The finished task, once the worker's commit says it finished (in this process, or by NOTIFY from
    another); None when ``seconds`` pass first. The database is read when told, not polled."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        event = await watch.next(min(remaining, RECHECK_SECONDS))
        if event == predictions.STARTED:
            continue
        if event is None and deadline - loop.time() <= 0:
            break
        finished = await asyncio.to_thread(_finished, engine, user_id, task_id, model)
        if finished is not None:
            return finished
    return None


@router.get("", response_model=list[TaskPublic])
def list_predictions(
    user: CurrentUser,
    session: ReadSessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    status: Annotated[TaskStatus | None, Query(description="Only tasks with this status")] = None,
) -> list[TaskPublic]:
    tasks = predictions.list_for_user(session, user_id=user.id or 0, status=status, limit=limit, offset=offset)
    models = {t.model_version_id: session.get(ModelVersion, t.model_version_id) for t in tasks}
    return [to_public(t, models[t.model_version_id], with_results=False) for t in tasks]


@router.get("/{task_id}", response_model=TaskPublic, responses={404: {"description": "No such prediction"}})
def read_prediction(task_id: str, user: CurrentUser, session: ReadSessionDep) -> TaskPublic:
    task = predictions.get_for_user(session, user_id=user.id or 0, task_id=task_id, with_inputs=False)
    return to_public(task, session.get(ModelVersion, task.model_version_id))


_RESULTS_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "model", "version", "rows_total", "rows_accepted", "rows_rejected", "columns", "rows"],
    "properties": {
        "id": {"type": "string"},
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "rows_total": {"type": "integer"},
        "rows_accepted": {"type": "integer"},
        "rows_rejected": {"type": "integer"},
        "columns": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"type": "array"}},
    },
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_RESULTS_CONTENT: dict[str, dict[str, Any]] = {
    results.JSON: {"application/json": {"schema": _RESULTS_JSON_SCHEMA}},
    results.CSV: {"text/csv": {"schema": {"type": "string"}}},
    results.ARROW: {results.MEDIA_TYPES[results.ARROW]: _BINARY},
    results.PARQUET: {results.MEDIA_TYPES[results.PARQUET]: _BINARY},
}
_RESULTS_DESCRIPTION = (
    "Every row sent, in request order: `row` (its position in the request), the features, `prediction`, "
    "`status` (`ok` or `rejected`) and `error` (why a row was rejected)"
)
_RESULTS_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such prediction"},
    409: {"description": "The prediction has no results yet"},
}


def _results(task_id: str, user_id: int, session: Any, fmt: str, *, vary: bool = False) -> StreamingResponse:
    table = results.load(session, user_id=user_id, task_id=task_id)
    headers = {"Content-Disposition": f'attachment; filename="prediction-{table.task_id}.{results.EXTENSIONS[fmt]}"'}
    if vary:
        headers["Vary"] = "Accept"
    return StreamingResponse(results.CHUNKS[fmt](table), media_type=results.MEDIA_TYPES[fmt], headers=headers)


@router.get(
    "/{task_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": _RESULTS_DESCRIPTION + "; as JSON unless `format` or the Accept header asks otherwise",
            "content": {k: v for content in _RESULTS_CONTENT.values() for k, v in content.items()},
        },
        400: {"description": "An unknown `format`"},
        406: {"description": "The Accept header names none of the formats"},
        **_RESULTS_ERRORS,
    },
)
def download_results_as(
    task_id: str,
    user: CurrentUser,
    session: ReadSessionDep,
    format: Annotated[
        str | None,
        Query(
            description="`json`, `csv`, `arrow` (an Arrow IPC stream) or `parquet`; wins over the Accept header",
            json_schema_extra={"enum": list(results.FORMATS)},
        ),
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> StreamingResponse:
    fmt = results.format_from_query(format) if format is not None else results.format_from_accept(accept)
    return _results(task_id, user.id or 0, session, fmt, vary=format is None)


_DOWNLOAD_SUMMARIES = {
    results.CSV: "The results as CSV; text cells and column names a spreadsheet would run as formulas are prefixed "
    "with `'`.",
    results.JSON: "The results as JSON.",
    results.ARROW: "The results as an Apache Arrow IPC stream.",
    results.PARQUET: "The results as an Apache Parquet file.",
}


def _download_as(fmt: str) -> Callable[..., StreamingResponse]:
    def download(task_id: str, user: CurrentUser, session: ReadSessionDep) -> StreamingResponse:
        return _results(task_id, user.id or 0, session, fmt)

    download.__doc__ = _DOWNLOAD_SUMMARIES[fmt]
    return download


# One path per format (`results.csv` is the one clients have used from the start).
for _fmt in (results.CSV, results.JSON, results.ARROW, results.PARQUET):
    router.add_api_route(
        f"/{{task_id}}/results.{_fmt}",
        _download_as(_fmt),
        methods=["GET"],
        name="download_results" if _fmt == results.CSV else f"download_results_{_fmt}",
        response_class=StreamingResponse,
        responses={
            200: {"description": _RESULTS_DESCRIPTION, "content": _RESULTS_CONTENT[_fmt]},
            **_RESULTS_ERRORS,
        },
    )


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 404: {"description": "No such prediction"}},
)
async def prediction_events(task_id: str, request: Request, user: CurrentUser) -> StreamingResponse:
    engine = get_engine(request)

    def snapshot() -> dict[str, Any]:
        with read_session(engine) as session:
            task = predictions.get_for_user(
                session, user_id=user.id or 0, task_id=task_id, with_inputs=False, with_outputs=False
            )
            public = to_public(task, session.get(ModelVersion, task.model_version_id), with_results=False)
            return dict(json.loads(public.model_dump_json()))

    # woken by the worker's commits (started, finished), not by reading the task over and over
    return await state_events(
        request,
        snapshot,
        event="status",
        changed_by=lambda state: state["status"],
        max_seconds=SSE_MAX_SECONDS,
        watch=predictions.WATCHERS.watch(task_id),
    )
