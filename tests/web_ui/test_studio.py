"""The training studio page: upload a dataset, train with a generated hyperparameter form, the report, publishing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import LiveApi, Person, no_exceptions, texts

STUDIO = "app_pages/studio.py"


def flowers_csv(rows: int = 60) -> bytes:
    lines = ["petal,sepal,kind"]
    for i in range(rows):
        kind = ("small", "large")[i % 2]
        lines.append(f"{1 + (i % 2) * 4 + (i % 5) / 10},{2 + (i % 3) / 10},{kind}")
    return ("\n".join(lines) + "\n").encode()


def upload(at: AppTest, data: bytes, target: str | None = "kind") -> AppTest:
    at.file_uploader(key="dataset_file").upload("flowers.csv", data, "text/csv")
    at.run()
    if target is not None:
        at.selectbox(key="dataset_target-flowers.csv").select(target)
    at.button(key="dataset_add").click()
    return at.run()


def test_the_column_to_predict_is_chosen_from_the_files_columns(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person(), STUDIO)
    no_exceptions(at)
    at.file_uploader(key="dataset_file").upload("flowers.csv", b"a,b\n1,2\n", "text/csv")
    at.run()
    no_exceptions(at)
    # The column to predict is chosen from the file's own columns, so it cannot name a missing one.
    assert at.selectbox(key="dataset_target-flowers.csv").options == ["a", "b"]
    assert at.selectbox(key="dataset_target-flowers.csv").value == "b"
    assert at.button(key="dataset_add").label == "Add this dataset"


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
    # The price is on the button: 60 rows are one started block of 1,000 rows.
    assert button_ending(at, "and start training").label == "Pay 10 credits and start training"
    button_ending(at, "and start training").click()
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
    assert [s.value for s in at.success] == [
        f"Published {name} v1 at 2 credits per row. Publishing again under this name would add v2."
    ]
    catalog = {m["name"]: m for m in live_api.call("GET", "/models", person.token)}
    assert catalog[name].get("author_id", person.user["id"]) == person.user["id"]
    assert next(m.value for m in at.metric if m.label == "Published models") == "1"


def button(at: AppTest, label: str) -> Any:
    return next(b for b in at.button if b.label == label)


def button_ending(at: AppTest, words: str) -> Any:
    """A paying button, whose label starts with its price."""
    return next(b for b in at.button if b.label.endswith(words))


def success_texts(at: AppTest) -> list[str]:
    return [str(s.value) for s in at.success]


def trained_job(
    live_api: LiveApi, person: Person, dataset_id: int, algorithm: str = "LogisticRegression"
) -> dict[str, Any]:
    """A model (a LogisticRegression unless told) trained over the API, waited for until it finished."""
    job = live_api.call(
        "POST",
        "/training-jobs",
        person.token,
        json={"dataset_id": dataset_id, "algorithm": algorithm, "hyperparameters": {}},
    )
    deadline = time.monotonic() + 60
    while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = live_api.call("GET", f"/training-jobs/{job['id']}", person.token)
    assert job["status"] == "succeeded", job
    return dict(job)


def api_dataset(live_api: LiveApi, person: Person, name: str = "flowers") -> dict[str, Any]:
    files = {"file": ("flowers.csv", flowers_csv(), "text/csv")}
    return dict(live_api.call("POST", "/datasets", person.token, files=files, data={"target": "kind", "name": name}))


def test_dataset_info_append_reset_trash_restore_and_delete_for_good(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person()
    dataset = api_dataset(live_api, person)
    name = f"flowers (#{dataset['id']})"
    at = app_as(person, STUDIO)
    no_exceptions(at)
    assert at.selectbox(key="dataset_pick").value == dataset["id"]
    assert next(m.value for m in at.metric if m.label == "Rows") == "60"
    assert "Target `kind`" in texts(at)
    columns = next(d.value for d in at.dataframe if "name" in d.value.columns and "petal" in set(d.value["name"]))
    assert set(columns["name"]) == {"petal", "sepal", "kind"}

    # Append a small CSV: a new version with the rows after the others.
    at.file_uploader(key="append_file").upload(
        "more.csv", b"petal,sepal,kind\n1.1,2.0,small\n5.2,2.1,large\n", "text/csv"
    )
    button(at, "Append rows").click()
    at.run()
    no_exceptions(at)
    assert f"Appended 2 rows to {name}: version 2 has 62 rows." in success_texts(at)
    assert live_api.call("GET", f"/datasets/{dataset['id']}", person.token)["rows"] == 62

    # Rows that do not fit are refused with the API's words.
    at.file_uploader(key="append_file").upload("bad.csv", b"colour\nred\n", "text/csv")
    button(at, "Append rows").click()
    at.run()
    no_exceptions(at)
    assert [e.value for e in at.error] == [
        "The rows were not appended. Row 1 has unknown column(s) colour; columns: petal, sepal, kind."
    ]

    at.button(key="dataset_reset").click().run()
    no_exceptions(at)
    assert f"Dataset {name} is back to its first rows as version 3 (60 rows)." in success_texts(at)

    at.button(key="dataset_trash").click().run()
    no_exceptions(at)
    assert live_api.call("GET", f"/datasets/{dataset['id']}", person.token)["deleted"] is True
    assert "This dataset is in the trash" in texts(at)
    at.button(key="dataset_restore").click().run()
    no_exceptions(at)
    assert f"Dataset {name} is back." in success_texts(at)
    assert live_api.call("GET", f"/datasets/{dataset['id']}", person.token)["deleted"] is False

    hard = at.button(key=f"dataset_hard-{dataset['id']}")
    assert hard.disabled  # only after the confirmation
    at.checkbox(key=f"dataset_hard_sure-{dataset['id']}").check().run()
    at.button(key=f"dataset_hard-{dataset['id']}").click().run()
    no_exceptions(at)
    assert f"Dataset {name} is deleted for good." in success_texts(at)
    assert live_api.call("GET", "/datasets?include_deleted=true", person.token) == []
    assert "No dataset yet." in texts(at)


def test_reopen_a_past_training_retrain_it_and_delete_it(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=50)
    first = api_dataset(live_api, person, "flowers")
    other = api_dataset(live_api, person, "flowers-again")
    job = trained_job(live_api, person, first["id"])
    at = app_as(person, STUDIO)  # a new browser session: the report comes from the API, not from this session
    no_exceptions(at)
    assert at.selectbox(key="job_pick").value == job["id"]
    assert any(m.label == "test accuracy" for m in at.metric)
    assert len(at.get("vega_lite_chart")) >= 2  # the confusion matrix and the feature importance
    downloads = {b.label for b in at.get("download_button")}
    assert {"Download the report (PDF)", "Download the trained model (skops)"} <= downloads

    # Retrain on the other dataset with other hyperparameters.
    at.selectbox(key=f"retrain_dataset-{job['id']}").select(other["id"])
    at.text_area(key=f"retrain_params-{job['id']}").input('{"C": 0.5}')
    button_ending(at, "and retrain").click()
    at.run()
    no_exceptions(at)
    jobs = live_api.call("GET", "/training-jobs", person.token)
    new = next(j for j in jobs if j["id"] != job["id"])
    assert (new["retrain_of"], new["dataset_id"], new["hyperparameters"]) == (job["id"], other["id"], {"C": 0.5})
    assert f"Training {new['id'][:8]} started: a retraining of {job['id'][:8]}." in success_texts(at)
    assert at.selectbox(key="job_pick").value == new["id"]  # the new training is opened and followed

    # A hyperparameter the algorithm refuses: the API's words.
    at.text_area(key=f"retrain_params-{new['id']}").input('{"C": -1}')
    button_ending(at, "and retrain").click()
    at.run()
    no_exceptions(at)
    assert [e.value.startswith("The training did not start. ") for e in at.error] == [True]
    at.text_area(key=f"retrain_params-{new['id']}").input("not json")
    button_ending(at, "and retrain").click()
    at.run()
    assert [e.value for e in at.error] == ['The hyperparameters must be a JSON object, like {"n_estimators": 50}.']

    at.button(key="job_trash").click().run()
    no_exceptions(at)
    assert live_api.call("GET", f"/training-jobs/{new['id']}", person.token)["deleted"] is True
    at.button(key="job_restore").click().run()
    no_exceptions(at)
    assert f"Training {new['id'][:8]} is back." in success_texts(at)
    at.checkbox(key=f"job_hard_sure-{new['id']}").check().run()
    at.button(key=f"job_hard-{new['id']}").click().run()
    no_exceptions(at)
    assert f"Training {new['id'][:8]} is deleted for good." in success_texts(at)
    assert [j["id"] for j in live_api.call("GET", "/training-jobs?include_deleted=true", person.token)] == [job["id"]]


def test_unpublish_a_model_after_confirming(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=20)
    job = trained_job(live_api, person, api_dataset(live_api, person)["id"])
    name = f"flowers-{uuid.uuid4().hex[:6]}"
    body = {"training_job_id": job["id"], "name": name, "price_per_row": 1}
    live_api.call("POST", "/models", person.token, json=body)
    at = app_as(person, STUDIO)
    no_exceptions(at)
    assert next(m.value for m in at.metric if m.label == "Published models") == "1"
    assert at.selectbox(key="unpublish_name").value == name
    assert at.button(key="unpublish").disabled
    at.checkbox(key=f"unpublish_sure-{name}").check().run()
    at.button(key="unpublish").click().run()
    no_exceptions(at)
    assert f"{name} is out of the catalog (1 version)." in success_texts(at)
    assert name not in {m["name"] for m in live_api.call("GET", "/models", person.token)}
    assert next(m.value for m in at.metric if m.label == "Published models") == "0"


def test_a_regression_dataset_shows_the_range_of_its_target(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person()
    data = b"size,colour,price\n1,red,10\n2,blue,20.5\n3,red,31\n4,,42\n"
    files = {"file": ("houses.csv", data, "text/csv")}
    live_api.call("POST", "/datasets", person.token, files=files, data={"target": "price"})
    at = app_as(person, STUDIO)
    no_exceptions(at)
    assert "From 10 to 42, mean 25.88" in texts(at)
    assert next(m.value for m in at.metric if m.label == "Task") == "Regression"


def test_a_sharded_training_shows_each_shard(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=20)
    api_dataset(live_api, person)
    at = app_as(person, STUDIO)
    at.selectbox(key="train_algorithm").select("KNeighborsClassifier").run()
    assert not any(n.key == "train_shards-KNeighborsClassifier" for n in at.number_input)  # its shards cannot merge
    at.selectbox(key="train_algorithm").select("RandomForestClassifier").run()
    at.number_input(key="hp-RandomForestClassifier-n_estimators").set_value(10)
    at.number_input(key="train_shards-RandomForestClassifier").set_value(2)
    button_ending(at, "and start training").click()
    at.run()
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert "2 shards" in texts(at)
    shards = next(d.value for d in at.dataframe if "shard" in d.value.columns)
    assert list(shards["shard"]) == [1, 2] and set(shards["status"]) == {"succeeded"}
    assert sum(shards["rows"]) == 48  # the 80 % of 60 rows not held out for testing
    (job,) = live_api.call("GET", "/training-jobs", person.token)
    assert (job["shards"], job["status"]) == (2, "succeeded")


def wider_dataset(live_api: LiveApi, person: Person) -> dict[str, Any]:
    lines = [f"{1.5 + (i % 2) * 4},{2 + (i % 3) / 10},{i % 7 + 0.5},{('small', 'large')[i % 2]}" for i in range(40)]
    wider = ("petal,sepal,stem,kind\n" + "\n".join(lines) + "\n").encode()
    files = {"file": ("wider.csv", wider, "text/csv")}
    return dict(live_api.call("POST", "/datasets", person.token, files=files, data={"target": "kind"}))


def publish_as(at: AppTest, job_id: str, name: str, price: int, description: str = "") -> AppTest:
    """Fills the publish form of a past training and presses "Publish"."""
    at.selectbox(key="job_pick").select(job_id).run()
    at.text_input(key="past_publish_name").input(name)
    at.text_area(key="past_publish_description").input(description)
    at.number_input(key="past_publish_price").set_value(price)
    button(at, "Publish").click()
    return at.run()


def test_publishing_under_a_taken_name_shows_what_changes_and_asks(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=40)
    first = trained_job(live_api, person, api_dataset(live_api, person)["id"])
    name = f"flowers-{uuid.uuid4().hex[:6]}"
    body = {"training_job_id": first["id"], "name": name, "price_per_row": 2, "description": "Small or large"}
    live_api.call("POST", "/models", person.token, json=body)
    second = trained_job(live_api, person, wider_dataset(live_api, person)["id"])

    at = publish_as(app_as(person, STUDIO), second["id"], name, 3)
    no_exceptions(at)
    # Nothing is published yet: the page says what a new version changes and asks.
    assert [v["version"] for v in live_api.call("GET", f"/models/{name}", person.token)["versions"]] == [1]
    warning = next(w.value for w in at.warning if name in w.value)
    assert f"**{name}** is already in the catalog (v1). Publishing adds v2" in warning
    page = texts(at)
    for change in (
        "Input `stem` is new (number)",
        "Price per row changes from 2 credits to 3 credits",
        "The description stays v1's (confirm it below)",
        "The description below is v1's, written for v1: confirm that it describes v2 too, or edit it.",
    ):
        assert change in page, change
    # v1's description is pre-filled (same algorithm), but publishing waits until the author confirms it.
    assert at.text_area(key=f"past_publish_review_description-{second['id']}").value == "Small or large"
    assert at.button(key="past_publish-confirm").disabled
    at.checkbox(key=f"past_publish_description_fits-{second['id']}").check().run()
    assert not at.button(key="past_publish-confirm").disabled
    at.button(key="past_publish-confirm").click().run()
    no_exceptions(at)
    assert success_texts(at) == [
        f"Published {name} v2 at 3 credits per row. Buyers now get v2 by default. "
        "Publishing again under this name would add v3."
    ]
    # The review is gone with its question: nothing on the page still offers to add v2.
    assert not [b.label for b in at.button if b.label.startswith("Publish as")]
    assert "Publishing adds v2" not in texts(at)
    model = live_api.call("GET", f"/models/{name}", person.token)
    assert [v["version"] for v in model["versions"]] == [2, 1]
    assert model["description"] == "Small or large"

    # Publishing again asks about v3.
    button(at, "Publish").click()
    at.run()
    assert f"**{name}** is already in the catalog (v2). Publishing adds v3" in texts(at)
    assert at.button(key="past_publish-confirm").label == "Publish as v3"

    # Both versions stay on sale, and a buyer can pick the older one.
    buyer = app_as(make_person(credits=5), "app_pages/predict.py")
    buyer.selectbox[0].select(name).run()
    version = buyer.selectbox(key=f"version-{name}")
    assert version.options == [
        "v2 (newest) · 3 credits per row · published " + model["created_at"][:10],
        "v1 · 2 credits per row · published " + model["versions"][1]["created_at"][:10],
    ]
    version.select(1).run()
    no_exceptions(buyer)
    assert "Pay 2 credits and predict" in [b.label for b in buyer.button]


def test_another_algorithm_does_not_inherit_the_description(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=40)
    dataset = api_dataset(live_api, person)
    first = trained_job(live_api, person, dataset["id"])
    name = f"flowers-{uuid.uuid4().hex[:6]}"
    body = {"training_job_id": first["id"], "name": name, "price_per_row": 2, "description": "A logistic model"}
    live_api.call("POST", "/models", person.token, json=body)
    forest = trained_job(live_api, person, dataset["id"], algorithm="RandomForestClassifier")

    at = publish_as(app_as(person, STUDIO), forest["id"], name, 2)
    no_exceptions(at)
    page = texts(at)
    assert "Algorithm changes from LogisticRegression to RandomForestClassifier" in page
    assert "v2 needs a description (v1's is not carried over unseen)" in page
    assert "v1's description is not carried over: write one for v2." in page
    assert "A logistic model" in page  # shown for reference, not filled in
    assert at.text_area(key=f"past_publish_review_description-{forest['id']}").value == ""
    assert at.button(key="past_publish-confirm").disabled
    at.text_area(key=f"past_publish_review_description-{forest['id']}").input("A random forest").run()
    assert "The description of v2 is new (below)" in texts(at)
    at.button(key="past_publish-confirm").click().run()
    no_exceptions(at)
    model = live_api.call("GET", f"/models/{name}", person.token)
    assert ([v["version"] for v in model["versions"]], model["description"]) == ([2, 1], "A random forest")


def test_another_authors_name_is_refused_at_once(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=20)
    job = trained_job(live_api, person, api_dataset(live_api, person)["id"])
    at = publish_as(app_as(person, STUDIO), job["id"], "iris-logistic", 3)  # the demo admin's model
    no_exceptions(at)
    assert [e.value for e in at.error] == ["**iris-logistic** belongs to another author; choose another name."]
    # No review, no way to publish under it.
    assert "Publishing adds" not in texts(at)
    assert not [b.label for b in at.button if b.label.startswith("Publish as")]
    assert live_api.call("GET", "/models/iris-logistic", person.token)["author_id"] != person.user["id"]
