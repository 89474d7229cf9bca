"""Training jobs: submit (charge + job + outbox in one transaction), list, delete; settled or refunded by the
worker's side (:mod:`app.services.training_leases`, :mod:`app.services.training_shards`).

A job's id is the ledger task id of its charge. The platform earns the whole
fee of a succeeded job; a failed job is refunded exactly once. Status changes
are conditional updates, so a redelivered message for a finished job does
nothing.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, col, select

from app.core.config import Settings
from app.core.errors import NotFound, Unprocessable
from app.models.dataset import Dataset, DatasetVersion
from app.models.task import OPEN_STATUSES, OutboxMessage, TaskStatus
from app.models.training import TrainingJob, TrainingJobCreate, TrainingShard
from app.queue.base import TRAIN_QUEUE
from app.runtime.algorithms import ALGORITHMS, checked_hyperparameters
from app.runtime.algorithms import Algorithm as Algorithm  # for the routes, which do not import the runtime
from app.services import compiling, datasets, guarded, ledger, webhooks
from app.services.training_shards import shard_message, shard_ref, shards_of
from app.store import gc
from app.store.base import ArtifactRef, ArtifactStore

MAX_SHARDS = 8


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


# -- lifecycle ------------------------------------------------------------------------------------------


def soft_delete(session: Session, job: TrainingJob) -> TrainingJob:
    return guarded.soft_delete(session, job)


def restore(session: Session, job: TrainingJob) -> TrainingJob:
    return guarded.restore(session, job)


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
