"""Datasets of the training studio: CSV uploads kept in the artifact store, one artifact per version.

A dataset's versions are immutable. Appending rows writes a new version with
the old rows and the new ones; a reset writes a new version with the content of
the first (same artifact, same md5). Training jobs name the version they used.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.core.config import Settings
from app.core.errors import NotFound
from app.models.base import utcnow
from app.models.dataset import Dataset, DatasetVersion
from app.models.training import TrainingJob
from app.runtime.dataset import (
    CsvLimits,
    ParsedCsv,
    append_records,
    check_appended_rows,
    column_summary,
    parse_csv,
    records_of,
)
from app.services import guarded
from app.store.base import ArtifactRef
from app.store.base import ArtifactStore as ArtifactStore  # for the routes, which do not import the store

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_TARGET = "target"
_jobs: sa.Table = TrainingJob.__table__  # type: ignore[attr-defined]


def limits(settings: Settings) -> CsvLimits:
    return CsvLimits(max_columns=settings.dataset_max_columns, max_rows=settings.dataset_max_rows)


def artifact_ref(version: DatasetVersion) -> ArtifactRef:
    return ArtifactRef(md5=version.artifact_md5, size=version.artifact_size, path=version.artifact_path)


def _put(store: ArtifactStore, dataset_id: int, version: int, text: str) -> ArtifactRef:
    with tempfile.TemporaryDirectory(prefix="mlmarket-dataset-") as tmp:
        path = Path(tmp) / "data.csv"
        path.write_text(text, encoding="utf-8")
        return store.put(path, f"datasets/{dataset_id}/v{version}/data.csv")


def _version_row(dataset_id: int, version: int, parsed: ParsedCsv, ref: ArtifactRef, note: str) -> DatasetVersion:
    return DatasetVersion(
        dataset_id=dataset_id,
        version=version,
        rows=parsed.rows,
        columns=parsed.columns,
        dtypes=dict(parsed.dtypes),
        task=parsed.task,
        artifact_md5=ref.md5,
        artifact_size=ref.size,
        artifact_path=ref.path,
        note=note,
    )


def create(
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    *,
    user_id: int,
    name: str,
    data: bytes,
    target: str | None,
) -> tuple[Dataset, DatasetVersion]:
    """Checks the CSV (400 with the contract's message), stores it through DVC and records version 1."""
    target = (target or DEFAULT_TARGET).strip() or DEFAULT_TARGET
    parsed = parse_csv(data, target, limits(settings))
    dataset = Dataset(user_id=user_id, name=name[:255] or "dataset.csv", target=target)
    session.add(dataset)
    session.flush()
    ref = _put(store, dataset.id or 0, 1, parsed.text)
    version = _version_row(dataset.id or 0, 1, parsed, ref, "uploaded")
    session.add(version)
    session.commit()
    return dataset, version


def get_for_user(session: Session, *, user_id: int, dataset_id: int, include_deleted: bool = True) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.user_id != user_id or (dataset.deleted_at is not None and not include_deleted):
        # Another user's dataset is answered exactly like a missing one.
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def list_for_user(
    session: Session, *, user_id: int, include_deleted: bool, limit: int, offset: int
) -> Sequence[Dataset]:
    query = select(Dataset).where(Dataset.user_id == user_id)
    if not include_deleted:
        query = query.where(col(Dataset.deleted_at).is_(None))
    return session.exec(query.order_by(col(Dataset.id).desc()).limit(limit).offset(offset)).all()


def version_of(session: Session, dataset: Dataset, version: int | None = None) -> DatasetVersion:
    wanted = version or dataset.current_version
    row = session.exec(
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == wanted)
    ).first()
    if row is None:
        raise NotFound(f"dataset {dataset.id} has no version {wanted}")
    return row


def versions_of(session: Session, dataset_id: int) -> Sequence[DatasetVersion]:
    return session.exec(
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id).order_by(col(DatasetVersion.version))
    ).all()


def read_text(store: ArtifactStore, version: DatasetVersion) -> str:
    return store.fetch(artifact_ref(version)).read_text(encoding="utf-8")


