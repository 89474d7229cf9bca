"""The profile of each feature (its range in the training data and a typical value): inferred from the data,
kept through training (sharded too), publishing and the demo catalogue, and shown in the catalog."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from app.runtime.pipelines import infer_features
from app.runtime.schema import Feature
from app.services.demo import _iris


def by_name(features: list[Feature]) -> dict[str, dict[str, Any]]:
    return {f.name: f.model_dump(exclude_none=True) for f in features}


def test_numbers_get_their_finite_range_and_a_rounded_median_strings_their_most_frequent_value() -> None:
    frame = pd.DataFrame(
        {
            "count": [1, 2, 3, 4, 100, 7],
            "ratio": [1 / 3, np.inf, np.nan, 2 / 3, -np.inf, 0.5],
            "colour": ["red", " blue ", "blue", None, "green", "red "],
            "flag": [True, False, True, True, False, True],
            "empty": [np.nan] * 6,
            "label": [0, 1, 0, 1, 0, 1],
        }
    )
    features = by_name(infer_features(frame, "label"))
    assert features["count"] == {"name": "count", "type": "integer", "minimum": 1, "maximum": 100, "example": 4}
    assert isinstance(features["count"]["example"], int)
    # Infinities are not a range anyone trained on; the median shows 4 significant digits, not 0.5000000001.
    assert features["ratio"] == {"name": "ratio", "type": "number", "minimum": 1 / 3, "maximum": 2 / 3, "example": 0.5}
    assert features["colour"]["categories"] == ["blue", "green", "red"]
    assert features["colour"]["example"] == "blue"  # a tie between blue and red: the first in order
    assert features["flag"]["example"] == "True"
    assert features["empty"] == {"name": "empty", "type": "number"}  # no finite value: no profile


def test_the_iris_profile_and_old_schemas_without_one() -> None:
    features = by_name(infer_features(_iris(), "species"))
    assert features["sepal_length_cm"] == {
        "name": "sepal_length_cm",
        "type": "number",
        "minimum": 4.3,
        "maximum": 7.9,
        "example": 5.8,
    }
    assert features["petal_length_cm"]["example"] == 4.35
    # A version stored before the profile existed reads back with None, and the profile survives JSON.
    old = Feature.model_validate({"name": "x", "type": "number"})
    assert (old.minimum, old.maximum, old.example) == (None, None, None)
    profiled = Feature(name="n", type="integer", minimum=1, maximum=9, example=5)
    stored = Feature.model_validate_json(profiled.model_dump_json())
    assert stored.example == 5 and isinstance(stored.example, int) and stored.maximum == 9.0


def _wait(client: TestClient, path: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        body: dict[str, Any] = client.get(path, headers=headers).json()
        if body["status"] in ("succeeded", "failed"):
            assert body["status"] == "succeeded", body
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_trained_sharded_and_demo_models_show_their_profile_in_the_catalog(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    headers = make_user()
    r = client.post(
        "/api/v1/wallet/top-ups", json={"amount": 100}, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert r.status_code == 201, r.text
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "size": np.round(rng.uniform(2.0, 9.0, 120), 2),
            "rooms": rng.integers(1, 6, 120),
            "town": rng.choice(["north", "south", "south"], 120),
        }
    )
    frame["target"] = np.where(frame["size"] > 5.5, "big", "small")
    csv = frame.to_csv(index=False).encode()
    r = client.post("/api/v1/datasets", files={"file": ("homes.csv", csv, "text/csv")}, headers=headers)
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    bodies = {
        "homes-plain": {"dataset_id": dataset_id, "algorithm": "LogisticRegression"},
        "homes-sharded": {
            "dataset_id": dataset_id,
            "algorithm": "RandomForestClassifier",
            "hyperparameters": {"n_estimators": 5, "random_state": 1},
            "shards": 2,
        },
    }
    for name, body in bodies.items():
        job = client.post("/api/v1/training-jobs", json=body, headers=headers)
        assert job.status_code == 202, job.text
        _wait(client, f"/api/v1/training-jobs/{job.json()['id']}", headers)
        publish = {"training_job_id": job.json()["id"], "name": name, "price_per_row": 1}
        published = client.post("/api/v1/models", json=publish, headers=headers)
        assert published.status_code == 201, published.text
        schema = {f["name"]: f for f in client.get(f"/api/v1/models/{name}").json()["input_schema"]}
        assert schema["size"]["minimum"] == frame["size"].min() and schema["size"]["maximum"] == frame["size"].max()
        assert schema["size"]["example"] == float(f"{frame['size'].median():.4g}")
        assert schema["rooms"]["example"] == round(frame["rooms"].median())
        assert (schema["rooms"]["minimum"], schema["rooms"]["maximum"]) == (1, 5)
        assert schema["town"]["example"] == frame["town"].value_counts().index[0] == "south"
        assert schema["town"]["minimum"] is None and schema["town"]["categories"] == ["north", "south"]

    publish_model("iris-logistic")
    listed = {m["name"]: m for m in client.get("/api/v1/models").json()}
    iris = {f["name"]: f for f in listed["iris-logistic"]["input_schema"]}
    assert (iris["sepal_length_cm"]["minimum"], iris["sepal_length_cm"]["maximum"]) == (4.3, 7.9)
    assert iris["sepal_length_cm"]["example"] == 5.8


def test_a_stored_schema_with_fields_of_a_newer_release_is_still_served() -> None:
    """During a rolling upgrade an older release reads schemas a newer one wrote: unknown fields are ignored."""
    from app.runtime.schema import Feature

    feature = Feature.model_validate({"name": "x", "type": "number", "minimum": 1.0, "quantiles": [1, 2, 3]})
    assert feature.name == "x" and feature.minimum == 1.0
    assert "quantiles" not in feature.model_dump()
