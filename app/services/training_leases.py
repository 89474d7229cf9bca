"""The worker's side of a training job: take it under a lease, renew the lease, report progress, complete
(settle the charge) or fail (refund it), exactly once.

Status changes are conditional updates, so a redelivered message for a finished job does nothing, and only the
holder of a job's lease may complete it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, select

from app.core.config import Settings
from app.core.errors import Unprocessable
from app.models.base import utcnow
from app.models.dataset import DatasetVersion
from app.models.task import OPEN_STATUSES, TaskStatus
from app.models.training import TrainingJob, TrainingShard
from app.services import compiling, guarded, ledger, webhooks
from app.store.base import ArtifactRef

if TYPE_CHECKING:
    from app.runtime.evaluation import TrainResult  # scikit-learn and pandas: only the worker imports them

# How long a worker holds a job, a shard or a merge when no lease is given (the settings give one): it renews the
# lease while it works, so only a dead worker's lease runs out, and then another worker may take the work over.
LEASE_SECONDS = 30.0
# Takes beyond task_max_attempts a job, shard or merge may have (after its workers died, which the broker's retry
# count never sees) before it is failed and refunded instead of run again.
CRASH_ALLOWANCE = 5
_jobs: sa.Table = TrainingJob.__table__  # type: ignore[attr-defined]
_shards: sa.Table = TrainingShard.__table__  # type: ignore[attr-defined]


def max_takes(settings: Settings) -> int:
    """How many times a job, a shard or a merge is taken before it is failed and refunded instead: the broker's
    retries and as many takes again after workers died on it (which the broker's count never sees)."""
    return settings.task_max_attempts + CRASH_ALLOWANCE


def takeable(table: sa.Table, now: datetime, worker: str) -> sa.ColumnElement[bool]:
    """Queued, or running under a lease that has run out (its worker died) or that ``worker`` holds itself (its
    message is retried after an error): ``worker`` may take it."""
    return sa.or_(
        table.c.status == TaskStatus.queued.value,
        sa.and_(
            table.c.status == TaskStatus.running.value,
            sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now, table.c.lease_owner == worker[:128]),
        ),
    )


def start(
    session: Session,
    job_id: str,
    *,
    worker: str = "worker",
    lease_seconds: float = LEASE_SECONDS,
    max_takes: int | None = None,
) -> TrainingJob | None:
    """Takes a job for ``worker`` under a lease and counts the take. None when it is unknown, finished, or held by
    another worker whose lease still runs (a duplicate message: the holder finishes it, or its lease runs out and
    the sweep publishes it again).

    A take beyond ``max_takes`` (its workers died on it again and again) fails and refunds the job instead, in the
    take's own transaction; the job is returned failed.
    """
    now = utcnow()
    running = dict(
        status=TaskStatus.running.value,
        attempts=_jobs.c.attempts + 1,
        progress=5,
        stage="loading data",
        lease_owner=worker[:128],
        lease_until=now + timedelta(seconds=lease_seconds),
        started_at=sa.func.coalesce(_jobs.c.started_at, now),
        updated_at=now,
    )
    if not guarded.changed(session, _jobs, job_id, running, guards=[takeable(_jobs, now, worker)]):
        session.commit()
        return None
    if max_takes is not None and (takes := attempts_of(session, _jobs, job_id)) > max_takes:
        fail_uncommitted(session, job_id=job_id, reason=f"the job stopped its worker {takes - 1} times")
    else:
        webhooks.record_events(session.connection(), [job_id], webhooks.STARTED)
    session.commit()
    return session.get(TrainingJob, job_id, populate_existing=True)


def attempts_of(session: Session, table: sa.Table, key: str) -> int:
    return int(session.execute(sa.select(table.c.attempts).where(table.c.id == key)).scalar_one())


def renew(session: Session, *, job_id: str, worker: str, lease_seconds: float, shard_id: str | None = None) -> bool:
    """Extends ``worker``'s lease on a running job (or shard, or merge). False when the worker no longer holds it."""
    now = utcnow()
    table, key = (_shards, shard_id) if shard_id is not None else (_jobs, job_id)
    values: dict[str, Any] = {"lease_until": now + timedelta(seconds=lease_seconds), "updated_at": now}
    held = [table.c.lease_owner == worker[:128]]
    renewed = guarded.changed(session, table, key, values, statuses=TaskStatus.running.value, guards=held)
    session.commit()
    return renewed


