"""The events of a prediction (Server-Sent Events): its status, each time it changes."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api.deps import CurrentUser, get_engine
from app.api.routes.prediction_reads import to_public
from app.api.sse import state_events
from app.core.db import read_session
from app.models.catalog import ModelVersion
from app.services import predictions

router = APIRouter(prefix="/predictions", tags=["predictions"])

SSE_MAX_SECONDS = 600


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
