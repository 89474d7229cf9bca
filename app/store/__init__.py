"""Model artifact store: DVC-tracked files pushed to a local folder or an S3 remote."""

from app.store.base import ArtifactRef, ArtifactStore, file_md5
from app.store.dvc_store import DvcStore
from app.store.remotes import LocalRemoteStore, S3RemoteStore, make_store

__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "DvcStore",
    "LocalRemoteStore",
    "S3RemoteStore",
    "file_md5",
    "make_store",
]
