"""The artifact store on DVC: a repository without git whose default remote is a folder or an S3 bucket.

Layout of the workspace (``settings.store_dir``, default ``<data dir>/dvc``)::

    .dvc/                 the DVC repository (config, config.local with S3 keys, cache), set up by the first put
    artifacts/<name>      files put into the store, each with its ``<name>.dvc``
    fetched/<md5>         the fetched copy, verified against its md5 before it is returned
    .lock                 file lock: DVC repositories are not safe for concurrent use

The remote keeps DVC 3's content-addressed layout (``<remote>/files/md5/ab/cdef…``).
``put`` and ``remove`` go through DVC, so people who use DVC themselves see the same
remote. ``fetch`` needs no DVC: it reads the object at that address straight from
the folder or the bucket (boto3) and checks its md5, so a worker or an API process
that only serves models never imports DVC, and any number of them share one remote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import yaml

from app.core.config import Settings
from app.core.errors import ArtifactCorrupted, ArtifactMissing, BadRequest, StoreError
from app.store.base import MD5_PATTERN, ArtifactRef, ArtifactStore, file_md5

if TYPE_CHECKING:
    # DVC and boto3 are imported where they are used: put and remove need DVC, fetch from S3 and check need boto3.
    from dvc.repo import Repo

log = logging.getLogger(__name__)

REMOTE_NAME = "store"
ARTIFACTS_DIR = "artifacts"
FETCHED_DIR = "fetched"
S3_CONNECT_TIMEOUT_SECONDS = 5
S3_READ_TIMEOUT_SECONDS = 60
PROBE_TIMEOUT_SECONDS = 3
S3_FETCH_ATTEMPTS = 3
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """One object of the remote: the md5 it is stored under, its size and when it was written."""

    md5: str
    size: int
    modified: datetime


# One lock per workspace for every store object in this process; the file lock covers other processes.
_workspace_locks: dict[Path, threading.RLock] = {}
_workspace_locks_guard = threading.Lock()


def _thread_lock_for(root: Path) -> threading.RLock:
    with _workspace_locks_guard:
        return _workspace_locks.setdefault(root, threading.RLock())


class DvcStore:
    """An :class:`ArtifactStore` on a DVC repository; subclasses say which remote it pushes to."""

    remote_description: str

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._thread_lock = _thread_lock_for(self.root)
        self._repo_ready = False

    # -- configuration -------------------------------------------------------------------------

    def _remote_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _remote_secrets(self) -> dict[str, Any]:
        return {}

    def init_repo(self) -> None:
        """Sets up the DVC repository and writes the remote's settings (``put`` and ``remove`` do it first)."""
        with self._locked():
            self._ensure_repo()

    def _ensure_repo(self) -> None:
        """Call with the workspace locked. Once per store object: a changed setting takes effect on restart."""
        if not self._repo_ready:
            self._init_repo()
            self._repo_ready = True

    def _init_repo(self) -> None:
        from dvc.config import Config as DvcConfig
        from dvc.repo import Repo

        dvc_dir = self.root / ".dvc"
        # DVC keeps per-repository state in a "site cache", by default under /var/tmp; keep it in the workspace.
        site_cache = dvc_dir / "tmp" / "site-cache"
        if not dvc_dir.is_dir():
            with _environment(DVC_SITE_CACHE_DIR=str(site_cache)):
                Repo.init(str(self.root), no_scm=True)
        site_cache.mkdir(parents=True, exist_ok=True)
        # Written on every start so a changed setting (a new bucket, rotated keys) takes effect.
        config = DvcConfig(dvc_dir=str(dvc_dir))
        with config.edit(level="repo") as conf:
            conf["core"]["remote"] = REMOTE_NAME
            conf["core"]["analytics"] = False
            conf["core"]["site_cache_dir"] = str(site_cache)
            conf["remote"][REMOTE_NAME] = self._remote_config()
        with config.edit(level="local") as conf:
            conf["remote"].pop(REMOTE_NAME, None)
            if secrets := self._remote_secrets():
                conf["remote"][REMOTE_NAME] = secrets
        local_config = dvc_dir / "config.local"
        if local_config.exists():
            local_config.chmod(0o600)

    # -- locking and the repository --------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with (self.root / ".lock").open("a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _repo(self) -> Iterator[Repo]:
        """The DVC repository (set up on first use); call with the workspace locked."""
        from dvc.repo import Repo

        self._ensure_repo()
        # A fresh Repo per operation: its cached index would otherwise go stale between calls.
        repo = Repo(str(self.root))
        try:
            yield repo
        finally:
            repo.close()

    # -- the ArtifactStore interface -------------------------------------------------------------

    def put(self, local_file: Path, name: str) -> ArtifactRef:
        relative = _checked_name(name)
        if not local_file.is_file():
            raise BadRequest(f"cannot store {local_file}: it is not a file")
        target = self.root / ARTIFACTS_DIR / relative
        with self._locked():
            target.parent.mkdir(parents=True, exist_ok=True)
            if local_file.resolve() != target.resolve():
                shutil.copyfile(local_file, target)
            dvc_file = target.with_name(target.name + ".dvc")
            try:
                with self._repo() as repo:
                    repo.add(str(target))
                    out = _read_dvc_out(dvc_file)
                    repo.push(targets=[str(dvc_file)], remote=REMOTE_NAME)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"could not store artifact {name!r} in {self.remote_description}: {exc}") from exc
        ref = ArtifactRef(md5=out["md5"], size=int(out["size"]), path=relative.as_posix())
        log.info("stored artifact %s (md5 %s, %d bytes) in %s", ref.path, ref.md5, ref.size, self.remote_description)
        return ref

    def fetch(self, ref: ArtifactRef) -> Path:
        """The artifact from this workspace when a verified copy is here, else from the remote, by md5 alone."""
        if not MD5_PATTERN.fullmatch(ref.md5):
            raise ArtifactMissing(f"artifact {ref.path!r} has no valid md5 ({ref.md5!r})")
        target = self.root / FETCHED_DIR / ref.md5
        if target.is_file() and file_md5(target) == ref.md5:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # An artifact put from this workspace is in its DVC cache: no need to go to the remote for it.
        cached = self.root / ".dvc" / "cache" / _object_key(ref.md5)
        if cached.is_file():
            try:
                with cached.open("rb") as source:
                    return _receive(source, target, ref, "this workspace's DVC cache")
            except ArtifactCorrupted:
                cached.unlink(missing_ok=True)  # never pushed again; the remote has the real one
            except OSError:
                pass  # the remote has it too
        try:
            with self._open_remote_object(ref) as source:
                return _receive(source, target, ref, self.remote_description)
        except StoreError:
            # The remote has no good copy either: drop a damaged local one, so nothing stale is left behind.
            if target.is_file() and file_md5(target) != ref.md5:
                target.unlink(missing_ok=True)
            raise
        except Exception as exc:
            raise StoreError(f"could not fetch artifact {ref.path!r} from {self.remote_description}: {exc}") from exc

    def _open_remote_object(self, ref: ArtifactRef) -> IO[bytes]:
        """The object ``files/md5/ab/cdef…`` of the remote, open for reading; :class:`ArtifactMissing` if absent."""
        raise NotImplementedError

    def _missing(self, ref: ArtifactRef) -> ArtifactMissing:
        return ArtifactMissing(f"artifact {ref.path!r} (md5 {ref.md5}) is not in {self.remote_description}")

    def check(self) -> None:
        raise NotImplementedError

    def remove(self, ref: ArtifactRef) -> None:
        if not MD5_PATTERN.fullmatch(ref.md5):
            raise ArtifactMissing(f"artifact {ref.path!r} has no valid md5 ({ref.md5!r})")
        target = self.root / ARTIFACTS_DIR / _checked_name(ref.path)
        fetched = self.root / FETCHED_DIR
        with self._locked():
            # fetched/<md5>.dvc: left by the fetches of earlier versions, which pulled through DVC.
            for path in (target, target.with_name(target.name + ".dvc"), fetched / ref.md5, fetched / f"{ref.md5}.dvc"):
                path.unlink(missing_ok=True)
            with self._repo() as repo:
                try:
                    Path(repo.cache.local.oid_to_path(ref.md5)).unlink(missing_ok=True)
                    remote = repo.cloud.get_remote_odb(REMOTE_NAME)
                    remote_path = remote.oid_to_path(ref.md5)
                    if remote.fs.exists(remote_path):
                        remote.fs.remove(remote_path)
                except Exception as exc:
                    raise StoreError(
                        f"could not remove artifact {ref.path!r} from {self.remote_description}: {exc}"
                    ) from exc
        log.info("removed artifact %s (md5 %s) from %s", ref.path, ref.md5, self.remote_description)

    # -- store hygiene (see app.store.gc) ----------------------------------------------------------

    def objects(self) -> list[StoredObject]:
        """Every object in the remote's content-addressed layout."""
        raise NotImplementedError

    def remove_object(self, md5: str) -> None:
        """Deletes the object of ``md5`` from the remote and from this workspace (cache, fetched copy and the
        artifact tracked under it, if any), without DVC: the sweep knows objects by md5 alone."""
        if not MD5_PATTERN.fullmatch(md5):
            raise ArtifactMissing(f"no valid md5 ({md5!r})")
        with self._locked():
            (self.root / ".dvc" / "cache" / _object_key(md5)).unlink(missing_ok=True)
            (self.root / FETCHED_DIR / md5).unlink(missing_ok=True)
            artifacts = self.root / ARTIFACTS_DIR
            for dvc_file in artifacts.rglob("*.dvc") if artifacts.is_dir() else []:
                try:
                    tracked = _read_dvc_out(dvc_file)["md5"]
                except (StoreError, OSError, yaml.YAMLError):
                    continue
                if tracked == md5:
                    dvc_file.with_name(dvc_file.name.removesuffix(".dvc")).unlink(missing_ok=True)
                    dvc_file.unlink(missing_ok=True)
            try:
                self._delete_remote_object(md5)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"could not remove object {md5} from {self.remote_description}: {exc}") from exc
        log.info("removed unused object %s from %s", md5, self.remote_description)

    def _delete_remote_object(self, md5: str) -> None:
        raise NotImplementedError


