"""Training jobs: submit (charge + job + outbox in one transaction), run on a worker, settle or refund.

A job's id is the ledger task id of its charge. The platform earns the whole
fee of a succeeded job; a failed job is refunded exactly once. Status changes
are conditional updates, so a redelivered message for a finished job does
nothing.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.core.config import Settings
from app.core.errors import NotFound, Unprocessable
from app.models.base import utcnow
from app.models.catalog import ModelTask
from app.models.task import OPEN_STATUSES, OutboxMessage, TaskStatus
from app.models.training import Dataset, DatasetVersion, TrainingJob, TrainingJobCreate, TrainingShard
from app.queue.base import TRAIN_QUEUE
from app.runtime.algorithms import ALGORITHMS, checked_hyperparameters
from app.runtime.algorithms import Algorithm as Algorithm  # for the routes, which do not import the runtime
from app.services import compiling, datasets, ledger, webhooks
from app.store import gc
from app.store.base import ArtifactRef, ArtifactStore

if TYPE_CHECKING:
    from app.runtime.training import TrainResult  # scikit-learn and pandas: only the worker imports them

MAX_SHARDS = 8
MERGING = "merging shards"
# How long a worker holds a job, a shard or a merge when no lease is given (the settings give one): it renews the
# lease while it works, so only a dead worker's lease runs out, and then another worker may take the work over.
LEASE_SECONDS = 30.0
# Takes beyond task_max_attempts a job, shard or merge may have (after its workers died, which the broker's retry
# count never sees) before it is failed and refunded instead of run again.
CRASH_ALLOWANCE = 5
_jobs: sa.Table = TrainingJob.__table__  # type: ignore[attr-defined]
_shards: sa.Table = TrainingShard.__table__  # type: ignore[attr-defined]


def cost_of(rows: int, settings: Settings) -> int:
    """Credits for training on ``rows`` rows: the price per started 1,000 rows."""
    return max(1, math.ceil(rows / 1000)) * settings.training_price_per_1000_rows


def _checked_request(
    session: Session, *, user_id: int, request: TrainingJobCreate
) -> tuple[Dataset, DatasetVersion, str, dict[str, Any], str]:
    dataset = datasets.get_for_user(session, user_id=user_id, dataset_id=request.dataset_id, include_deleted=False)
    version = datasets.version_of(session, dataset)
    spec = ALGORITHMS.get(request.algorithm)
    if spec is None:
        raise Unprocessable(f"unknown algorithm {request.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    hyperparameters = checked_hyperparameters(spec, request.hyperparameters)
    target = request.target or dataset.target
    if target not in version.columns:
        raise Unprocessable(
            f"the target column {target!r} is not in dataset {dataset.id} (columns: {', '.join(version.columns)})"
        )
    if len(version.columns) < 2:
        raise Unprocessable("the dataset has no feature column besides the target")
    dtype = version.dtypes.get(target)
    if spec.task == "regression" and dtype not in ("integer", "number"):
        raise Unprocessable(
            f"{spec.name} is a regression algorithm but the target {target!r} holds {dtype} values; "
            "choose a classification algorithm"
        )
    if (
        spec.task == "classification"
        and dtype == "number"
        and target == dataset.target
        and version.task == "regression"
    ):
        raise Unprocessable(
            f"{spec.name} is a classification algorithm but the target {target!r} holds continuous numbers; "
            "choose a regression algorithm"
        )
    if request.shards > 1 and spec.merge is None:
        mergeable = ", ".join(a.name for a in ALGORITHMS.values() if a.merge)
        raise Unprocessable(
            f"{spec.name} cannot be trained in shards: its shards cannot be merged; algorithms that can: {mergeable}"
        )
    return dataset, version, target, hyperparameters, spec.task


def submit(
    session: Session,
    settings: Settings,
    *,
    user_id: int,
    request: TrainingJobCreate,
    retrain_of: str | None = None,
    webhook: webhooks.Target | None = None,
) -> TrainingJob:
    """Checks the request (404/422 before any money moves), then charges and queues the job in one transaction."""
    dataset, version, target, hyperparameters, task = _checked_request(session, user_id=user_id, request=request)
    job = TrainingJob(
        id=str(uuid.uuid4()),
        user_id=user_id,
        dataset_id=dataset.id,
        dataset_version=version.version,
        retrain_of=retrain_of,
        algorithm=request.algorithm,
        task=task,
        target=target,
        hyperparameters=hyperparameters,
        test_size=request.test_size,
        random_state=request.random_state,
        shards=request.shards,
        rows=version.rows,
        cost=cost_of(version.rows, settings),
    )
    session.add(job)
    session.flush()
    ledger.charge(
        session, user_id=user_id, amount=job.cost, task_id=job.id, memo=f"training {job.algorithm} on {dataset.name}"
    )
    if job.shards == 1:
        session.add(OutboxMessage(task_id=job.id, queue=TRAIN_QUEUE, payload={"task_id": job.id}))
    else:
        # One message per shard, so different workers take them; all in the transaction of the job and its charge.
        for index in range(job.shards):
            shard = TrainingShard(id=str(uuid.uuid4()), job_id=job.id, index=index)
            session.add(shard)
            session.add(OutboxMessage(task_id=shard.id, queue=TRAIN_QUEUE, payload=shard_message(shard)))
    webhooks.subscribe(session, task_id=job.id, kind=webhooks.TRAINING_JOB, user_id=user_id, target=webhook)
    session.commit()
    return job


def shard_message(shard: TrainingShard) -> dict[str, Any]:
    return {"task_id": shard.job_id, "shard_id": shard.id}


def retrain(
    session: Session,
    settings: Settings,
    *,
    user_id: int,
    job: TrainingJob,
    dataset_id: int | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> TrainingJob:
    """A new job like ``job`` on the current version of the same (or another) dataset."""
    dataset_id = dataset_id or job.dataset_id
    if dataset_id is None:
        raise Unprocessable("the dataset of this job was deleted; name another dataset_id to retrain on")
    request = TrainingJobCreate(
        dataset_id=dataset_id,
        algorithm=job.algorithm,
        hyperparameters=job.hyperparameters if hyperparameters is None else hyperparameters,
        target=job.target,
        test_size=job.test_size,
        random_state=job.random_state,
        shards=job.shards,
    )
    return submit(session, settings, user_id=user_id, request=request, retrain_of=job.id)


def get_for_user(session: Session, *, user_id: int, job_id: str, include_deleted: bool = True) -> TrainingJob:
    job = session.get(TrainingJob, job_id) if len(job_id) <= 36 else None
    if job is None or job.user_id != user_id or (job.deleted_at is not None and not include_deleted):
        # Another user's job is answered exactly like a missing one.
        raise NotFound(f"training job {job_id} not found")
    return job


def list_for_user(
    session: Session,
    *,
    user_id: int,
    status: TaskStatus | None,
    include_deleted: bool,
    limit: int,
    offset: int,
) -> Sequence[TrainingJob]:
    query = select(TrainingJob).where(TrainingJob.user_id == user_id)
    if status is not None:
        query = query.where(TrainingJob.status == status.value)
    if not include_deleted:
        query = query.where(col(TrainingJob.deleted_at).is_(None))
    return session.exec(
        query.order_by(col(TrainingJob.created_at).desc(), col(TrainingJob.id)).limit(limit).offset(offset)
    ).all()


def artifact_ref(job: TrainingJob) -> ArtifactRef | None:
    if job.artifact_md5 is None or job.artifact_size is None or job.artifact_path is None:
        return None
    return ArtifactRef(md5=job.artifact_md5, size=job.artifact_size, path=job.artifact_path)


def model_task(job: TrainingJob) -> ModelTask:
    return ModelTask(job.task)


# -- the worker's side ----------------------------------------------------------------------------------


def _takeable(table: sa.Table, now: datetime, worker: str) -> sa.ColumnElement[bool]:
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
    updated = session.execute(
        sa.update(_jobs)
        .where(_jobs.c.id == job_id, _takeable(_jobs, now, worker))
        .values(
            status=TaskStatus.running.value,
            attempts=_jobs.c.attempts + 1,
            progress=5,
            stage="loading data",
            lease_owner=worker[:128],
            lease_until=now + timedelta(seconds=lease_seconds),
            started_at=sa.func.coalesce(_jobs.c.started_at, now),
            updated_at=now,
        )
    )
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        session.commit()
        return None
    if max_takes is not None and (takes := _attempts(session, _jobs, job_id)) > max_takes:
        _fail_uncommitted(session, job_id=job_id, reason=f"the job stopped its worker {takes - 1} times")
    else:
        webhooks.record_events(session.connection(), [job_id], webhooks.STARTED)
    session.commit()
    return session.get(TrainingJob, job_id, populate_existing=True)


def _attempts(session: Session, table: sa.Table, key: str) -> int:
    return int(session.execute(sa.select(table.c.attempts).where(table.c.id == key)).scalar_one())


def renew(session: Session, *, job_id: str, worker: str, lease_seconds: float, shard_id: str | None = None) -> bool:
    """Extends ``worker``'s lease on a running job (or shard, or merge). False when the worker no longer holds it."""
    now = utcnow()
    table, key = (_shards, shard_id) if shard_id is not None else (_jobs, job_id)
    values: dict[str, Any] = {"lease_until": now + timedelta(seconds=lease_seconds), "updated_at": now}
    updated = session.execute(
        sa.update(table)
        .where(table.c.id == key, table.c.status == TaskStatus.running.value, table.c.lease_owner == worker[:128])
        .values(**values)
    )
    session.commit()
    return updated.rowcount == 1  # type: ignore[attr-defined,no-any-return]


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
    guard = [_jobs.c.id == job_id, _jobs.c.status.in_(OPEN_STATUSES)]
    if worker is not None:
        guard.append(_jobs.c.lease_owner == worker[:128])
    updated = session.execute(
        sa.update(_jobs)
        .where(*guard)
        .values(
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
    )
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
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
    if not _fail_uncommitted(session, job_id=job_id, reason=reason, shard_id=shard_id):
        return False
    session.commit()
    return True


def _fail_uncommitted(session: Session, *, job_id: str, reason: str, shard_id: str | None = None) -> bool:
    """:func:`fail` in the caller's transaction (rolled back and False when the job had already finished)."""
    now = utcnow()
    updated = session.execute(
        sa.update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.status.in_(OPEN_STATUSES))
        .values(
            status=TaskStatus.failed.value,
            stage="failed",
            error=reason[:2000],
            lease_until=None,
            finished_at=now,
            updated_at=now,
        )
    )
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
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


