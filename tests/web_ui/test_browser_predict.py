"""Predicting in a real browser: each submission replaces the last result, files are checked before paying,
and the results CSV keeps every row with its status and reason."""

from __future__ import annotations

import csv
import io
from typing import Any

from tests.web_ui.browser import IRIS_HEADER, screenshot, settled
from tests.web_ui.conftest import PASSWORD, LiveApi, Person
from tests.web_ui.test_browser_session import fill_sign_in

SETOSA = ("5.1", "3.5", "1.4", "0.2")
VIRGINICA = ("6.7", "3.0", "5.2", "2.3")


def open_iris(page: Any, ui_url: str, person: Person) -> None:
    page.goto(f"{ui_url}/predict")
    fill_sign_in(page, person.email, PASSWORD)
    page.get_by_role("heading", name="Predict").wait_for()
    settled(page)
    page.get_by_role("combobox", name="Model").click()
    page.get_by_role("option", name="iris-logistic").click()
    page.get_by_text("Fill in the model's inputs").wait_for()
    settled(page)


def predict_one(page: Any, values: tuple[str, ...]) -> None:
    for feature, value in zip(IRIS_HEADER.split(","), values, strict=True):
        page.get_by_label(feature).fill(value)
    page.get_by_role("button", name="Pay 1 credit and predict").click()


def test_each_submission_replaces_the_last_result(page: Any, ui_url: str, make_person: Any, live_api: LiveApi) -> None:
    person: Person = make_person(credits=3)
    open_iris(page, ui_url, person)
    predict_one(page, SETOSA)
    page.get_by_text("Done: the prediction succeeded").wait_for()
    settled(page)
    first_task = page.get_by_text("· task ").inner_text()

    predict_one(page, VIRGINICA)
    page.get_by_test_id("stMetric").filter(has_text="virginica").wait_for()
    settled(page)
    shown = page.get_by_test_id("stMetric").filter(has_text="Prediction").all_inner_texts()
    assert [text.split() for text in shown] == [["Prediction", "virginica"]]
    captions = page.get_by_text("· task ").all_inner_texts()
    assert len(captions) == 1 and captions != [first_task]
    screenshot(page, "predict-01-second-result-replaces-the-first")

    # Another tab spends the last credit: the click pays nothing and the page says why.
    rows = [{name: float(v) for name, v in zip(IRIS_HEADER.split(","), SETOSA, strict=True)}]
    live_api.call("POST", "/predictions", person.token, json={"model": "iris-logistic", "rows": rows})
    predict_one(page, SETOSA)
    page.get_by_text("Your balance (0 credits) is 1 credit short of this prediction.").wait_for()
    settled(page)
    assert page.get_by_role("button", name="Pay 1 credit and predict").is_disabled()
    assert len(live_api.call("GET", "/predictions", person.token)) == 3
    screenshot(page, "predict-02-short-balance-before-paying")


def upload(page: Any, name: str, data: bytes) -> None:
    page.get_by_role("tab", name="A CSV file (batch)").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": name, "mimeType": "text/csv", "buffer": data}
    )


def test_a_file_is_checked_before_paying_and_the_results_keep_rejected_rows(
    page: Any, ui_url: str, make_person: Any
) -> None:
    open_iris(page, ui_url, make_person(credits=5))
    upload(page, "bare.csv", b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    page.get_by_text("The first line holds values, not column names.").wait_for()
    assert page.get_by_role("button", name="Pay and predict").is_disabled()
    screenshot(page, "predict-03-file-without-a-header")

    # Latin-1 text is refused as UTF-8, then read once its encoding is chosen.
    latin = f"{IRIS_HEADER}\n5.1,3.5,1.4,0.2\nabc,3.0,1.0,0.2\n6.7,3.0,5.2,2.3\n\u00e9,1,1,1\n".encode("latin-1")
    upload(page, "caf\u00e9.csv", latin)
    page.get_by_text("This file is not UTF-8 text.").wait_for()
    page.get_by_role("combobox", name="File encoding").click()
    page.get_by_role("option", name="Latin-1 (ISO-8859-1)").click()
    page.get_by_text("Read as Latin-1 (ISO-8859-1)").wait_for()
    page.get_by_text("Row 2, sepal_length_cm: 'abc' is not a number").wait_for()
    page.get_by_text("Row 4, sepal_length_cm: '\u00e9' is not a number").wait_for()
    grid = page.get_by_test_id("stDataFrame").first
    grid.locator("td", has_text="'abc' is not a number").first.wait_for(state="attached")
    screenshot(page, "predict-04-bad-cells-highlighted-before-paying")

    page.get_by_role("button", name="Pay 2 credits and predict 2 rows").click()
    page.get_by_role("button", name="Download the results (CSV)").wait_for()
    settled(page)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the results (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert [(r["row"], r["status"]) for r in rows] == [("1", "ok"), ("2", "rejected"), ("3", "ok"), ("4", "rejected")]
    assert "must be a finite number" in rows[1]["error"] and rows[0]["error"] == ""
    assert [r["prediction"] for r in rows if r["status"] == "ok"] == ["setosa", "virginica"]
    screenshot(page, "predict-05-results-with-rejected-rows")
