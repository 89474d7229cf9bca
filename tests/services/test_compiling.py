"""Compiled models in the catalog: served by onnxruntime when they answer like their pipeline, else by scikit-learn."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.main import create_app
from app.models.catalog import ModelTask, ModelVersion
from app.services import ledger, users
from app.services.demo import demo_models
from tests.conftest import TEST_SECRET
from tests.models import train_and_publish

REPO = Path(__file__).resolve().parents[2]
IRIS = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.8, 5.1, 1.5]])


def _buyer(client: TestClient) -> dict[str, str]:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    client.post("/api/v1/auth/register", json={"email": email, "password": "password-123"})
    token = client.post("/api/v1/auth/token", data={"username": email, "password": "password-123"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    r = client.post(
        "/api/v1/wallet/top-ups", json={"amount": 100}, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert r.status_code == 201
    return headers


def _infer(client: TestClient, headers: dict[str, str], name: str) -> list[Any]:
    body = {"inputs": [{"name": "x", "shape": list(ROWS.shape), "datatype": "FP64", "data": ROWS.ravel().tolist()}]}
    r = client.post(f"/v2/models/{name}/infer", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["outputs"][0]["data"])


def test_a_model_that_does_not_match_is_served_by_its_pipeline(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    iris = next(spec for spec in demo_models() if spec.name == "iris-forest").load_frame()
    # distance-weighted neighbours: the ONNX converter weighs them uniformly, and the parity check catches it
    with Session(engine, expire_on_commit=False) as session:
        author = users.create_user(session, email="knn-author@example.com", password="author-password")
    result, model = train_and_publish(
        engine,
        settings,
        name="iris-knn",
        frame=iris,
        target="species",
        algorithm="KNeighborsClassifier",
        task=ModelTask.classification,
        params={"weights": "distance", "n_neighbors": 7},
        owner_id=author.id,
    )
    assert model.runtime == "sklearn" and model.onnx_md5 is None
    assert model.compile_note and model.compile_note.startswith("served by scikit-learn:")
    assert client.get("/v2/models/iris-knn").json()["platform"] == "mlmarket-sklearn"
    catalog = {m["name"]: m for m in client.get("/api/v1/models").json()}
    assert catalog["iris-knn"]["runtime"] == "sklearn" and catalog["iris-knn"]["compile_note"] == model.compile_note
    expected = result.pipeline.predict(pd.DataFrame(ROWS, columns=IRIS)).tolist()
    assert _infer(client, _buyer(client), "iris-knn") == expected


def test_models_compile_compiles_versions_published_before(
    publish_model: Callable[..., Any],
    trained_demo_models: dict[str, Any],
    engine: Engine,
    database_url: str,
    settings: Settings,
    db_backend: str,
) -> None:
    publish_model("iris-logistic", price=1)
    # On SQLite another process's change is seen when the catalog view expires; PostgreSQL tells at once.
    with TestClient(create_app(settings.model_copy(update={"catalog_cache_seconds": 1.0}))) as client:
        _compile_and_serve(client, trained_demo_models, engine, database_url, settings, db_backend)


def _compile_and_serve(
    client: TestClient,
    trained_demo_models: dict[str, Any],
    engine: Engine,
    database_url: str,
    settings: Settings,
    db_backend: str,
) -> None:
    with engine.begin() as conn:  # as a version published before models were compiled
        conn.execute(
            sa.update(ModelVersion.__table__).values(  # type: ignore[attr-defined]
                runtime="sklearn", onnx_md5=None, onnx_size=None, onnx_path=None, compile_note=None
            )
        )
    buyer = _buyer(client)
    expected = trained_demo_models["iris-logistic"][1].pipeline.predict(pd.DataFrame(ROWS, columns=IRIS)).tolist()
    assert client.get("/v2/models/iris-logistic").json()["platform"] == "mlmarket-sklearn"
    assert _infer(client, buyer, "iris-logistic") == expected

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMARKET_")}
    env.update(
        MLMARKET_DATABASE_URL=database_url, MLMARKET_DATA_DIR=str(settings.data_dir), MLMARKET_SECRET_KEY=TEST_SECRET
    )
    run = subprocess.run(
        [sys.executable, "-m", "app.cli", "models", "compile"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "iris-logistic v1: onnxruntime (compiled to ONNX: labels and probabilities matched" in run.stdout
    # the running API hears of it: the catalog view is dropped, the compiled model served
    if db_backend == "sqlite":
        time.sleep(1.1)
    assert client.get("/v2/models/iris-logistic").json()["platform"] == "mlmarket-onnxruntime"
    assert _infer(client, buyer, "iris-logistic") == expected
    again = subprocess.run(
        [sys.executable, "-m", "app.cli", "models", "compile"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert "nothing to compile" in again.stdout
    with Session(engine) as session:
        assert ledger.verify(session).ok
