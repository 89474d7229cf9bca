"""The model catalog: publishing versions, listing and resolving them."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.core.errors import NotFound, Unprocessable
from app.core.notify import CATALOG_CHANNEL, Generation, notify
from app.models.catalog import MODEL_NAME_PATTERN, ModelStatus, ModelTask, ModelVersion, ModelVersionPublic
from app.models.task import Task, TaskStatus
from app.models.user import User
from app.runtime.schema import Feature
from app.store.base import ArtifactRef

# Versions that exist for their author and history (an unpublished one is unlisted); only published ones are
# shown and sold.
VISIBLE = (ModelStatus.published.value, ModelStatus.unlisted.value)
# Bumped after every commit that publishes or hides a version, here and (through NOTIFY) in every API process.
GENERATION = Generation()
# How long the catalog's usage counts (succeeded predictions per model) are kept before they are counted again.
USAGE_TTL_SECONDS = 60.0
# The advisory lock space of model names (see lock_name).
NAME_LOCK = "mlmarket.model-name:"


def mark_changed(session: Session) -> None:
    """Tells every in-memory view of the catalog that it is stale once this session commits."""
    notify(session, CATALOG_CHANNEL, GENERATION.bump)


def lock_name(session: Session, name: str) -> None:
    """Holds model name ``name`` for the rest of the session's transaction: whoever publishes or unpublishes it
    meanwhile waits. A PostgreSQL advisory lock on the name's hash; SQLite's writing transactions already hold
    the whole database (BEGIN IMMEDIATE)."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": NAME_LOCK + name})


def artifact_ref(model: ModelVersion) -> ArtifactRef:
    return ArtifactRef(md5=model.artifact_md5, size=model.artifact_size, path=model.artifact_path)


def features_of(model: ModelVersion) -> list[Feature]:
    return [Feature.model_validate(f) for f in model.input_schema]


def publish_version(
    session: Session,
    *,
    name: str,
    task: ModelTask,
    algorithm: str,
    price_per_row: int,
    features: Sequence[Feature],
    artifact: ArtifactRef,
    owner_id: int | None,
    description: str = "",
    classes: list[Any] | None = None,
    metrics: dict[str, Any] | None = None,
    status: ModelStatus = ModelStatus.published,
) -> ModelVersion:
    """Adds the next version of ``name`` to the catalog. The caller commits."""
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise Unprocessable(
            "model names are 1-63 lowercase letters, digits and dashes, starting with a letter or digit"
        )
    if price_per_row < 1:
        raise Unprocessable("price_per_row must be at least 1 credit")
    lock_name(session, name)
    latest = session.exec(
        select(ModelVersion.version).where(ModelVersion.name == name).order_by(col(ModelVersion.version).desc())
    ).first()
    model = ModelVersion(
        name=name,
        version=(latest or 0) + 1,
        task=task.value,
        algorithm=algorithm,
        price_per_row=price_per_row,
        input_schema=[f.model_dump(exclude_none=True) for f in features],
        classes=classes,
        metrics=metrics,
        description=description,
        owner_id=owner_id,
        artifact_md5=artifact.md5,
        artifact_size=artifact.size,
        artifact_path=artifact.path,
        status=status.value,
    )
    session.add(model)
    session.flush()
    mark_changed(session)
    return model


def list_catalog(session: Session) -> Sequence[ModelVersion]:
    """The newest published version of every model, by name."""
    rows = session.exec(
        select(ModelVersion)
        .where(ModelVersion.status == ModelStatus.published.value)
        .order_by(col(ModelVersion.name), col(ModelVersion.version).desc())
    ).all()
    newest: dict[str, ModelVersion] = {}
    for row in rows:
        newest.setdefault(row.name, row)
    return list(newest.values())


def versions_of(session: Session, name: str) -> Sequence[ModelVersion]:
    """Every version that is not deleted, unpublished ones included (they keep their version numbers)."""
    return session.exec(
        select(ModelVersion)
        .where(ModelVersion.name == name, col(ModelVersion.status).in_(VISIBLE))
        .order_by(col(ModelVersion.version).desc())
    ).all()


