"""The remotes a :class:`DvcStore` pushes to: a local folder or an S3 bucket, read straight by md5.

DVC and boto3 are imported where they are used: fetch from S3 and check need boto3.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from app.core.config import Settings
from app.core.errors import StoreError
from app.store.base import MD5_PATTERN, ArtifactRef, ArtifactStore
from app.store.content import StoredObject, object_key
from app.store.dvc_store import DvcStore

S3_CONNECT_TIMEOUT_SECONDS = 5
S3_READ_TIMEOUT_SECONDS = 60
PROBE_TIMEOUT_SECONDS = 3
S3_FETCH_ATTEMPTS = 3


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
            return (self.remote_dir / object_key(ref.md5)).open("rb")
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
        (self.remote_dir / object_key(md5)).unlink(missing_ok=True)

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
        key = object_key(md5)
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
