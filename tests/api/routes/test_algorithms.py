"""GET /api/v1/algorithms: the registry with a JSON schema of each algorithm's hyperparameters."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_algorithms_are_listed_with_their_task_and_hyperparameter_schema(client: TestClient) -> None:
    r = client.get("/api/v1/algorithms")
    assert r.status_code == 200
    by_name = {a["name"]: a for a in r.json()}
    assert set(by_name) == {
        "LinearRegression",
        "Ridge",
        "RandomForestRegressor",
        "GradientBoostingRegressor",
        "LogisticRegression",
        "RandomForestClassifier",
        "KNeighborsClassifier",
        "CatBoostClassifier",
        "CatBoostRegressor",
    }
    ridge = by_name["Ridge"]
    assert ridge["task"] == "regression" and ridge["shardable"] is True
    assert ridge["price_per_1000_rows"] >= 1  # so a client can show what training costs before paying
    assert ridge["hyperparameters"]["properties"]["alpha"]["minimum"] == 0
    assert ridge["hyperparameters"]["properties"]["alpha"]["default"] == 1.0
    assert by_name["GradientBoostingRegressor"]["shardable"] is False
    assert by_name["CatBoostClassifier"]["hyperparameters"]["properties"]["depth"]["maximum"] == 16
    assert client.get("/api/v1/algorithms/KNeighborsClassifier").json()["task"] == "classification"
    assert client.get("/api/v1/algorithms/SVC").status_code == 404
