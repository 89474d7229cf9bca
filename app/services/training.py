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
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.core.config import Settings
from app.core.errors import Conflict, NotFound, Unprocessable
from app.models.base import utcnow
from app.models.catalog import ModelStatus, ModelTask, ModelVersion
from app.models.task import OPEN_STATUSES, OutboxMessage, TaskStatus
from app.models.training import Dataset, DatasetVersion, TrainingJob, TrainingJobCreate, TrainingShard
from app.queue.base import TRAIN_QUEUE
from app.runtime.algorithms import ALGORITHMS, checked_hyperparameters
from app.runtime.algorithms import Algorithm as Algorithm  # for the routes, which do not import the runtime
from app.runtime.schema import Feature
from app.services import catalog, compiling, datasets, ledger
from app.store.base import ArtifactRef, ArtifactStore

if TYPE_CHECKING:
    from app.runtime.training import TrainResult  # scikit-learn and pandas: only the worker imports them

MAX_SHARDS = 8
MERGING = "merging shards"
# How long a finalizer may hold the merge of a sharded job before another worker may take it over.
MERGE_LEASE_SECONDS = 600.0
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
    session: Session, settings: Settings, *, user_id: int, request: TrainingJobCreate, retrain_of: str | None = None
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


def start(session: Session, job_id: str) -> TrainingJob | None:
    """Marks a job running and counts the attempt. None when it is unknown or already finished."""
    now = utcnow()
    updated = session.execute(
        sa.update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.status.in_(OPEN_STATUSES))
        .values(
            status=TaskStatus.running.value,
            attempts=_jobs.c.attempts + 1,
            progress=5,
            stage="loading data",
            started_at=sa.func.coalesce(_jobs.c.started_at, now),
            updated_at=now,
        )
    )
    session.commit()
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(TrainingJob, job_id)


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
) -> bool:
    """Stores metrics, report and artifact and settles the charge (all to the platform), exactly once."""
    now = utcnow()
    updated = session.execute(
        sa.update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.status.in_(OPEN_STATUSES))
        .values(
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
    session.commit()
    return True


def fail(session: Session, *, job_id: str, reason: str, shard_id: str | None = None) -> bool:
    """Marks a job failed and refunds its charge, in one transaction, exactly once.

    For a sharded job, ``shard_id`` (the shard that failed) gets ``reason`` and every other unfinished shard is
    closed as failed too, so a shard still training elsewhere cannot succeed afterwards.
    """
    now = utcnow()
    updated = session.execute(
        sa.update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.status.in_(OPEN_STATUSES))
        .values(status=TaskStatus.failed.value, stage="failed", error=reason[:2000], finished_at=now, updated_at=now)
    )
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    if shard_id is not None:
        session.execute(
            sa.update(_shards)
            .where(_shards.c.id == shard_id, _shards.c.job_id == job_id, _shards.c.status.in_(OPEN_STATUSES))
            .values(status=TaskStatus.failed.value, error=reason[:2000], finished_at=now)
        )
    session.execute(
        sa.update(_shards)
        .where(_shards.c.job_id == job_id, _shards.c.status.in_(OPEN_STATUSES))
        .values(status=TaskStatus.failed.value, error="the job failed: another shard failed", finished_at=now)
    )
    ledger.refund(session, task_id=job_id, memo="training failed")
    session.commit()
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


