"""The artifact store against a real DVC repository and real remotes: a local folder and SeaweedFS S3."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Environment, Settings
from app.core.errors import ArtifactCorrupted, ArtifactMissing, BadRequest, StoreError
from app.store import ArtifactRef, DvcStore, LocalRemoteStore, S3RemoteStore, make_store, remotes
from tests.s3_server import S3Server

StoreFactory = Callable[[str], DvcStore]
# DVC 3.67 uses a deprecated pygtrie attribute internally.
pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")


@pytest.fixture(params=["local", "s3"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Builds stores in separate workspaces that share nothing but one remote."""
    if request.param == "local":
        remote = tmp_path / "remote"
        return lambda workspace: LocalRemoteStore(tmp_path / workspace, remote)
    server: S3Server = request.getfixturevalue("s3_server")
    prefix = f"test-{os.urandom(4).hex()}"
    return lambda workspace: S3RemoteStore(
        tmp_path / workspace,
        bucket=server.bucket,
        prefix=prefix,
        endpoint_url=server.endpoint_url,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        region=server.region,
    )


def write_artifact(tmp_path: Path, content: bytes, name: str = "model.skops") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def corrupt_remote_object(tmp_path: Path, md5: str, server: S3Server | None) -> None:
    """Overwrite the object DVC pushed for ``md5`` with other bytes."""
    if server is None:
        obj = tmp_path / "remote" / "files" / "md5" / md5[:2] / md5[2:]
        obj.chmod(0o644)
        obj.write_bytes(b"not the model")
        return
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
    )
    listed = client.list_objects_v2(Bucket=server.bucket)["Contents"]
    keys = [o["Key"] for o in listed if o["Key"].endswith(f"files/md5/{md5[:2]}/{md5[2:]}")]
    assert keys, "the pushed object is in the bucket under DVC's content-addressed layout"
    for key in keys:
        client.put_object(Bucket=server.bucket, Key=key, Body=b"not the model")


def test_another_workspace_fetches_by_ref_alone(store_factory: StoreFactory, tmp_path: Path) -> None:
    content = os.urandom(4096)
    ref = store_factory("author").put(write_artifact(tmp_path, content), "models/iris-logistic/v1/model.skops")

    assert ref.md5 == hashlib.md5(content, usedforsecurity=False).hexdigest()
    assert ref.size == len(content)
    assert ref.path == "models/iris-logistic/v1/model.skops"

    worker = store_factory("worker")
    fetched = worker.fetch(ArtifactRef.from_dict(ref.to_dict()))
    assert fetched.read_bytes() == content
    assert worker.fetch(ref) == fetched  # the verified copy is reused


def test_put_of_a_new_version_keeps_the_old_one_fetchable(store_factory: StoreFactory, tmp_path: Path) -> None:
    author = store_factory("author")
    first = author.put(write_artifact(tmp_path, b"version one"), "models/m/model.bin")
    second = author.put(write_artifact(tmp_path, b"version two"), "models/m/model.bin")
    assert first.md5 != second.md5

    worker = store_factory("worker")
    assert worker.fetch(first).read_bytes() == b"version one"
    assert worker.fetch(second).read_bytes() == b"version two"