def read_frame(store: ArtifactStore, version: DatasetVersion, target: str, settings: Settings) -> pd.DataFrame:
    return parse_csv(read_text(store, version), target, limits(settings)).frame


def describe(
    store: ArtifactStore, dataset: Dataset, version: DatasetVersion, settings: Settings
) -> tuple[Any, dict[str, Any]]:
    """A version's column summary and its target's summary (classes with their counts, or the range)."""
    frame = read_frame(store, version, dataset.target, settings)
    target = frame[dataset.target]
    summary: dict[str, Any] = {"name": dataset.target, "task": version.task, "missing": int(target.isna().sum())}
    if version.task == "classification":
        summary["classes"] = {str(k): int(v) for k, v in target.value_counts().sort_index().items()}
    else:
        summary.update(min=float(target.min()), max=float(target.max()), mean=float(target.mean()))
    return column_summary(frame, version.dtypes), summary  # type: ignore[arg-type]


def rows_page(
    store: ArtifactStore, dataset: Dataset, version: DatasetVersion, settings: Settings, offset: int, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """How many rows the version has, and the rows from ``offset`` (at most ``limit``)."""
    frame = read_frame(store, version, dataset.target, settings)
    return len(frame), records_of(frame.iloc[offset : offset + limit])


def _new_version(
    session: Session, store: ArtifactStore, settings: Settings, dataset: Dataset, text: str, note: str
) -> DatasetVersion:
    parsed = parse_csv(text, dataset.target, limits(settings))
    latest = max(v.version for v in versions_of(session, dataset.id or 0))
    ref = _put(store, dataset.id or 0, latest + 1, parsed.text)
    version = _version_row(dataset.id or 0, latest + 1, parsed, ref, note)
    session.add(version)
    dataset.current_version = latest + 1
    dataset.updated_at = utcnow()
    session.add(dataset)
    session.commit()
    return version


def append_rows(
    session: Session, store: ArtifactStore, settings: Settings, dataset: Dataset, rows: list[Any]
) -> DatasetVersion:
    """A new version with ``rows`` after the current ones; the limits apply to the whole."""
    current = version_of(session, dataset)
    checked = check_appended_rows(current.columns, rows)
    text = append_records(read_text(store, current), current.columns, checked)
    return _new_version(session, store, settings, dataset, text, f"appended {len(checked)} rows")


def reset(session: Session, dataset: Dataset) -> DatasetVersion:
    """A new version with the content of version 1 (the same artifact)."""
    first = version_of(session, dataset, 1)
    latest = max(v.version for v in versions_of(session, dataset.id or 0))
    version = DatasetVersion.model_validate(
        first.model_dump(exclude={"id", "created_at"}), update={"version": latest + 1, "note": "reset to version 1"}
    )
    session.add(version)
    dataset.current_version = latest + 1
    dataset.updated_at = utcnow()
    session.add(dataset)
    session.commit()
    return version


def soft_delete(session: Session, dataset: Dataset) -> Dataset:
    return guarded.soft_delete(session, dataset)


def restore(session: Session, dataset: Dataset) -> Dataset:
    return guarded.restore(session, dataset)


def hard_delete(session: Session, store: ArtifactStore, dataset: Dataset) -> None:
    """Deletes the dataset, its versions and their files in the store (unless another dataset has the same file).

    Training jobs made from it keep their results and lose the link to it.
    """
    versions = versions_of(session, dataset.id or 0)
    refs = {v.artifact_md5: artifact_ref(v) for v in versions}
    session.execute(
        sa.update(_jobs).where(_jobs.c.dataset_id == dataset.id).values(dataset_id=None, updated_at=utcnow())
    )
    for version in versions:
        session.delete(version)
    session.flush()
    session.delete(dataset)
    session.flush()
    shared = set(
        session.exec(select(DatasetVersion.artifact_md5).where(col(DatasetVersion.artifact_md5).in_(list(refs)))).all()
    )
    session.commit()
    for md5, ref in refs.items():
        if md5 not in shared:
            store.remove(ref)
