"""Store hygiene: which objects of the store something still uses, and the sweep that removes the others.

An object is in use while a dataset version, a catalog model version (its skops or ONNX file), a training job that
has not failed (its model and ONNX files) or a shard of such a job refers to its md5. Everything else in the remote
is an orphan: the files of a failed job, of a deleted dataset or job, or of a worker killed between storing a file
and recording it. The sweep only removes orphans older than a grace period, so a file just stored and about to be
recorded is never taken.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from app.models.base import utcnow
from app.models.catalog import ModelVersion
from app.models.dataset import DatasetVersion
from app.models.training import TrainingJob, TrainingShard
from app.store.base import ArtifactRef, ArtifactStore
from app.store.content import StoredObject
from app.store.dvc_store import DvcStore

log = logging.getLogger(__name__)

_FAILED = "failed"
_models: sa.Table = ModelVersion.__table__  # type: ignore[attr-defined]
_versions: sa.Table = DatasetVersion.__table__  # type: ignore[attr-defined]
_jobs: sa.Table = TrainingJob.__table__  # type: ignore[attr-defined]
_shards: sa.Table = TrainingShard.__table__  # type: ignore[attr-defined]


def _references() -> list[sa.Select[tuple[str | None]]]:
    live_job = _jobs.c.status != _FAILED
    return [
        sa.select(_models.c.artifact_md5),
        sa.select(_models.c.onnx_md5),
        sa.select(_versions.c.artifact_md5),
        sa.select(_jobs.c.artifact_md5).where(live_job),
        sa.select(_jobs.c.onnx_md5).where(live_job),
        sa.select(_shards.c.artifact_md5)
        .select_from(_shards.join(_jobs, _jobs.c.id == _shards.c.job_id))
        .where(live_job, _shards.c.status != _FAILED),
    ]


def in_use(session: Session, md5s: Collection[str] | None = None) -> set[str]:
    """The md5s (of ``md5s``, or all) that a dataset version, a model version, a job or a shard still uses."""
    found: set[str] = set()
    for query in _references():
        column = query.selected_columns[0]
        if md5s is not None:
            if not md5s:
                return found
            query = query.where(column.in_(list(md5s)))
        found.update(md5 for md5 in session.execute(query).scalars() if md5)
    return found


def discard(session: Session, store: ArtifactStore, refs: Iterable[ArtifactRef]) -> list[ArtifactRef]:
    """Removes the files of ``refs`` that nothing uses any more (best effort: a file that cannot be removed now is
    left to the sweep). Returns the refs removed. Call after the change that released them has committed."""
    wanted = {ref.md5: ref for ref in refs}
    used = in_use(session, list(wanted))
    session.rollback()  # nothing to write: end the read's transaction before the slower store calls
    removed = []
    for md5, ref in wanted.items():
        if md5 in used:
            continue
        try:
            store.remove(ref)
            removed.append(ref)
        except Exception as exc:
            log.warning(
                "could not remove the unused artifact %s (md5 %s): %s; the store sweep will", ref.path, md5, exc
            )
    return removed


@dataclass(frozen=True)
class Sweep:
    orphans: list[StoredObject]
    removed: list[StoredObject]
    kept_in_use: int
    kept_recent: int


def collect(
    session: Session, store: ArtifactStore, *, grace_seconds: float, dry_run: bool, now: datetime | None = None
) -> Sweep:
    """Lists the store's objects and removes (unless ``dry_run``) those nothing uses, once older than
    ``grace_seconds``. Objects are listed before the references are read, so an object stored and recorded during
    the sweep is always seen as used or as too recent."""
    if not isinstance(store, DvcStore):
        raise TypeError(f"{type(store).__name__} cannot list its objects")
    objects = store.objects()
    used = in_use(session)
    session.rollback()
    cutoff = (now or utcnow()) - timedelta(seconds=grace_seconds)
    orphans = [o for o in objects if o.md5 not in used and o.modified <= cutoff]
    recent = sum(1 for o in objects if o.md5 not in used and o.modified > cutoff)
    removed: list[StoredObject] = []
    if not dry_run:
        for obj in orphans:
            try:
                store.remove_object(obj.md5)
                removed.append(obj)
            except Exception as exc:
                log.warning("could not remove the orphan object %s: %s", obj.md5, exc)
        if removed:
            log.info("store sweep removed %d unused objects (%d bytes)", len(removed), sum(o.size for o in removed))
    return Sweep(orphans=orphans, removed=removed, kept_in_use=len(objects) - len(orphans) - recent, kept_recent=recent)
