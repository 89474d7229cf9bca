"""The training studio page: upload a dataset, train with a generated hyperparameter form, the report, publishing."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import LiveApi, Person, no_exceptions, texts

STUDIO = "app_pages/studio.py"


def flowers_csv(rows: int = 60) -> bytes:
    lines = ["petal,sepal,kind"]
    for i in range(rows):
        kind = ("small", "large")[i % 2]
        lines.append(f"{1 + (i % 2) * 4 + (i % 5) / 10},{2 + (i % 3) / 10},{kind}")
    return ("\n".join(lines) + "\n").encode()


def upload(at: AppTest, data: bytes, target: str = "kind") -> AppTest:
    at.file_uploader(key="dataset_file").upload("flowers.csv", data, "text/csv")
    at.text_input(key="dataset_target").input(target)
    next(b for b in at.button if b.label == "Upload").click()
    return at.run()


def test_a_dataset_without_its_target_shows_the_apis_message(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person(), STUDIO)
    no_exceptions(at)
    upload(at, b"a,b\n1,2\n", target="kind")
    no_exceptions(at)
    assert [e.value for e in at.error] == ["The dataset was not accepted: csv must contain target column"]


def test_upload_train_read_the_report_and_publish(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=50)
    at = app_as(person, STUDIO)
    upload(at, flowers_csv())
    no_exceptions(at)
    assert any("60 rows, 3 columns, a classification task on 'kind'" in s.value for s in at.success)

    at.selectbox(key="train_algorithm").select("RandomForestClassifier").run()
    # The form comes from the algorithm's JSON schema: an integer with its default, a nullable seed.
    assert at.number_input(key="hp-RandomForestClassifier-n_estimators").value == 100
    at.number_input(key="hp-RandomForestClassifier-n_estimators").set_value(10)
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    no_exceptions(at)
    assert "succeeded" in texts(at)
    assert next(m.value for m in at.metric if m.label == "Cost") == "10 credits"
    assert any(m.label == "test accuracy" for m in at.metric)
    assert "Download the report (PDF)" in [b.label for b in at.get("download_button")]
    jobs = live_api.call("GET", "/training-jobs", person.token)
    assert [j["hyperparameters"].get("n_estimators") for j in jobs] == [10]

    name = f"flowers-{uuid.uuid4().hex[:6]}"
    at.text_input(key="publish_name").input(name)
    at.text_area(key="publish_description").input("Small or large flowers")
    at.number_input(key="publish_price").set_value(2)
    next(b for b in at.button if b.label == "Publish").click()
    at.run()
    no_exceptions(at)
    assert f"Published {name} v1 at 2 credits per row." in [s.value for s in at.success]
    catalog = {m["name"]: m for m in live_api.call("GET", "/models", person.token)}
    assert catalog[name]["owner"] == person.email
    assert next(m.value for m in at.metric if m.label == "Published models") == "1"
