"""DVC 3's content-addressed layout, read without DVC: where an object lives, and a verified copy of one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from app.core.errors import ArtifactCorrupted
from app.store.base import ArtifactRef

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """One object of the remote: the md5 it is stored under, its size and when it was written."""

    md5: str
    size: int
    modified: datetime


def object_key(md5: str) -> str:
    """Where DVC 3 keeps the object of ``md5`` in a cache or a remote, relative to its root."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def receive(source: IO[bytes], target: Path, ref: ArtifactRef, origin: str) -> Path:
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
