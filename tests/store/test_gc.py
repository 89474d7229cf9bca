"""The store sweep (`mlmarket store gc`) on a real DVC store and a real database: it removes the files nothing uses
and never one a dataset version, a published model or a live training job still uses."""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from app import cli
from app.core.config import Settings
from app.models.base import utcnow
from app.models.catalog import ModelVersion
from app.models.dataset import Dataset, DatasetVersion
from app.models.training import TrainingJob, TrainingShard
from app.services import users
from app.store import ArtifactRef, LocalRemoteStore, gc, make_store

pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")


def put(store: LocalRemoteStore, tmp_path: Path, name: str) -> ArtifactRef:
    path = tmp_path / "src" / name.replace("/", "-")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(512))
    return store.put(path, name)


def job(user_id: int, status: str, ref: ArtifactRef | None, shards: int = 1) -> TrainingJob:
    return TrainingJob(
        id=str(uuid.uuid4()),
        user_id=user_id,
        dataset_version=1,
        algorithm="RandomForestClassifier",
        task="classification",
        target="y",
        hyperparameters={},
        test_size=0.2,
        random_state=1,
        shards=shards,
        rows=10,
        cost=10,
        status=status,
        artifact_md5=ref.md5 if ref else None,
        artifact_size=ref.size if ref else None,
        artifact_path=ref.path if ref else None,
    )


def run_cli(*args: str) -> str:
    """The command's output (not through capsys: DVC's logger keeps the stream it first saw)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(args)) == 0
    return out.getvalue()


@pytest.fixture
def store(settings: Settings) -> LocalRemoteStore:
    built = make_store(settings)
    assert isinstance(built, LocalRemoteStore)
    return built


def test_the_sweep_removes_only_what_nothing_uses(
    session: Session,
    store: LocalRemoteStore,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    author = users.create_user(session, email="author@example.com", password="password-1")
    dataset_file = put(store, tmp_path, "datasets/1/v1/data.csv")
    published = put(store, tmp_path, "models/iris/v1/model.skops")
    succeeded = put(store, tmp_path, "training/a/model.skops")
    live_shard = put(store, tmp_path, "training/b/shard-0.skops")
    failed_model = put(store, tmp_path, "training/c/model.skops")
    failed_shard = put(store, tmp_path, "training/d/shard-0.skops")
    stray = put(store, tmp_path, "training/e/shard-1.skops")  # stored by a worker killed before recording it

    dataset = Dataset(user_id=author.id or 0, name="iris", target="y")
    session.add(dataset)
    session.flush()
    session.add(
        DatasetVersion(
            dataset_id=dataset.id or 0, version=1, rows=10, columns=["x", "y"], dtypes={}, task="classification",
            artifact_md5=dataset_file.md5, artifact_size=dataset_file.size, artifact_path=dataset_file.path,
        )
    )  # fmt: skip
    session.add(
        ModelVersion(
            name="iris", version=1, task="classification", algorithm="x", price_per_row=1, input_schema=[],
            artifact_md5=published.md5, artifact_size=published.size, artifact_path=published.path,
        )
    )  # fmt: skip
    running = job(author.id or 0, "running", None, shards=2)
    broken = job(author.id or 0, "failed", None, shards=2)
    session.add_all([job(author.id or 0, "succeeded", succeeded), job(author.id or 0, "failed", failed_model)])
    session.add_all([running, broken])
    session.flush()
    for parent, ref in ((running, live_shard), (broken, failed_shard)):
        session.add(
            TrainingShard(
                id=str(uuid.uuid4()), job_id=parent.id, index=0, status="succeeded",
                artifact_md5=ref.md5, artifact_size=ref.size, artifact_path=ref.path,
            )
        )  # fmt: skip
    session.commit()
    in_use = {dataset_file.md5, published.md5, succeeded.md5, live_shard.md5}
    garbage = {failed_model.md5, failed_shard.md5, stray.md5}

    # Just stored: younger than the grace period, nothing is taken (a worker may be about to record it).
    young = gc.collect(session, store, grace_seconds=3600, dry_run=False)
    assert young.orphans == [] and young.kept_recent == 3 and young.kept_in_use == 4

    later = utcnow() + timedelta(hours=2)
    dry = gc.collect(session, store, grace_seconds=3600, dry_run=True, now=later)
    assert {o.md5 for o in dry.orphans} == garbage and dry.removed == []
    assert {o.md5 for o in store.objects()} == in_use | garbage

    monkeypatch.setenv("MLMARKET_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("MLMARKET_DATA_DIR", str(settings.data_dir))
    listed = run_cli("store", "gc", "--dry-run", "--grace-seconds", "0")
    assert all(f"would remove {md5}" in listed for md5 in garbage)
    assert not any(md5 in listed for md5 in in_use)
    assert {o.md5 for o in store.objects()} == in_use | garbage

    assert "removed 3 unused objects" in run_cli("store", "gc", "--grace-seconds", "0")
    assert {o.md5 for o in store.objects()} == in_use
    # What is still used still fetches from the remote, in a workspace that never saw it.
    other = LocalRemoteStore(tmp_path / "other-workspace", store.remote_dir)
    for ref in (dataset_file, published, succeeded, live_shard):
        assert other.fetch(ref).read_bytes()
    assert gc.collect(session, store, grace_seconds=0, dry_run=False).orphans == []


def test_a_failed_jobs_files_go_at_once_unless_another_job_uses_them(
    session: Session, store: LocalRemoteStore, tmp_path: Path
) -> None:
    from app.services import training

    author = users.create_user(session, email="author@example.com", password="password-1")
    shared = put(store, tmp_path, "training/x/model.skops")
    own = put(store, tmp_path, "training/y/shard-0.skops")
    failed = job(author.id or 0, "failed", shared, shards=2)
    session.add_all([job(author.id or 0, "succeeded", shared), failed])
    session.flush()
    session.add(
        TrainingShard(
            id=str(uuid.uuid4()), job_id=failed.id, index=0, status="failed",
            artifact_md5=own.md5, artifact_size=own.size, artifact_path=own.path,
        )
    )  # fmt: skip
    session.commit()

    assert training.discard_files(session, store, failed.id) == 1
    assert {o.md5 for o in store.objects()} == {shared.md5}
