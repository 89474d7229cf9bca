"""Reading predictions: the list of the user's tasks and one task with its results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import CurrentUser, ReadSessionDep
from app.api.routes.common import Limit, Offset
from app.models.catalog import ModelVersion
from app.models.task import Task, TaskPublic, TaskStatus
from app.services import predictions
from app.services.dataplane import ServedModel

router = APIRouter(prefix="/predictions", tags=["predictions"])


def to_public(task: Task, model: ModelVersion | ServedModel | None, *, with_results: bool = True) -> TaskPublic:
    probabilities = predictions.aligned_probabilities(task) if with_results else None
    return TaskPublic.model_validate(
        task,
        update={
            "model": model.name if model else "",
            "version": model.version if model else 0,
            "results": predictions.aligned_results(task) if with_results else None,
            "classes": probabilities[0] if probabilities else None,
            "probabilities": probabilities[1] if probabilities else None,
        },
    )


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