def start_shard(session: Session, *, job_id: str, shard_id: str, worker: str) -> TrainingShard | None:
    """Marks a shard running on ``worker`` (and its job running, on the first shard).

    None when the job is finished or the shard unknown; a shard that already succeeded is returned as it is,
    so a redelivered message can still see the job to its merge.
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
    session.execute(
        sa.update(_shards)
        .where(_shards.c.id == shard_id, _shards.c.job_id == job_id, _shards.c.status.in_(OPEN_STATUSES))
        .values(status=TaskStatus.running.value, attempts=_shards.c.attempts + 1, worker=worker[:128])
    )
    session.commit()
    shard = session.get(TrainingShard, shard_id)
    if shard is None or shard.job_id != job_id or shard.status == TaskStatus.failed.value:
        return None
    session.refresh(shard)
    return shard


def complete_shard(
    session: Session, *, shard_id: str, rows: int, artifact: ArtifactRef, duration_seconds: float
) -> bool:
    """Records a trained shard and moves its job's progress on. False when the shard was already closed."""
    now = utcnow()
    updated = session.execute(
        sa.update(_shards)
        .where(_shards.c.id == shard_id, _shards.c.status == TaskStatus.running.value)
        .values(
            status=TaskStatus.succeeded.value,
            rows=rows,
            artifact_md5=artifact.md5,
            artifact_size=artifact.size,
            artifact_path=artifact.path,
            duration_seconds=duration_seconds,
            error=None,
            finished_at=now,
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


def claim_merge(session: Session, job_id: str, *, lease_seconds: float = MERGE_LEASE_SECONDS) -> bool:
    """The finalizer's guard: True for exactly one caller once every shard has succeeded.

    A conditional update on the job: only a running job whose merge nobody holds (or whose holder let its lease
    run out, having died mid-merge) can be claimed.
    """
    if any(s.status != TaskStatus.succeeded.value for s in shards_of(session, job_id)):
        session.rollback()
        return False
    now = utcnow()
    updated = session.execute(
        sa.update(_jobs)
        .where(
            _jobs.c.id == job_id,
            _jobs.c.status == TaskStatus.running.value,
            sa.or_(_jobs.c.stage != MERGING, _jobs.c.updated_at < now - timedelta(seconds=lease_seconds)),
        )
        .values(stage=MERGING, progress=90, updated_at=now)
    )
    session.commit()
    return updated.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def release_merge(session: Session, job_id: str) -> None:
    """Gives the merge back after an error, so the retried message can claim it again."""
    session.execute(
        sa.update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.status == TaskStatus.running.value, _jobs.c.stage == MERGING)
        .values(stage="shards trained", updated_at=utcnow())
    )
    session.commit()


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


def hard_delete(session: Session, store: ArtifactStore, job: TrainingJob) -> None:
    """Deletes a finished job and its model file from the store (unless a published model uses the file).

    The ledger keeps its entries: they are history, not part of the job.
    """
    if job.status in OPEN_STATUSES:
        raise Unprocessable(f"training job {job.id} is still {job.status}; delete it when it has finished")
    refs = [r for r in [artifact_ref(job)] if r is not None]
    shards = session.exec(select(TrainingShard).where(TrainingShard.job_id == job.id)).all()
    for shard in shards:
        if shard.artifact_md5 and shard.artifact_size is not None and shard.artifact_path:
            refs.append(ArtifactRef(md5=shard.artifact_md5, size=shard.artifact_size, path=shard.artifact_path))
        session.delete(shard)
    session.flush()
    session.delete(job)
    session.flush()
    md5s = [r.md5 for r in refs]
    in_use = set(session.exec(select(ModelVersion.artifact_md5).where(col(ModelVersion.artifact_md5).in_(md5s))).all())
    in_use |= {
        md5
        for md5 in session.exec(select(TrainingJob.artifact_md5).where(col(TrainingJob.artifact_md5).in_(md5s))).all()
        if md5
    }
    session.commit()
    for ref in refs:
        if ref.md5 not in in_use:
            store.remove(ref)


# -- publishing -----------------------------------------------------------------------------------------


def publish(
    session: Session, *, user_id: int, job_id: str, name: str, description: str, price_per_row: int
) -> ModelVersion:
    """The next version of catalog model ``name`` from a succeeded job's artifact, owned by the job's author."""
    job = get_for_user(session, user_id=user_id, job_id=job_id)
    ref = artifact_ref(job)
    if job.status != TaskStatus.succeeded.value or ref is None or not job.features:
        raise Conflict(f"training job {job_id} has no model to publish (status {job.status})")
    owners = set(session.exec(select(ModelVersion.owner_id).where(ModelVersion.name == name)).all())
    if owners and owners != {user_id}:
        raise Conflict(f"the model name {name!r} belongs to another author; choose another name")
    model = catalog.publish_version(
        session,
        name=name,
        task=ModelTask(job.task),
        algorithm=job.algorithm,
        price_per_row=price_per_row,
        features=[Feature.model_validate(f) for f in job.features],
        artifact=ref,
        owner_id=user_id,
        description=description,
        classes=(job.report or {}).get("classes"),
        metrics=job.metrics,
    )
    compiling.apply(model, compiling.of_job(job))
    session.add(model)
    session.commit()
    return model


def unpublish(session: Session, *, user_id: int, name: str) -> list[ModelVersion]:
    """Hides every published version of the user's model from the catalog; tasks and their history stay."""
    versions = session.exec(select(ModelVersion).where(ModelVersion.name == name)).all()
    if not versions or any(v.owner_id != user_id for v in versions):
        raise NotFound(f"model {name!r} not found among your models")
    for version in versions:
        if version.status == ModelStatus.published.value:
            version.status = ModelStatus.unlisted.value
            session.add(version)
    catalog.mark_changed(session)
    session.commit()
    return list(versions)


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