def open_job_ids(session: Session) -> list[str]:
    return list(session.exec(select(TrainingJob.id).where(col(TrainingJob.status).in_(OPEN_STATUSES))).all())


def open_job_messages(session: Session) -> list[tuple[str, dict[str, Any]]]:
    """(message id, payload) of every unfinished job: one per job, or one per shard that has not failed."""
    jobs = session.exec(select(TrainingJob).where(col(TrainingJob.status).in_(OPEN_STATUSES))).all()
    sharded = [j.id for j in jobs if j.shards > 1]
    shards = (
        session.exec(
            select(TrainingShard).where(
                col(TrainingShard.job_id).in_(sharded), TrainingShard.status != TaskStatus.failed.value
            )
        ).all()
        if sharded
        else []
    )
    messages = [(j.id, {"task_id": j.id}) for j in jobs if j.shards == 1]
    return messages + [(s.id, shard_message(s)) for s in shards]


# -- shards of a sharded job ------------------------------------------------------------------------------


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
    taken = session.execute(
        sa.update(_shards)
        .where(_shards.c.id == shard_id, _shards.c.job_id == job_id, _takeable(_shards, now, worker))
        .values(
            status=TaskStatus.running.value,
            attempts=_shards.c.attempts + 1,
            worker=worker[:128],
            lease_owner=worker[:128],
            lease_until=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
    )
    gave_up = False
    takes = _attempts(session, _shards, shard_id) if taken.rowcount == 1 else 0  # type: ignore[attr-defined]
    if max_takes is not None and takes > max_takes:
        reason = f"a shard stopped its worker {takes - 1} times"
        gave_up = _fail_uncommitted(session, job_id=job_id, reason=reason, shard_id=shard_id)
    session.commit()
    shard = session.get(TrainingShard, shard_id)
    if shard is not None and gave_up:
        return ShardTake(shard=shard, taken=False, gave_up=True)
    if shard is None or shard.job_id != job_id or shard.status == TaskStatus.failed.value:
        return None
    session.refresh(shard)
    return ShardTake(shard=shard, taken=taken.rowcount == 1)  # type: ignore[attr-defined]


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
    guard = [_shards.c.id == shard_id, _shards.c.status == TaskStatus.running.value]
    if worker is not None:
        guard.append(_shards.c.lease_owner == worker[:128])
    updated = session.execute(
        sa.update(_shards)
        .where(*guard)
        .values(
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
    )
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
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
    updated = session.execute(
        sa.update(_jobs)
        .where(
            _jobs.c.id == job_id,
            _jobs.c.status == TaskStatus.running.value,
            sa.or_(_jobs.c.stage != MERGING, _jobs.c.lease_until.is_(None), _jobs.c.lease_until < now),
        )
        .values(
            stage=MERGING,
            progress=90,
            attempts=_jobs.c.attempts + 1,
            lease_owner=worker[:128],
            lease_until=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
    )
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        session.commit()
        return None
    if max_takes is not None and (claims := _attempts(session, _jobs, job_id) - 1) > max_takes:
        _fail_uncommitted(
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


def max_takes(settings: Settings) -> int:
    """How many times a job, a shard or a merge is taken before it is failed and refunded instead: the broker's
    retries and as many takes again after workers died on it (which the broker's count never sees)."""
    return settings.task_max_attempts + CRASH_ALLOWANCE


# -- lifecycle ------------------------------------------------------------------------------------------


def soft_delete(session: Session, job: TrainingJob) -> TrainingJob:
    if job.deleted_at is None:
        job.deleted_at = utcnow()
        session.add(job)
        session.commit()
    return job


def restore(session: Session, job: TrainingJob) -> TrainingJob:
    job.deleted_at = None
    session.add(job)
    session.commit()
    return job


def files_of(session: Session, job_id: str) -> list[ArtifactRef]:
    """Every file a job put in the store: its model (and ONNX copy) and its shards' models."""
    job = session.get(TrainingJob, job_id)
    refs: list[ArtifactRef] = []
    if job is not None:
        compiled = compiling.of_job(job)
        refs += [r for r in (artifact_ref(job), compiled.onnx if compiled else None) if r is not None]
    refs += [r for s in shards_of(session, job_id) if (r := shard_ref(s)) is not None]
    return refs


def discard_files(session: Session, store: ArtifactStore, job_id: str, *, also: Sequence[ArtifactRef] = ()) -> int:
    """Removes the files of a failed job (and ``also``: files a worker stored for it but could not record) that no
    dataset, model or other job uses; returns how many. Best effort: what cannot be removed now is left to the
    store sweep.

    Does nothing while the job has not failed: a file a worker could not record because another worker took its
    work over may be byte for byte the one the other worker is storing under the same md5 right now; the sweep,
    which waits for a grace period, takes it if it stays unused.
    """
    job = session.get(TrainingJob, job_id)
    if job is not None and job.status != TaskStatus.failed.value:
        session.rollback()
        return 0
    return len(gc.discard(session, store, [*files_of(session, job_id), *also]))


def hard_delete(session: Session, store: ArtifactStore, job: TrainingJob) -> None:
    """Deletes a finished job, its shards and its files from the store (unless a published model, a dataset or
    another job uses a file).

    The ledger keeps its entries: they are history, not part of the job.
    """
    if job.status in OPEN_STATUSES:
        raise Unprocessable(f"training job {job.id} is still {job.status}; delete it when it has finished")
    refs = files_of(session, job.id)
    for shard in session.exec(select(TrainingShard).where(TrainingShard.job_id == job.id)).all():
        session.delete(shard)
    session.flush()
    session.delete(job)
    session.commit()
    gc.discard(session, store, refs)


# -- the algorithm registry and reports, for the routes ----------------------------------------------------


def algorithms() -> list[Algorithm]:
    return list(ALGORITHMS.values())


def algorithm(name: str) -> Algorithm:
    found = ALGORITHMS.get(name)
    if found is None:
        raise NotFound(f"algorithm {name!r} not found; choose one of {', '.join(ALGORITHMS)}")
    return found


def report_pdf(report: dict[str, Any]) -> bytes:
    """The training report as a PDF (matplotlib is imported here, on the first report)."""
    from app.runtime.report import render_pdf

    return render_pdf(report)
