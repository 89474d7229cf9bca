"""Downloading the results of a prediction as JSON, CSV, Arrow or Parquet: by `format`, the Accept header or a
path per format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from app.api.deps import CurrentUser, ReadSessionDep
from app.services import result_writers, results

router = APIRouter(prefix="/predictions", tags=["predictions"])


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
    return StreamingResponse(result_writers.CHUNKS[fmt](table), media_type=results.MEDIA_TYPES[fmt], headers=headers)


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
