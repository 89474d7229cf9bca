"""MkDocs hook: write the API's OpenAPI document to docs/reference/openapi.json before every build.

The OpenAPI reference page renders that file, so the site always describes the code it was built from.
The app is only built, never started: no database, broker or store is reached.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import warnings
from pathlib import Path
from typing import Any


def openapi_document() -> dict[str, Any]:
    with warnings.catch_warnings():  # the app's dependencies' deprecation notices are not the docs' business
        warnings.simplefilter("ignore", DeprecationWarning)
        from app.core.config import Settings
        from app.main import create_app

    with tempfile.TemporaryDirectory(prefix="mlmarket-docs-") as data_dir:
        settings = Settings(
            env="development",
            data_dir=Path(data_dir),
            database_url=None,
            broker_url=None,
            s3_bucket=None,
            secret_key=secrets.token_urlsafe(32),
            grpc_port=0,
            api_workers=1,
        )
        return create_app(settings).openapi()


def on_pre_build(config: Any, **_: Any) -> None:
    target = Path(config["docs_dir"]) / "reference" / "openapi.json"
    text = json.dumps(openapi_document(), indent=2) + "\n"
    # Rewrite only on a change: `mkdocs serve` rebuilds whenever a file under docs/ is written.
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
