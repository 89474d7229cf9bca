"""Compiled models: a trained pipeline converted to ONNX, checked against itself, and stored next to its skops file.

The skops artifact stays the source of truth and the fallback: a pipeline that
cannot be converted, or whose ONNX graph does not answer like it on the
held-out rows, is served by scikit-learn, and the catalog says which runtime
serves each version and why (``runtime``, ``compile_note``).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from app.core.config import Settings
from app.models.catalog import ONNX_RUNTIME, SKLEARN_RUNTIME, ModelStatus, ModelVersion
from app.models.training import TrainingJob
from app.runtime.schema import Feature
from app.services import catalog
from app.store.base import ArtifactRef, ArtifactStore

log = logging.getLogger("mlmarket.compiling")
NOTE_LENGTH = 500


@dataclass(frozen=True)
class Compiled:
    """What the catalog records of a compilation: the ONNX artifact (or None), the runtime and a note."""

    onnx: ArtifactRef | None
    runtime: str
    note: str

    def columns(self) -> dict[str, Any]:
        return {
            "onnx_md5": self.onnx.md5 if self.onnx else None,
            "onnx_size": self.onnx.size if self.onnx else None,
            "onnx_path": self.onnx.path if self.onnx else None,
            "compile_note": self.note,
        }


def compile_and_store(
    store: ArtifactStore, pipeline: Any, features: list[Feature], task: str, check_rows: Any, name: str
) -> Compiled:
    """Converts ``pipeline``, checks it on ``check_rows`` and pushes the ONNX file as ``name`` when it matches."""
    from app.runtime.onnx_export import compile_pipeline

    result = compile_pipeline(pipeline, features, task, check_rows)
    if result.onnx is None:
        note = f"served by scikit-learn: {result.reason}"
        log.info("%s: %s", name, note)
        return Compiled(None, SKLEARN_RUNTIME, note[:NOTE_LENGTH])
    error = f"{result.max_abs_error:.3g}" if result.max_abs_error is not None else "none"
    what = "labels and probabilities" if result.probabilities else "predictions"
    rows = f"{result.checked_rows} held-out rows"
    note = f"compiled to ONNX: {what} matched scikit-learn on {rows} (largest difference {error})"
    with tempfile.TemporaryDirectory(prefix="mlmarket-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(result.onnx)
        ref = store.put(path, name)
    return Compiled(ref, ONNX_RUNTIME, note[:NOTE_LENGTH])


def of_job(job: TrainingJob) -> Compiled | None:
    """The compilation recorded with a training job (None for jobs that finished before models were compiled)."""
    if job.compile_note is None:
        return None
    onnx = None
    if job.onnx_md5 and job.onnx_size is not None and job.onnx_path:
        onnx = ArtifactRef(md5=job.onnx_md5, size=job.onnx_size, path=job.onnx_path)
    return Compiled(onnx, ONNX_RUNTIME if onnx else SKLEARN_RUNTIME, job.compile_note)


def apply(model: ModelVersion, compiled: Compiled | None) -> None:
    if compiled is None:
        return
    model.runtime = compiled.runtime
    for key, value in compiled.columns().items():
        setattr(model, key, value)


# -- compiling versions already in the catalog ------------------------------------------------------------


def versions_to_compile(session: Session, name: str | None, force: bool) -> list[ModelVersion]:
    query = select(ModelVersion).where(col(ModelVersion.status) != ModelStatus.deleted.value)
    if name is not None:
        query = query.where(ModelVersion.name == name)
    if not force:
        query = query.where(ModelVersion.runtime == SKLEARN_RUNTIME)
    return list(session.exec(query.order_by(col(ModelVersion.name), col(ModelVersion.version))).all())


def check_rows_for(session: Session, store: ArtifactStore, settings: Settings, model: ModelVersion) -> tuple[Any, str]:
    """Rows to check a compiled version on: the held-out split of the job that trained it, else rows drawn from
    the demo dataset of the same name, else rows made from its schema (said in the note)."""
    import numpy as np
    import pandas as pd

    from app.runtime.pipelines import prepare, split_data
    from app.services import datasets, training_leases
    from app.services.demo import demo_models

    job = session.exec(select(TrainingJob).where(TrainingJob.artifact_md5 == model.artifact_md5)).first()
    if job is not None:
        try:
            version = training_leases.dataset_version_of(session, job)
            frame = datasets.read_frame(store, version, job.target, settings)
            data = prepare(frame, job.target, "classification" if job.task == "classification" else "regression")
            return split_data(data, job.test_size, job.random_state).x_test, "held-out"
        except Exception as exc:  # the dataset may be gone: fall through to the other sources
            log.info("%s v%s: the training data is not available (%s)", model.name, model.version, exc)
    for spec in demo_models():
        if spec.name == model.name:
            frame, target = spec.dataset()
            data = prepare(frame, target, spec.task)
            return split_data(data, 0.2, 42).x_test, "held-out"
    features = catalog.features_of(model)
    rng = np.random.default_rng(0)
    rows: dict[str, Any] = {}
    for f in features:
        if f.type == "string":
            choices = f.categories or ["a"]
            rows[f.name] = [choices[i % len(choices)] for i in range(64)]
        else:
            rows[f.name] = rng.normal(0.0, 1.0, 64).round(0 if f.type == "integer" else 6)
    return pd.DataFrame(rows), "generated"


def compile_version(session: Session, store: ArtifactStore, settings: Settings, model: ModelVersion) -> Compiled:
    """Compiles one catalog version in place (the caller commits)."""
    from app.runtime.model import ModelRuntime

    runtime = ModelRuntime.load(store.fetch(catalog.artifact_ref(model)))
    rows, source = check_rows_for(session, store, settings, model)
    compiled = compile_and_store(
        store,
        runtime.estimator,
        runtime.features,
        model.task,
        rows,
        f"models/{model.name}/v{model.version}/model.onnx",
    )
    if source == "generated" and compiled.onnx is not None:
        compiled = Compiled(compiled.onnx, compiled.runtime, compiled.note.replace("held-out rows", "generated rows"))
    apply(model, compiled)
    session.add(model)
    catalog.mark_changed(session)
    return compiled
