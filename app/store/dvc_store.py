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
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import yaml

from app.core.errors import ArtifactCorrupted, ArtifactMissing, BadRequest, StoreError
from app.store.base import MD5_PATTERN, ArtifactRef, file_md5
from app.store.content import StoredObject, object_key, receive

if TYPE_CHECKING:
    # DVC and boto3 are imported where they are used: put and remove need DVC, fetch from S3 and check need boto3.
    from dvc.repo import Repo

log = logging.getLogger(__name__)

REMOTE_NAME = "store"
ARTIFACTS_DIR = "artifacts"
FETCHED_DIR = "fetched"


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
        cached = self.root / ".dvc" / "cache" / object_key(ref.md5)
        if cached.is_file():
            try:
                with cached.open("rb") as source:
                    return receive(source, target, ref, "this workspace's DVC cache")
            except ArtifactCorrupted:
                cached.unlink(missing_ok=True)  # never pushed again; the remote has the real one
            except OSError:
                pass  # the remote has it too
        try:
            with self._open_remote_object(ref) as source:
                return receive(source, target, ref, self.remote_description)
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
            (self.root / ".dvc" / "cache" / object_key(md5)).unlink(missing_ok=True)
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
