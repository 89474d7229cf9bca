from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminUser, SessionDep
from app.models.worker import WorkerPublic
from app.services import workers

router = APIRouter(prefix="/admin/workers", tags=["admin"])


@router.get("", response_model=list[WorkerPublic])
def list_workers(_: AdminUser, session: SessionDep) -> list[WorkerPublic]:
    """Every worker that has sent a heartbeat, most recently seen first."""
    return [WorkerPublic.model_validate(w) for w in workers.list_workers(session)]