def published_versions_of(session: Session, name: str) -> Sequence[ModelVersion]:
    """The versions the catalog shows and sells, newest first."""
    return session.exec(
        select(ModelVersion)
        .where(ModelVersion.name == name, ModelVersion.status == ModelStatus.published.value)
        .order_by(col(ModelVersion.version).desc())
    ).all()


def resolve(session: Session, name: str, version: int | None = None) -> ModelVersion:
    """The requested version, or the newest one. NotFound for unknown, unpublished or deleted models."""
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise NotFound(f"model {name[:70]!r} not found; model names are lowercase letters, digits and dashes")
    query = select(ModelVersion).where(ModelVersion.name == name, ModelVersion.status == ModelStatus.published.value)
    if version is not None:
        model = session.exec(query.where(ModelVersion.version == version)).first()
        if model is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return model
    model = session.exec(query.order_by(col(ModelVersion.version).desc())).first()
    if model is None:
        raise NotFound(f"model {name!r} not found; GET /api/v1/models lists the catalog")
    return model


def author_names(session: Session, models: Sequence[ModelVersion]) -> dict[int, str]:
    """The public name of each model's author: their full name, or "author <id>" without one. Never an email."""
    ids = {m.owner_id for m in models if m.owner_id is not None}
    if not ids:
        return {}
    rows = session.exec(select(User.id, User.full_name).where(col(User.id).in_(ids))).all()
    return {user_id or 0: public_name(user_id or 0, full_name) for user_id, full_name in rows}


def public_name(user_id: int, full_name: str | None) -> str:
    name = (full_name or "").strip()
    return name if name else f"author {user_id}"


def to_public(model: ModelVersion, authors: dict[int, str]) -> ModelVersionPublic:
    name = authors.get(model.owner_id) if model.owner_id is not None else None
    return ModelVersionPublic.model_validate(
        model, update={"owner": name, "author_name": name, "author_id": model.owner_id}
    )


def with_price_history(session: Session, public: list[ModelVersionPublic]) -> list[ModelVersionPublic]:
    """Each version with the price per row of the published version before it, flagged when it raised the price:
    a buyer whose calls use the newest version sees that it costs more before paying for it."""
    names = {p.name for p in public}
    if not names:
        return public
    prices: dict[str, list[tuple[int, int]]] = {}
    for name, version, price in session.exec(
        select(ModelVersion.name, ModelVersion.version, ModelVersion.price_per_row)
        .where(col(ModelVersion.name).in_(names), ModelVersion.status == ModelStatus.published.value)
        .order_by(col(ModelVersion.name), col(ModelVersion.version))
    ).all():
        prices.setdefault(name, []).append((version, price))
    out = []
    for p in public:
        earlier = [price for version, price in prices.get(p.name, []) if version < p.version]
        previous = earlier[-1] if earlier else None
        out.append(
            p.model_copy(
                update={
                    "previous_price_per_row": previous,
                    "price_raised": previous is not None and p.price_per_row > previous,
                }
            )
        )
    return out


class _Usage:
    """Succeeded predictions per model name, counted at most once per ``USAGE_TTL_SECONDS`` in each process: the
    catalog sorts by it ("most used"), and a fresh count on every listing would scan the tasks table each time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._at = float("-inf")

    def counts(self, session: Session) -> dict[str, int]:
        with self._lock:
            if time.monotonic() - self._at < USAGE_TTL_SECONDS:
                return self._counts
        rows = session.exec(
            select(ModelVersion.name, sa.func.count())
            .join(Task, col(Task.model_version_id) == col(ModelVersion.id))
            .where(Task.status == TaskStatus.succeeded.value)
            .group_by(col(ModelVersion.name))
        ).all()
        with self._lock:
            self._counts, self._at = {name: int(n) for name, n in rows}, time.monotonic()
            return self._counts

    def forget(self) -> None:
        with self._lock:
            self._at = float("-inf")


USAGE = _Usage()


def with_usage(session: Session, public: list[ModelVersionPublic]) -> list[ModelVersionPublic]:
    """Each version with ``predictions``: the succeeded prediction tasks of its model, all versions together."""
    counts = USAGE.counts(session) if public else {}
    return [p.model_copy(update={"predictions": counts.get(p.name, 0)}) for p in public]
