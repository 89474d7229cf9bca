"""The artifact store interface: content-addressed model files, identified by their md5.

A model version in the catalog records an :class:`ArtifactRef`. Any process that
shares the store's remote can fetch the artifact by that reference alone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

MD5_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact lives: its md5 and size (from its ``.dvc`` file) and its logical name in the store."""

    md5: str
    size: int
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {"md5": self.md5, "size": self.size, "path": self.path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRef:
        return cls(md5=str(data["md5"]), size=int(data["size"]), path=str(data["path"]))


@runtime_checkable
class ArtifactStore(Protocol):
    def put(self, local_file: Path, name: str) -> ArtifactRef:
        """Track ``local_file`` under ``name`` and push it to the remote."""
        ...

    def fetch(self, ref: ArtifactRef) -> Path:
        """A local copy of the artifact whose md5 has been checked against ``ref.md5``."""
        ...

    def check(self) -> None:
        """Raise :class:`app.core.errors.StoreError` when the remote cannot be reached."""
        ...

    def remove(self, ref: ArtifactRef) -> None:
        """Delete the artifact from the workspace, the cache and the remote (for a hard delete)."""
        ...


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # DVC's content address, not a security hash
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
