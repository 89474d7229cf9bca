from __future__ import annotations

import csv
import io
import json
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.api.deps import CurrentUser, ReadSessionDep, SessionDep, SettingsDep, get_engine
from app.api.routes.common import Limit, Offset
from app.api.sse import state_events
from app.core.config import Settings
from app.core.db import read_session
from app.core.errors import BadRequest, Conflict, PayloadTooLarge, Unprocessable
from app.core.handlers import describe_validation_errors
from app.core.logging import current_request_id
from app.models.catalog import ModelVersion
from app.models.task import FINISHED_STATUSES, PredictionRequest, Task, TaskAccepted, TaskPublic, TaskStatus
from app.services import catalog, predictions

router = APIRouter(prefix="/predictions", tags=["predictions"])

SSE_MAX_SECONDS = 600


class PredictionInput:
    """A prediction request as JSON rows or as a CSV upload, parsed but not yet checked against a model."""

    def __init__(self, model: str, version: int | None, rows: list[Any] | None = None, csv_text: str | None = None):
        self.model = model
        self.version = version
        self.rows = rows
        self.csv_text = csv_text


async def read_prediction_input(request: Request, settings: SettingsDep) -> PredictionInput:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request, settings)
    if content_type not in ("application/json", ""):
        raise Unprocessable(
            "send JSON {model, version?, rows: [...]} or a multipart form with a CSV 'file' and 'model'"
        )
    body = await request.body()
    if len(body) > settings.predict_max_bytes:
        raise PayloadTooLarge(f"request body is larger than {settings.predict_max_bytes} bytes")
    try:
        parsed = PredictionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise Unprocessable(describe_validation_errors(exc.errors())) from exc
    return PredictionInput(parsed.model, parsed.version, rows=parsed.rows)


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
        raise Unprocessable("the form needs a 'file' field with a CSV file")
    version_raw = form.get("version")
    version: int | None = None
    if isinstance(version_raw, str) and version_raw.strip():
        if not version_raw.strip().isdigit() or int(version_raw) < 1:
            raise Unprocessable("version must be a positive whole number")
        version = int(version_raw)
    data = await upload.read(settings.predict_max_bytes + 1)
    if len(data) > settings.predict_max_bytes:
        raise PayloadTooLarge(f"the CSV file is larger than {settings.predict_max_bytes} bytes")
    if not data.strip():
        raise BadRequest("file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest("file must be utf-8 csv") from exc
    return PredictionInput(model.strip(), version, csv_text=text)


PredictionInputDep = Annotated[PredictionInput, Depends(read_prediction_input)]

_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": PredictionRequest.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["model", "file"],
                "properties": {
                    "model": {"type": "string"},
                    "version": {"type": "integer", "minimum": 1},
                    "file": {"type": "string", "format": "binary"},
                },
            }
        },
    },
}


def to_public(task: Task, model: ModelVersion | None, *, with_results: bool = True) -> TaskPublic:
    return TaskPublic.model_validate(
        task,
        update={
            "model": model.name if model else "",
            "version": model.version if model else 0,
            "results": predictions.aligned_results(task) if with_results else None,
        },
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        200: {"model": TaskPublic, "description": "Finished within the wait asked for with `Prefer: wait=N`"},
        400: {"description": "A malformed multipart form or CSV file"},
        402: {"description": "The balance does not cover the accepted rows"},
        404: {"description": "Unknown model or version"},
        413: {"description": "Too many rows or bytes"},
        422: {"description": "No valid row, or a malformed request"},
    },
)
def create_prediction(
    request: Request,
    payload: PredictionInputDep,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    prefer: Annotated[
        str | None,
        Header(description="`wait=N`: answer 200 with the finished task if it finishes within N seconds (max 60)"),
    ] = None,
) -> Any:
    model = catalog.resolve(session, payload.model, payload.version)
    if payload.csv_text is not None:
        rows = predictions.prepare_csv(model, payload.csv_text, max_rows=settings.predict_max_rows)
    else:
        rows = predictions.prepare_rows(model, payload.rows or [], max_rows=settings.predict_max_rows)
    task = predictions.submit(session, user_id=user.id or 0, model=model, rows=rows, request_id=current_request_id())
    request.app.state.relay.wake()
    accepted = TaskAccepted.model_validate(task, update={"model": model.name, "version": model.version})
    wait = requested_wait(prefer)
    if wait is None:
        return accepted
    session.close()  # hold no transaction while waiting (SQLite would block the worker)
    finished = wait_for_finish(get_engine(request), user.id or 0, task.id, wait)
    if finished is None:
        return accepted
    return JSONResponse(
        status_code=200,
        content=json.loads(finished.model_dump_json()),
        headers={"Preference-Applied": f"wait={wait:g}"},
    )


MAX_PREFER_WAIT_SECONDS = 60.0
DEFAULT_PREFER_WAIT_SECONDS = 30.0
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


def wait_for_finish(engine: Any, user_id: int, task_id: str, seconds: float) -> TaskPublic | None:
    deadline = time.monotonic() + seconds
    delay = 0.01
    while True:
        with read_session(engine) as session:
            task = predictions.get_for_user(session, user_id=user_id, task_id=task_id)
            if task.status in FINISHED_STATUSES:
                return to_public(task, session.get(ModelVersion, task.model_version_id))
        if time.monotonic() + delay > deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


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
    task = predictions.get_for_user(session, user_id=user.id or 0, task_id=task_id)
    return to_public(task, session.get(ModelVersion, task.model_version_id))


_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _safe_cell(value: Any) -> Any:
    """Neutralises spreadsheet formula injection in text cells."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


@router.get(
    "/{task_id}/results.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, 404: {"description": "No such prediction"}, 409: {}},
)
def download_results(task_id: str, user: CurrentUser, session: ReadSessionDep) -> Response:
    task = predictions.get_for_user(session, user_id=user.id or 0, task_id=task_id)
    if task.status != TaskStatus.succeeded.value or task.results is None:
        raise Conflict(f"prediction {task_id} has no results yet (status {task.status})")
    model = session.get(ModelVersion, task.model_version_id)
    features = [f.name for f in catalog.features_of(model)] if model else list(task.input_rows[0])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", *features, "prediction"])
    for number, row, result in zip(task.row_numbers, task.input_rows, task.results, strict=False):
        writer.writerow([number, *(_safe_cell(row.get(f)) for f in features), _safe_cell(result)])
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="prediction-{task.id}.csv"'},
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
            task = predictions.get_for_user(session, user_id=user.id or 0, task_id=task_id)
            public = to_public(task, session.get(ModelVersion, task.model_version_id), with_results=False)
            return dict(json.loads(public.model_dump_json()))

    return await state_events(
        request, snapshot, event="status", changed_by=lambda state: state["status"], max_seconds=SSE_MAX_SECONDS
    )
