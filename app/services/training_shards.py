"""Shards of a sharded training job: each taken under its own lease, then merged by exactly one finalizer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.models.base import utcnow
from app.models.task import TaskStatus
from app.models.training import TrainingJob, TrainingShard
from app.services import guarded, webhooks
from app.services.training_leases import LEASE_SECONDS, attempts_of, fail_uncommitted, takeable
from app.store.base import ArtifactRef

MERGING = "merging shards"
_jobs: sa.Table = TrainingJob.__table__  # type: ignore[attr-defined]
_shards: sa.Table = TrainingShard.__table__  # type: ignore[attr-defined]


def shard_message(shard: TrainingShard) -> dict[str, Any]:
    return {"task_id": shard.job_id, "shard_id": shard.id}


@dataclass(frozen=True)
class ShardTake:
    """A shard message's view of its shard: ``taken`` when this worker now trains it (``shard.attempts`` counts
    the takes); else the shard is trained elsewhere, or it has succeeded and only the merge may be left."""

    shard: TrainingShard
    taken: bool
    gave_up: bool = False


def start_shard(
    session: Session,
    *,
    job_id: str,
    shard_id: str,
    worker: str,
    lease_seconds: float = LEASE_SECONDS,
    max_takes: int | None = None,
) -> ShardTake | None:
    """Takes a shard for ``worker`` under a lease (and marks its job running, on the first shard).

    None when the job is finished or the shard unknown or failed. A shard that already succeeded, or that another
    worker trains under a live lease, is returned not taken, so a redelivered message can still see the job to its
    merge. A take beyond ``max_takes`` fails and refunds the job instead, in the take's transaction (``gave_up``).
    """
    now = utcnow()
    session.execute(
        sa.update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.status == TaskStatus.queued.value)
        .values(
            status=TaskStatus.running.value,
            attempts=_jobs.c.attempts + 1,
            progress=5,
            stage="training shards",
            started_at=sa.func.coalesce(_jobs.c.started_at, now),
            updated_at=now,
        )
    )
    job_open = session.execute(
        sa.select(_jobs.c.id).where(_jobs.c.id == job_id, _jobs.c.status == TaskStatus.running.value)
    ).first()
    if job_open is None:
        session.rollback()
        return None
    webhooks.record_events(session.connection(), [job_id], webhooks.STARTED)
    running = dict(
        status=TaskStatus.running.value,
        attempts=_shards.c.attempts + 1,
        worker=worker[:128],
        lease_owner=worker[:128],
        lease_until=now + timedelta(seconds=lease_seconds),
        updated_at=now,
    )
    of_job = [_shards.c.job_id == job_id, takeable(_shards, now, worker)]
    taken = guarded.changed(session, _shards, shard_id, running, guards=of_job)
    gave_up = False
    takes = attempts_of(session, _shards, shard_id) if taken else 0
    if max_takes is not None and takes > max_takes:
        reason = f"a shard stopped its worker {takes - 1} times"
        gave_up = fail_uncommitted(session, job_id=job_id, reason=reason, shard_id=shard_id)
    session.commit()
    shard = session.get(TrainingShard, shard_id)
    if shard is not None and gave_up:
        return ShardTake(shard=shard, taken=False, gave_up=True)
    if shard is None or shard.job_id != job_id or shard.status == TaskStatus.failed.value:
        return None
    session.refresh(shard)
    return ShardTake(shard=shard, taken=taken)


def complete_shard(
    session: Session,
    *,
    shard_id: str,
    rows: int,
    artifact: ArtifactRef,
    duration_seconds: float,
    worker: str | None = None,
) -> bool:
    """Records a trained shard and moves its job's progress on. False when the shard was already closed (or,
    given ``worker``, taken over by another worker after this one's lease ran out)."""
    now = utcnow()
    held = [] if worker is None else [_shards.c.lease_owner == worker[:128]]
    succeeded = dict(
        status=TaskStatus.succeeded.value,
        rows=rows,
        artifact_md5=artifact.md5,
        artifact_size=artifact.size,
        artifact_path=artifact.path,
        duration_seconds=duration_seconds,
        error=None,
        lease_until=None,
        finished_at=now,
        updated_at=now,
    )
    if not guarded.change_status(session, _shards, shard_id, succeeded, statuses=TaskStatus.running.value, guards=held):
        return False
    session.commit()
    return True


def shards_of(session: Session, job_id: str) -> list[TrainingShard]:
    return list(
        session.exec(select(TrainingShard).where(TrainingShard.job_id == job_id).order_by(col(TrainingShard.index)))
    )


def shard_ref(shard: TrainingShard) -> ArtifactRef | None:
    if shard.artifact_md5 is None or shard.artifact_size is None or shard.artifact_path is None:
        return None
    return ArtifactRef(md5=shard.artifact_md5, size=shard.artifact_size, path=shard.artifact_path)


def note_shard_progress(session: Session, job_id: str) -> None:
    """The job's progress and stage from its shards: 10 % to 85 % as they finish."""
    shards = shards_of(session, job_id)
    done = sum(s.status == TaskStatus.succeeded.value for s in shards)
    session.execute(
        sa.update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.status == TaskStatus.running.value, _jobs.c.stage != MERGING)
        .values(
            progress=10 + 75 * done // max(len(shards), 1),
            stage=f"trained {done} of {len(shards)} shards",
            updated_at=utcnow(),
        )
    )
    session.commit()


def claim_merge(
    session: Session,
    job_id: str,
    *,
    worker: str = "worker",
    lease_seconds: float = LEASE_SECONDS,
    max_takes: int | None = None,
) -> TrainingJob | None:
    """The finalizer's guard: the job for exactly one caller once every shard has succeeded, else None.

    A conditional update on the job: only a running job whose merge nobody holds, or whose holder's lease ran out
    (it died mid-merge: a live finalizer renews its lease), can be claimed. Each claim counts in ``attempts`` (after
    the one take of the job by its first shard); a claim beyond ``max_takes`` fails and refunds the job instead, in
    the claim's transaction, and the job is returned failed.
    """
    if any(s.status != TaskStatus.succeeded.value for s in shards_of(session, job_id)):
        session.rollback()
        return None
    now = utcnow()
    merging = dict(
        stage=MERGING,
        progress=90,
        attempts=_jobs.c.attempts + 1,
        lease_owner=worker[:128],
        lease_until=now + timedelta(seconds=lease_seconds),
        updated_at=now,
    )
    unclaimed = sa.or_(_jobs.c.stage != MERGING, _jobs.c.lease_until.is_(None), _jobs.c.lease_until < now)
    if not guarded.changed(session, _jobs, job_id, merging, statuses=TaskStatus.running.value, guards=[unclaimed]):
        session.commit()
        return None
    if max_takes is not None and (claims := attempts_of(session, _jobs, job_id) - 1) > max_takes:
        fail_uncommitted(
            session, job_id=job_id, reason=f"the merge of its shards stopped its worker {claims - 1} times"
        )
    session.commit()
    return session.get(TrainingJob, job_id, populate_existing=True)


def release_merge(session: Session, job_id: str, *, worker: str = "worker") -> None:
    """Gives the merge back after an error, so the retried message can claim it again."""
    session.execute(
        sa.update(_jobs)
        .where(
            _jobs.c.id == job_id,
            _jobs.c.status == TaskStatus.running.value,
            _jobs.c.stage == MERGING,
            _jobs.c.lease_owner == worker[:128],
        )
        .values(stage="shards trained", lease_until=None, updated_at=utcnow())
    )
    session.commit()
