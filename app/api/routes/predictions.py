"""Submitting a prediction: JSON rows or a CSV or Parquet upload, charged and queued; `Prefer: wait=N` answers
with the finished task."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from app.api.deps import CurrentPrincipal, DataPlaneDep, SettingsDep, get_engine
from app.api.errors import describe_validation_errors
from app.api.routes.prediction_reads import to_public
from app.api.routes.webhooks import WEBHOOK_PROPERTIES, webhook_target
from app.core.config import Settings
from app.core.db import read_session
from app.core.errors import BadRequest, PayloadTooLarge, Unprocessable
from app.core.logging import current_request_id
from app.core.notify import Watch
from app.models.task import (
    FINISHED_STATUSES,
    PredictionRequest,
    RowErrorPublic,
    TaskAccepted,
    TaskPublic,
    TaskStatus,
)
from app.services import parquet_uploads, predictions, submissions, webhooks
from app.services.billing import Priced, check_price
from app.services.dataplane import ServedModel

router = APIRouter(prefix="/predictions", tags=["predictions"])


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
        probabilities: bool = False,
    ):
        self.model = model
        self.version = version
        self.rows = rows
        self.csv_text = csv_text
        self.parquet = parquet
        self.max_price_per_row = max_price_per_row
        self.webhook = webhook
        self.probabilities = probabilities


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
    return PredictionInput(
        parsed.model,
        parsed.version,
        rows=parsed.rows,
        max_price_per_row=cap,
        webhook=hook,
        probabilities=parsed.probabilities,
    )


async def _read_multipart(request: Request, settings: Settings) -> PredictionInput:
    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=settings.predict_max_bytes + 1)
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
    wants = _form_flag(form.get("probabilities"), "probabilities")
    events = ",".join(v for v in form.getlist("webhook_events") if isinstance(v, str))
    hook = webhook_target({"webhook": form.get("webhook"), "webhook_events": events or None}, settings)
    data = await upload.read(settings.predict_max_bytes + 1)
    parquet = parquet_uploads.is_parquet(upload.filename, upload.content_type, data)
    if len(data) > settings.predict_max_bytes:
        kind = "Parquet" if parquet else "CSV"
        raise PayloadTooLarge(f"the {kind} file is larger than {settings.predict_max_bytes} bytes")
    if not data.strip():
        raise BadRequest("file is empty")
    if parquet:
        # the footer alone: a corrupt file, too many rows or too much data is refused before the model is looked up
        await asyncio.to_thread(
            parquet_uploads.check_parquet,
            data,
            max_rows=settings.predict_max_rows,
            max_bytes=settings.predict_max_bytes,
        )
        return PredictionInput(
            model.strip(), version, parquet=data, max_price_per_row=cap, webhook=hook, probabilities=wants
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest("file must be utf-8 csv") from exc
    return PredictionInput(
        model.strip(), version, csv_text=text, max_price_per_row=cap, webhook=hook, probabilities=wants
    )


def _form_flag(value: Any, name: str) -> bool:
    """A form's true/false field: absent or empty is false."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise Unprocessable(f"{name} must be true or false")


def check_probabilities(model: ServedModel, asked: bool) -> None:
    """Unprocessable (422, nothing charged) when probabilities are asked of a model that has none."""
    if asked and model.task != "classification":
        raise Unprocessable(
            f"model {model.name!r} version {model.version} is a {model.task} model: only classifiers give class "
            "probabilities; send the request without 'probabilities'"
        )


PredictionInputDep = Annotated[PredictionInput, Depends(read_prediction_input)]

_MAX_PRICE_SCHEMA = {
    "type": "integer",
    "minimum": 1,
    "description": "The most you pay per row: a model (or its newest version) that costs more answers 409 and "
    "charges nothing",
}

_PROBABILITIES_SCHEMA = {
    "type": "boolean",
    "default": False,
    "description": "Also give each row's probability per class (classifiers only; the same price): `classes` and "
    "`probabilities` on the finished task, `probability_<class>` columns in the results",
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
                    "probabilities": _PROBABILITIES_SCHEMA,
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
        422: {"description": "No valid row, a malformed request, or probabilities asked of a regressor"},
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
    check_probabilities(model, payload.probabilities)
    rows = await _prepared(payload, model, settings.predict_max_rows)
    submission = submissions.Submission(
        user_id=principal.user_id,
        model=Priced(model.id, model.name, model.version, model.price_per_row, model.owner_id),
        features=model.features,
        rows=rows,
        request_id=current_request_id(),
        api_key_id=principal.api_key_id,
        webhook=payload.webhook,
        probabilities=payload.probabilities,
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
        return await asyncio.to_thread(parquet_uploads.prepare_parquet, features, payload.parquet, max_rows=max_rows)
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
