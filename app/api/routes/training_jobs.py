from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlmodel import Session, select

from app.api.deps import CurrentUser, RelayDep, SessionDep, SettingsDep, StoreDep, get_engine
from app.api.routes.common import Limit, Offset
from app.api.routes.webhooks import WebhookOfBody
from app.api.sse import state_events
from app.core.db import read_session
from app.core.errors import Conflict
from app.models.dataset import Dataset
from app.models.task import TaskStatus
from app.models.training import (
    RetrainRequest,
    TrainingJob,
    TrainingJobCreate,
    TrainingJobPublic,
    TrainingReport,
    TrainingShard,
    TrainingShardPublic,
)
from app.services import training

router = APIRouter(prefix="/training-jobs", tags=["training studio"])

SSE_MAX_SECONDS = 3600
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such training job"}}


def to_public(session: Session, job: TrainingJob) -> TrainingJobPublic:
    shards = []
    if job.shards > 1:
        rows = session.exec(
            select(TrainingShard).where(TrainingShard.job_id == job.id).order_by(TrainingShard.index)  # type: ignore[arg-type]
        ).all()
        shards = [TrainingShardPublic.model_validate(s) for s in rows]
    return TrainingJobPublic.model_validate(job, update={"deleted": job.deleted_at is not None, "shard_status": shards})


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TrainingJobPublic,
    responses={
        402: {"description": "The balance does not cover the training"},
        404: {"description": "Unknown dataset"},
        422: {"description": "Unknown algorithm, bad hyperparameters or target"},
    },
)
def create_training_job(
    body: TrainingJobCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    webhook: WebhookOfBody,
    relay: RelayDep,
) -> TrainingJobPublic:
    """Also takes ``webhook`` and ``webhook_events``, as a prediction does."""
    job = training.submit(session, settings, user_id=user.id or 0, request=body, webhook=webhook)
    relay.wake()
    return to_public(session, job)


@router.get("", response_model=list[TrainingJobPublic])
def list_training_jobs(
    user: CurrentUser,
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
    status: Annotated[TaskStatus | None, Query(description="Only jobs with this status")] = None,
    include_deleted: Annotated[bool, Query(description="Also list soft-deleted jobs")] = False,
) -> list[TrainingJobPublic]:
    jobs = training.list_for_user(
        session, user_id=user.id or 0, status=status, include_deleted=include_deleted, limit=limit, offset=offset
    )
    return [to_public(session, j) for j in jobs]


@router.get("/{job_id}", response_model=TrainingJobPublic, responses=NOT_FOUND)
def read_training_job(job_id: str, user: CurrentUser, session: SessionDep) -> TrainingJobPublic:
    return to_public(session, training.get_for_user(session, user_id=user.id or 0, job_id=job_id))


def _succeeded(session: Session, user_id: int, job_id: str) -> TrainingJob:
    job = training.get_for_user(session, user_id=user_id, job_id=job_id)
    if job.status != TaskStatus.succeeded.value:
        raise Conflict(f"training job {job_id} has no model yet (status {job.status})")
    return job


def report_of(job: TrainingJob) -> TrainingReport:
    report: dict[str, Any] = job.report or {}
    return TrainingReport(
        job_id=job.id,
        algorithm=job.algorithm,
        task=job.task,
        target=job.target,
        dataset_id=job.dataset_id,
        dataset_version=job.dataset_version,
        hyperparameters=job.hyperparameters,
        metrics=job.metrics or {},
        features=job.features or [],
        classes=report.get("classes"),
        confusion_matrix=report.get("confusion_matrix"),
        feature_importance=report.get("feature_importance", {}),
        rows=report.get("rows", {}),
        durations={**report.get("durations", {}), "total_seconds": job.duration_seconds or 0.0},
    )


@router.get("/{job_id}/report", response_model=TrainingReport, responses={**NOT_FOUND, 409: {}})
def read_report(job_id: str, user: CurrentUser, session: SessionDep) -> TrainingReport:
    return report_of(_succeeded(session, user.id or 0, job_id))


@router.get(
    "/{job_id}/report.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}, **NOT_FOUND, 409: {}},
)
def download_report(job_id: str, user: CurrentUser, session: SessionDep) -> Response:
    report = report_of(_succeeded(session, user.id or 0, job_id))
    dataset = session.get(Dataset, report.dataset_id) if report.dataset_id else None
    named = dataset.name if dataset is not None and dataset.user_id == user.id else None
    return Response(
        training.report_pdf({**report.model_dump(), "dataset_name": named}),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="training-report-{job_id}.pdf"'},
    )


@router.get(
    "/{job_id}/artifact",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **NOT_FOUND, 409: {}},
)
def download_artifact(job_id: str, user: CurrentUser, session: SessionDep, store: StoreDep) -> FileResponse:
    job = _succeeded(session, user.id or 0, job_id)
    ref = training.artifact_ref(job)
    if ref is None:
        raise Conflict(f"training job {job_id} has no model file")
    path = store.fetch(ref)
    return FileResponse(path, media_type="application/octet-stream", filename=f"model-{job_id}.skops")


@router.post(
    "/{job_id}/retrain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TrainingJobPublic,
    responses={**NOT_FOUND, 402: {}, 422: {}},
)
def retrain_job(
    job_id: str,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    relay: RelayDep,
    body: RetrainRequest | None = None,
) -> TrainingJobPublic:
    job = training.get_for_user(session, user_id=user.id or 0, job_id=job_id)
    body = body or RetrainRequest()
    new = training.retrain(
        session,
        settings,
        user_id=user.id or 0,
        job=job,
        dataset_id=body.dataset_id,
        hyperparameters=body.hyperparameters,
    )
    relay.wake()
    return to_public(session, new)


@router.post("/{job_id}/restore", response_model=TrainingJobPublic, responses=NOT_FOUND)
def restore_job(job_id: str, user: CurrentUser, session: SessionDep) -> TrainingJobPublic:
    job = training.get_for_user(session, user_id=user.id or 0, job_id=job_id)
    return to_public(session, training.restore(session, job))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NOT_FOUND, 422: {}})
def delete_job(
    job_id: str,
    user: CurrentUser,
    session: SessionDep,
    store: StoreDep,
    hard: Annotated[bool, Query(description="Remove the job and its model file from the store for good")] = False,
) -> None:
    job = training.get_for_user(session, user_id=user.id or 0, job_id=job_id)
    if hard:
        training.hard_delete(session, store, job)
    else:
        training.soft_delete(session, job)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **NOT_FOUND},
)
async def training_events(job_id: str, request: Request, user: CurrentUser) -> StreamingResponse:
    """Server-Sent Events: a ``progress`` event whenever the status, stage or progress changes."""
    engine = get_engine(request)

    def snapshot() -> dict[str, Any]:
        with read_session(engine) as session:
            job = training.get_for_user(session, user_id=user.id or 0, job_id=job_id)
            return dict(json.loads(to_public(session, job).model_dump_json()))

    def key(state: dict[str, Any]) -> tuple[Any, ...]:
        return (
            state["status"],
            state["stage"],
            state["progress"],
            tuple(shard["status"] for shard in state["shard_status"]),
        )

    return await state_events(request, snapshot, event="progress", changed_by=key, max_seconds=SSE_MAX_SECONDS)