def test_corrupted_object_in_remote_is_refused(
    store_factory: StoreFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ref = store_factory("author").put(write_artifact(tmp_path, os.urandom(2048)), "models/x/model.bin")
    server = request.getfixturevalue("s3_server") if "s3" in request.node.callspec.id else None
    corrupt_remote_object(tmp_path, ref.md5, server)

    worker = store_factory("worker")
    with pytest.raises(ArtifactCorrupted, match=ref.md5):
        worker.fetch(ref)
    assert not (worker.root / "fetched" / ref.md5).exists()


def test_unknown_md5_is_missing(store_factory: StoreFactory) -> None:
    with pytest.raises(ArtifactMissing, match="not in"):
        store_factory("worker").fetch(ArtifactRef(md5="0" * 32, size=10, path="models/none/model.bin"))


def test_malformed_md5_is_missing_without_touching_the_disk(store_factory: StoreFactory) -> None:
    store = store_factory("worker")
    with pytest.raises(ArtifactMissing, match="no valid md5"):
        store.fetch(ArtifactRef(md5="../../etc/passwd", size=1, path="x"))


def test_corrupted_local_copy_is_fetched_again(store_factory: StoreFactory, tmp_path: Path) -> None:
    content = os.urandom(1024)
    store = store_factory("author")
    ref = store.put(write_artifact(tmp_path, content), "models/y/model.bin")
    fetched = store.fetch(ref)
    fetched.write_bytes(b"tampered")
    assert store.fetch(ref).read_bytes() == content


def test_check_passes_for_a_reachable_remote(store_factory: StoreFactory) -> None:
    store_factory("probe").check()


@pytest.mark.parametrize("name", ["", "/abs/model.bin", "../escape.bin", "a/../b.bin", "model.bin.dvc", "a\\b"])
def test_put_refuses_names_outside_the_workspace(tmp_path: Path, name: str) -> None:
    store = LocalRemoteStore(tmp_path / "ws", tmp_path / "remote")
    with pytest.raises(BadRequest, match="invalid artifact name"):
        store.put(write_artifact(tmp_path, b"x"), name)


def test_check_fails_when_s3_endpoint_is_closed(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    store = S3RemoteStore(
        tmp_path / "ws",
        bucket="models",
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        access_key_id="k",
        secret_access_key="s",
    )
    with pytest.raises(StoreError, match="not reachable"):
        store.check()


def test_check_fails_for_wrong_s3_credentials(tmp_path: Path, s3_server: S3Server) -> None:
    store = S3RemoteStore(
        tmp_path / "ws",
        bucket=s3_server.bucket,
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key,
        secret_access_key="wrong",
    )
    with pytest.raises(StoreError, match="not reachable"):
        store.check()


def test_check_fails_when_local_remote_disappears(tmp_path: Path) -> None:
    store = LocalRemoteStore(tmp_path / "ws", tmp_path / "remote")
    (tmp_path / "remote").rmdir()
    with pytest.raises(StoreError, match="does not exist"):
        store.check()


def test_make_store_picks_the_remote_from_settings(tmp_path: Path) -> None:
    base = {"env": Environment.test, "data_dir": tmp_path / "data"}
    embedded = make_store(Settings(**base))
    assert isinstance(embedded, LocalRemoteStore)
    assert embedded.root == (tmp_path / "data" / "dvc").resolve()
    assert embedded.remote_dir == (tmp_path / "data" / "dvc-remote").resolve()

    real = make_store(
        Settings(
            **base,
            store_dir=tmp_path / "ws",
            s3_bucket="models",
            s3_prefix="prod",
            s3_endpoint_url="http://minio:9000",
            s3_access_key_id="AKIAEXAMPLE",
            s3_secret_access_key="very-secret",
        )
    )
    assert isinstance(real, S3RemoteStore)
    assert real.url == "s3://models/prod"
    assert not (tmp_path / "ws" / ".dvc").exists(), "nothing of DVC is set up before the first put"
    real.init_repo()
    committed = (tmp_path / "ws" / ".dvc" / "config").read_text()
    local = (tmp_path / "ws" / ".dvc" / "config.local").read_text()
    assert "very-secret" not in committed and "AKIAEXAMPLE" not in committed
    assert "very-secret" in local and "AKIAEXAMPLE" in local
    assert "minio:9000" in committed
    assert (tmp_path / "ws" / ".dvc" / "config.local").stat().st_mode & 0o077 == 0


def test_concurrent_puts_and_fetches_from_threads(tmp_path: Path) -> None:
    author = LocalRemoteStore(tmp_path / "author", tmp_path / "remote")
    worker = LocalRemoteStore(tmp_path / "worker", tmp_path / "remote")
    contents = [os.urandom(512) for _ in range(4)]
    refs: list[ArtifactRef | None] = [None] * len(contents)
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            refs[i] = author.put(write_artifact(tmp_path, contents[i], f"m{i}.bin"), f"models/m{i}/model.bin")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(contents))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors

    results: dict[int, bytes] = {}

    def fetch(i: int) -> None:
        try:
            ref = refs[i]
            assert ref is not None
            results[i] = worker.fetch(ref).read_bytes()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(i % len(contents),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == dict(enumerate(contents))


def s3_client(server: S3Server) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
    )


def test_fetch_reads_the_object_where_dvc_pushed_it_without_a_dvc_repository(
    store_factory: StoreFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    content = os.urandom(3000)
    author = store_factory("author")
    ref = author.put(write_artifact(tmp_path, content), "models/layout/v1/model.skops")
    key = f"files/md5/{ref.md5[:2]}/{ref.md5[2:]}"
    if isinstance(author, S3RemoteStore):
        server: S3Server = request.getfixturevalue("s3_server")
        assert author.object_key(ref.md5) == f"{author.prefix}/{key}"
        pushed = s3_client(server).get_object(Bucket=server.bucket, Key=author.object_key(ref.md5))["Body"].read()
    else:
        assert isinstance(author, LocalRemoteStore)
        pushed = (author.remote_dir / key).read_bytes()
    assert pushed == content, "DVC 3 pushes to <remote>/files/md5/<2 hex>/<30 hex>"

    worker = store_factory("fresh-worker")
    fetched = worker.fetch(ref)
    assert fetched == worker.root / "fetched" / ref.md5
    assert fetched.read_bytes() == content
    assert not (worker.root / ".dvc").exists(), "a fetch sets up no DVC repository"
    assert [p.name for p in fetched.parent.iterdir()] == [ref.md5], "no partial download is left behind"


def test_a_verified_local_copy_is_reused_without_the_remote(store_factory: StoreFactory, tmp_path: Path) -> None:
    content = os.urandom(1500)
    author = store_factory("author")
    ref = author.put(write_artifact(tmp_path, content), "models/reuse/v1/model.bin")
    first = store_factory("worker").fetch(ref)
    author.remove(ref)  # the object is gone from the remote now; the worker's fetched copy is all that is left

    again = store_factory("worker")  # a new store object on the same workspace
    assert again.fetch(ref) == first
    assert first.read_bytes() == content
    with pytest.raises(ArtifactMissing, match="not in"):
        store_factory("another-worker").fetch(ref)


def test_an_artifact_put_from_this_workspace_is_fetched_from_its_dvc_cache(tmp_path: Path) -> None:
    store = LocalRemoteStore(tmp_path / "ws", tmp_path / "remote")
    content = os.urandom(800)
    ref = store.put(write_artifact(tmp_path, content), "models/own/v1/model.bin")
    for obj in (tmp_path / "remote").rglob("*"):
        if obj.is_file():
            obj.unlink()
    assert store.fetch(ref).read_bytes() == content


def test_a_corrupted_remote_object_replaces_no_local_copy_and_leaves_no_partial_file(
    store_factory: StoreFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ref = store_factory("author").put(write_artifact(tmp_path, os.urandom(2048)), "models/bad/model.bin")
    server = request.getfixturevalue("s3_server") if "s3" in request.node.callspec.id else None
    corrupt_remote_object(tmp_path, ref.md5, server)

    worker = store_factory("worker")
    damaged = worker.root / "fetched" / ref.md5
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"a damaged earlier copy")
    with pytest.raises(ArtifactCorrupted, match=f"expected md5 {ref.md5}"):
        worker.fetch(ref)
    assert list(damaged.parent.iterdir()) == []


def test_fetch_from_s3_reports_an_unreachable_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setattr(remotes, "S3_FETCH_ATTEMPTS", 1)  # no backoff between retries in the test

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    store = S3RemoteStore(
        tmp_path / "ws",
        bucket="models",
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        access_key_id="k",
        secret_access_key="s",
    )
    with pytest.raises(StoreError, match="could not fetch"):
        store.fetch(ArtifactRef(md5="a" * 32, size=1, path="models/x/model.bin"))


FETCH_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from app.store import ArtifactRef, LocalRemoteStore, S3RemoteStore

args = json.loads(sys.argv[1])
ref = ArtifactRef.from_dict(args.pop("ref"))
root = Path(args.pop("root"))
if "remote_dir" in args:
    store = LocalRemoteStore(root, Path(args["remote_dir"]))
else:
    store = S3RemoteStore(root, **args)
content = store.fetch(ref).read_bytes()
print(json.dumps({"size": len(content), "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_fetch_imports_no_dvc(store_factory: StoreFactory, tmp_path: Path) -> None:
    content = os.urandom(1024)
    author = store_factory("author")
    ref = author.put(write_artifact(tmp_path, content), "models/lean/v1/model.bin")
    args: dict[str, Any] = {"ref": ref.to_dict(), "root": str(tmp_path / "fresh")}
    if isinstance(author, S3RemoteStore):
        args.update(
            bucket=author.bucket,
            prefix=author.prefix,
            endpoint_url=author.endpoint_url,
            access_key_id=author._access_key_id,
            secret_access_key=author._secret_access_key,
            region=author.region,
        )
    else:
        assert isinstance(author, LocalRemoteStore)
        args["remote_dir"] = str(author.remote_dir)
    done = subprocess.run(
        [sys.executable, "-c", FETCH_IN_A_FRESH_PROCESS, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["size"] == len(content)
    assert "dvc" not in result["modules"]
    assert ("boto3" in result["modules"]) == isinstance(author, S3RemoteStore)
