"""The predict form in a real browser: fields start at typical values with the range the model was trained on, a
value far outside that range is paid for only once "Predict anyway" is ticked, and a classifier's answer shows
each class's probability."""

from __future__ import annotations

from typing import Any

from tests.web_ui.browser import IRIS_HEADER, screenshot, settled
from tests.web_ui.conftest import LiveApi, Person
from tests.web_ui.test_browser_predict import open_iris

EN_DASH = "\N{EN DASH}"
PAY = "Pay 1 credit and predict"


def balance(live_api: LiveApi, person: Person) -> int:
    return int(live_api.call("GET", "/wallet", person.token)["balance"])


def type_value(page: Any, feature: str, value: str) -> None:
    """Types a value and leaves the field, as a person does: the page then checks it."""
    field = page.get_by_label(feature)
    field.fill(value)
    field.press("Tab")
    settled(page)


def test_the_form_starts_at_typical_values_and_shows_the_training_range(
    page: Any, ui_url: str, make_person: Any
) -> None:
    open_iris(page, ui_url, make_person(credits=2))
    values = [page.get_by_label(feature).input_value() for feature in IRIS_HEADER.split(",")]
    assert [float(v) for v in values] == [5.8, 3.0, 4.35, 1.3]  # the medians of the iris data
    for seen in (f"4.3 {EN_DASH} 7.9", f"2 {EN_DASH} 4.4", f"1 {EN_DASH} 6.9", f"0.1 {EN_DASH} 2.5"):
        page.get_by_text(f"Seen in training: {seen}", exact=True).wait_for()
    assert page.get_by_role("checkbox", name="Predict anyway").count() == 0
    assert page.get_by_role("button", name=PAY).is_enabled()
    screenshot(page, "profile-01-form-starts-at-typical-values")


def test_a_value_far_outside_the_range_is_charged_only_once_confirmed(
    page: Any, ui_url: str, make_person: Any, live_api: LiveApi
) -> None:
    from playwright.sync_api import expect  # here: without Playwright the browser tests are skipped, not broken

    person: Person = make_person(credits=3)
    open_iris(page, ui_url, person)
    type_value(page, "petal_width_cm", "1e308")
    warning = page.get_by_test_id("stAlertContentWarning").filter(has_text="petal_width_cm")
    warning.wait_for()
    assert f"1e+308 is far outside the values seen in training (the model was trained on 0.1 {EN_DASH} 2.5)" in (
        warning.inner_text()
    )
    pay = page.get_by_role("button", name=PAY)
    assert pay.is_disabled()
    pay.click(force=True)  # a disabled button: the click does nothing
    settled(page)
    assert balance(live_api, person) == 3 and live_api.call("GET", "/predictions", person.token) == []
    screenshot(page, "profile-02-far-outside-the-range-is-warned")

    # 1000 is doubtful too: the tick is for these values, and only then does the button pay.
    type_value(page, "petal_width_cm", "1000")
    page.get_by_test_id("stAlertContentWarning").filter(has_text="1000 is far outside").wait_for()
    anyway = page.get_by_role("checkbox", name="Predict anyway")
    assert not anyway.is_checked() and pay.is_disabled()
    page.get_by_test_id("stCheckbox").get_by_text("Predict anyway").click()
    expect(anyway).to_be_checked()
    expect(pay).to_be_enabled()  # once the page has run again with the tick
    settled(page)
    screenshot(page, "profile-03-predict-anyway-ticked")
    pay.click()
    page.get_by_text("Done: the prediction succeeded").wait_for()
    settled(page)
    assert balance(live_api, person) == 2
    tasks = live_api.call("GET", "/predictions", person.token)
    assert len(tasks) == 1 and tasks[0]["cost"] == 1
    screenshot(page, "profile-04-paid-after-confirming")


def test_a_classifier_result_shows_class_probabilities(
    page: Any, ui_url: str, make_person: Any, live_api: LiveApi
) -> None:
    person: Person = make_person(credits=2)
    open_iris(page, ui_url, person)
    for feature, value in zip(IRIS_HEADER.split(","), ("6.7", "3.0", "5.2", "2.3"), strict=True):
        type_value(page, feature, value)
    page.get_by_role("button", name=PAY).click()
    page.get_by_test_id("stMetric").filter(has_text="virginica").wait_for()
    settled(page)
    answer = live_api.call(
        "GET", f"/predictions/{live_api.call('GET', '/predictions', person.token)[0]['id']}", person.token
    )
    bars = page.locator(".st-key-class-probabilities [data-testid='stProgress']")
    bars.first.wait_for()
    shown = [text.strip() for text in bars.all_inner_texts()]
    labels = [text.split(":")[0] for text in shown]
    shares = [float(text.split(": ")[1].rstrip("%")) for text in shown]
    assert labels[0] == "virginica" and sorted(labels) == answer["classes"] == ["setosa", "versicolor", "virginica"]
    assert shares == sorted(shares, reverse=True) and abs(sum(shares) - 100) < 0.5
    page.get_by_text("Class probabilities", exact=True).scroll_into_view_if_needed()
    screenshot(page, "profile-05-class-probabilities")


def test_a_csv_reports_cells_far_outside_the_range_as_a_warning(page: Any, ui_url: str, make_person: Any) -> None:
    open_iris(page, ui_url, make_person(credits=5))
    page.get_by_role("tab", name="A CSV file (batch)").click()
    data = f"{IRIS_HEADER}\n5.1,3.5,1.4,0.2\n1000,3.0,5.2,2.3\n".encode()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": "flowers.csv", "mimeType": "text/csv", "buffer": data}
    )
    page.get_by_text("1 cell is far outside the values the model was trained on").wait_for()
    page.get_by_text("Row 2, sepal_length_cm: 1000 is far outside the values seen in training").wait_for()
    assert page.get_by_role("button", name="Pay 2 credits and predict 2 rows").is_enabled()
    screenshot(page, "profile-06-csv-cells-far-outside-the-range")
