"""The history page: the person's predictions with status, cost, model and time; a filter; opening one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import LiveApi, Person, no_exceptions, texts

SETOSA = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
DIABETES = {name: 0.01 for name in ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")}


def predict_and_wait(live_api: LiveApi, person: Person, model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    accepted = live_api.call("POST", "/predictions", person.token, json={"model": model, "rows": rows})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = live_api.call("GET", f"/predictions/{accepted['id']}", person.token)
        if task["status"] in ("succeeded", "failed"):
            return dict(task)
        time.sleep(0.1)
    pytest.fail(f"prediction {accepted['id']} did not finish")


def test_history_lists_predictions_and_filters_them_by_status(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=20)
    first = predict_and_wait(live_api, person, "iris-logistic", [SETOSA])
    second = predict_and_wait(live_api, person, "diabetes-linear", [DIABETES, DIABETES, DIABETES])
    at = app_as(person, "app_pages/history.py")
    no_exceptions(at)
    table = at.dataframe[0].value
    assert table["id"].tolist() == [second["id"], first["id"]]
    assert table["model"].tolist() == ["diabetes-linear v1", "iris-logistic v1"]
    assert table["status"].tolist() == ["succeeded", "succeeded"]
    assert table["cost"].tolist() == [3, 1]
    assert "4 credits spent on them" in texts(at)

    at.segmented_control(key="history_status").set_value("failed").run()
    no_exceptions(at)
    assert "No failed prediction." in [i.value for i in at.info]
    at.segmented_control(key="history_status").set_value("succeeded").run()
    assert at.dataframe[0].value["id"].tolist() == [second["id"], first["id"]]


def test_opening_a_prediction_shows_its_results(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=5)
    task = predict_and_wait(live_api, person, "iris-logistic", [SETOSA])
    at = app_as(person, "app_pages/history.py")
    at.selectbox(key="history_open").select(task["id"]).run()
    no_exceptions(at)
    assert next(m.value for m in at.metric if m.label == "Prediction") == "setosa"
    assert f"task `{task['id']}`" in texts(at)
    assert at.dataframe[-1].value["prediction"].tolist() == ["setosa"]


def test_an_empty_history_points_to_the_marketplace(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person(), "app_pages/history.py")
    no_exceptions(at)
    assert "You have not made any prediction yet." in [i.value for i in at.info]
