"""Publishing trained models to the catalog, and taking them off it.

A model name belongs to the author of its first version. Two authors publishing
the same new name at the same moment must not both win: each publish takes a
lock on the name for its transaction (a PostgreSQL advisory lock on the name's
hash; SQLite's writers are serialised already), checks who owns the name, and
only then adds the next version. The loser gets 409.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from app.core.errors import Conflict, NotFound
from app.models.catalog import ModelStatus, ModelTask, ModelVersion
from app.models.task import TaskStatus
from app.runtime.schema import Feature
from app.services import catalog, compiling
from app.services.training import artifact_ref, get_for_user


def publish(
    session: Session, *, user_id: int, job_id: str, name: str, description: str, price_per_row: int
) -> ModelVersion:
    """The next version of catalog model ``name`` from a succeeded job's artifact, owned by the job's author."""
    job = get_for_user(session, user_id=user_id, job_id=job_id)
    ref = artifact_ref(job)
    if job.status != TaskStatus.succeeded.value or ref is None or not job.features:
        raise Conflict(f"training job {job_id} has no model to publish (status {job.status})")
    catalog.lock_name(session, name)
    owners = set(session.exec(select(ModelVersion.owner_id).where(ModelVersion.name == name)).all())
    if owners and owners != {user_id}:
        session.rollback()
        raise Conflict(f"the model name {name!r} belongs to another author; choose another name")
    try:
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
    except IntegrityError as exc:  # another publish of this name committed first (a backend without the lock)
        session.rollback()
        raise Conflict(f"the model name {name!r} was just published by someone else; try again") from exc
    return model


def unpublish(session: Session, *, user_id: int, name: str) -> list[ModelVersion]:
    """Hides every published version of the user's model from the catalog; tasks and their history stay."""
    catalog.lock_name(session, name)
    versions = session.exec(select(ModelVersion).where(ModelVersion.name == name)).all()
    if not versions or any(v.owner_id != user_id for v in versions):
        session.rollback()
        raise NotFound(f"model {name!r} not found among your models")
    for version in versions:
        if version.status == ModelStatus.published.value:
            version.status = ModelStatus.unlisted.value
            session.add(version)
    catalog.mark_changed(session)
    session.commit()
    return list(versions)