def progress(session: Session, job_id: str, percent: int, stage: str) -> None:
    session.execute(
        sa.update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.status == TaskStatus.running.value)
        .values(progress=percent, stage=stage, updated_at=utcnow())
    )
    session.commit()


def dataset_version_of(session: Session, job: TrainingJob) -> DatasetVersion:
    if job.dataset_id is None:
        raise Unprocessable("the dataset of this job was deleted")
    version = session.exec(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == job.dataset_id, DatasetVersion.version == job.dataset_version
        )
    ).first()
    if version is None:
        raise Unprocessable(f"version {job.dataset_version} of dataset {job.dataset_id} no longer exists")
    return version


def complete(
    session: Session,
    *,
    job_id: str,
    result: TrainResult,
    artifact: ArtifactRef,
    duration_seconds: float,
    compiled: compiling.Compiled | None = None,
    worker: str | None = None,
) -> bool:
    """Stores metrics, report and artifact and settles the charge (all to the platform), exactly once.

    The status change is conditional and commits with the settlement's ledger entries, so a job is settled once
    however many workers finish it. Given ``worker``, only the holder of the job's lease may complete it: a worker
    whose lease ran out and was taken over (it was thought dead) finds its result refused.
    """
    now = utcnow()
    held = [] if worker is None else [_jobs.c.lease_owner == worker[:128]]
    succeeded = dict(
        lease_until=None,
        status=TaskStatus.succeeded.value,
        progress=100,
        stage="done",
        metrics=result.metrics,
        report=result.report,
        features=[f.model_dump(exclude_none=True) for f in result.features],
        artifact_md5=artifact.md5,
        artifact_size=artifact.size,
        artifact_path=artifact.path,
        **(compiled.columns() if compiled is not None else {}),
        duration_seconds=duration_seconds,
        error=None,
        finished_at=now,
        updated_at=now,
    )
    if not guarded.change_status(session, _jobs, job_id, succeeded, statuses=OPEN_STATUSES, guards=held):
        return False
    ledger.settle(session, task_id=job_id, author_user_id=None, author_share_percent=0)
    webhooks.record_events(session.connection(), [job_id], webhooks.COMPLETED)
    session.commit()
    return True


def fail(session: Session, *, job_id: str, reason: str, shard_id: str | None = None) -> bool:
    """Marks a job failed and refunds its charge, in one transaction, exactly once.

    For a sharded job, ``shard_id`` (the shard that failed) gets ``reason`` and every other unfinished shard is
    closed as failed too, so a shard still training elsewhere cannot succeed afterwards.
    """
    if not fail_uncommitted(session, job_id=job_id, reason=reason, shard_id=shard_id):
        return False
    session.commit()
    return True


def fail_uncommitted(session: Session, *, job_id: str, reason: str, shard_id: str | None = None) -> bool:
    """:func:`fail` in the caller's transaction (rolled back and False when the job had already finished)."""
    now = utcnow()
    failed = dict(
        status=TaskStatus.failed.value,
        stage="failed",
        error=reason[:2000],
        lease_until=None,
        finished_at=now,
        updated_at=now,
    )
    if not guarded.change_status(session, _jobs, job_id, failed, statuses=OPEN_STATUSES):
        return False
    if shard_id is not None:
        session.execute(
            sa.update(_shards)
            .where(_shards.c.id == shard_id, _shards.c.job_id == job_id, _shards.c.status.in_(OPEN_STATUSES))
            .values(
                status=TaskStatus.failed.value, error=reason[:2000], lease_until=None, finished_at=now, updated_at=now
            )
        )
    session.execute(
        sa.update(_shards)
        .where(_shards.c.job_id == job_id, _shards.c.status.in_(OPEN_STATUSES))
        .values(
            status=TaskStatus.failed.value,
            error="the job failed: another shard failed",
            lease_until=None,
            finished_at=now,
            updated_at=now,
        )
    )
    ledger.refund(session, task_id=job_id, memo="training failed")
    webhooks.record_events(session.connection(), [job_id], webhooks.COMPLETED)
    return True