class LocalRemoteStore(DvcStore):
    """The embedded default: the remote is a folder on this machine (or a shared volume)."""

    def __init__(self, root: Path, remote_dir: Path) -> None:
        self.remote_dir = remote_dir.resolve()
        self.remote_description = f"the local remote {self.remote_dir}"
        self.remote_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(root)

    def _remote_config(self) -> dict[str, Any]:
        return {"url": str(self.remote_dir)}

    def _open_remote_object(self, ref: ArtifactRef) -> IO[bytes]:
        try:
            return (self.remote_dir / _object_key(ref.md5)).open("rb")
        except FileNotFoundError:
            raise self._missing(ref) from None

    def objects(self) -> list[StoredObject]:
        found = []
        for path in (self.remote_dir / "files" / "md5").glob("*/*"):
            md5 = path.parent.name + path.name
            if MD5_PATTERN.fullmatch(md5) and path.is_file():
                stat = path.stat()
                found.append(StoredObject(md5, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return found

    def _delete_remote_object(self, md5: str) -> None:
        (self.remote_dir / _object_key(md5)).unlink(missing_ok=True)

    def check(self) -> None:
        if not self.remote_dir.is_dir():
            raise StoreError(f"the local remote {self.remote_dir} does not exist")
        if not os.access(self.remote_dir, os.R_OK | os.W_OK | os.X_OK):
            raise StoreError(f"the local remote {self.remote_dir} is not readable and writable")


class S3RemoteStore(DvcStore):
    """The real-services mode: the remote is an S3 bucket (MinIO, SeaweedFS, AWS)."""

    def __init__(
        self,
        root: Path,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        where = f" at {endpoint_url}" if endpoint_url else ""
        self.remote_description = f"the S3 remote {self.url}{where}"
        super().__init__(root)

    def _remote_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "url": self.url,
            "region": self.region,
            "connect_timeout": S3_CONNECT_TIMEOUT_SECONDS,
            "read_timeout": S3_READ_TIMEOUT_SECONDS,
            "verify": True,
        }
        if self.endpoint_url:
            conf["endpointurl"] = self.endpoint_url
        return conf

    def _remote_secrets(self) -> dict[str, Any]:
        secrets: dict[str, Any] = {}
        if self._access_key_id:
            secrets["access_key_id"] = self._access_key_id
        if self._secret_access_key:
            secrets["secret_access_key"] = self._secret_access_key
        return secrets

    def _boto_client(self, *, connect_timeout: float, read_timeout: float, attempts: int) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            # Unset (or empty, as DVC reads them): the usual AWS credential chain.
            aws_access_key_id=self._access_key_id or None,
            aws_secret_access_key=self._secret_access_key or None,
            config=BotoConfig(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": attempts, "mode": "standard"},
            ),
        )

    def _fetch_client(self) -> Any:
        """One client per store for fetches (boto3 clients are thread-safe; making one takes tens of ms)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._boto_client(
                    connect_timeout=S3_CONNECT_TIMEOUT_SECONDS,
                    read_timeout=S3_READ_TIMEOUT_SECONDS,
                    attempts=S3_FETCH_ATTEMPTS,
                )
            return self._client

    def object_key(self, md5: str) -> str:
        """The key DVC pushes the object of ``md5`` to: ``<prefix>/files/md5/ab/cdef…``."""
        key = _object_key(md5)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _open_remote_object(self, ref: ArtifactRef) -> IO[bytes]:
        from botocore.exceptions import ClientError

        try:
            body: IO[bytes] = self._fetch_client().get_object(Bucket=self.bucket, Key=self.object_key(ref.md5))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise self._missing(ref) from None
            raise
        return body  # a botocore StreamingBody: read(n) and close()

    def objects(self) -> list[StoredObject]:
        prefix = self.object_key("00")[: -len("00/")]  # <prefix>/files/md5/
        paginator = self._fetch_client().get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                md5 = item["Key"][len(prefix) :].replace("/", "")
                if MD5_PATTERN.fullmatch(md5):
                    found.append(StoredObject(md5, int(item["Size"]), item["LastModified"].astimezone(UTC)))
        return found

    def _delete_remote_object(self, md5: str) -> None:
        self._fetch_client().delete_object(Bucket=self.bucket, Key=self.object_key(md5))

    def check(self) -> None:
        # A probe answers fast: one attempt with short timeouts, where DVC's own client retries for seconds.
        client = self._boto_client(
            connect_timeout=PROBE_TIMEOUT_SECONDS, read_timeout=PROBE_TIMEOUT_SECONDS, attempts=1
        )
        try:
            client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise StoreError(f"{self.remote_description} is not reachable: {exc}") from exc


def make_store(settings: Settings) -> ArtifactStore:
    """The store the settings ask for: S3 when ``MLMARKET_S3_BUCKET`` is set, else a local-folder remote."""
    root = settings.store_dir or settings.data_dir / "dvc"
    if settings.s3_bucket:
        return S3RemoteStore(
            root,
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            region=settings.s3_region,
        )
    return LocalRemoteStore(root, settings.data_dir / "dvc-remote")


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _object_key(md5: str) -> str:
    """Where DVC 3 keeps the object of ``md5`` in a cache or a remote, relative to its root."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def _receive(source: IO[bytes], target: Path, ref: ArtifactRef, origin: str) -> Path:
    """Copies ``source`` to ``target`` if its md5 is ``ref.md5``; :class:`ArtifactCorrupted` otherwise.

    The bytes go to a temporary file beside ``target`` that replaces it only once verified, so a reader
    (another thread, another process sharing the workspace) never sees a partial or a wrong copy.
    """
    digest = hashlib.md5(usedforsecurity=False)  # DVC's content address, not a security hash
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{ref.md5}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != ref.md5:
            raise ArtifactCorrupted(
                f"artifact {ref.path!r} is corrupted in {origin}: expected md5 {ref.md5}, got {actual}",
                md5=ref.md5,
            )
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return target


def _checked_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in path.parts)
        or path.name.endswith(".dvc")
    ):
        raise BadRequest(f"invalid artifact name {name!r}: use a relative path such as 'models/iris/v1/model.skops'")
    return path


def _read_dvc_out(dvc_file: Path) -> dict[str, Any]:
    data = yaml.safe_load(dvc_file.read_text())
    outs = data.get("outs") if isinstance(data, dict) else None
    if not outs or "md5" not in outs[0] or "size" not in outs[0]:
        raise StoreError(f"DVC wrote an unexpected file {dvc_file}: {data!r}")
    return dict(outs[0])
