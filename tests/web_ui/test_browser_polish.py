"""Details a person notices in a real browser: a classifier's chart has one bar per class even when its classes
are numbers, a reload (or a shared link, through the sign-in) opens the same model and the same prediction, the
wallet's time axis never repeats a label, and number fields show numbers as typed."""

from __future__ import annotations

import csv
import io
import itertools
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sklearn.datasets import load_wine

from tests.web_ui.browser import IRIS_HEADER, screenshot, settled
from tests.web_ui.conftest import PASSWORD, LiveApi, Person
from tests.web_ui.test_browser_session import cookie_once_set, fill_sign_in
from web_ui.utils import browser_session

WINE_ROWS = [0, 1, 60, 61, 130, 131]  # two rows of each cultivar 0, 1 and 2
IRIS_ROWS = [
    (5.1, 3.5, 1.4, 0.2),
    (4.9, 3.0, 1.4, 0.2),
    (6.4, 3.2, 4.5, 1.5),
    (6.7, 3.0, 5.2, 2.3),
    (6.3, 3.3, 6.0, 2.5),
]
AS_TYPED = re.compile(r"-?\d+(\.\d*[1-9])?")  # 98, 2.36, 0.3: no padding zeros


def _wait(live_api: LiveApi, token: str, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        item: dict[str, Any] = live_api.call("GET", path, token)
        if item["status"] in ("succeeded", "failed"):
            return item
        assert time.monotonic() < deadline, f"{path} did not finish"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def wine(live_api: LiveApi) -> str:
    """A classifier whose classes are the numbers 0, 1 and 2 (sklearn's wine cultivars), published twice."""
    email = f"wine-{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(f"{live_api.url}/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    token = live_api.token(email, PASSWORD)
    live_api.call("POST", "/wallet/top-ups", token, json={"amount": 100}, headers={"Idempotency-Key": uuid.uuid4().hex})
    data = load_wine(as_frame=True).frame.to_csv(index=False).encode()
    dataset = live_api.call(
        "POST", "/datasets", token, files={"file": ("wine.csv", data, "text/csv")}, data={"target": "target"}
    )
    job = live_api.call(
        "POST", "/training-jobs", token, json={"dataset_id": dataset["id"], "algorithm": "LogisticRegression"}
    )
    assert _wait(live_api, token, f"/training-jobs/{job['id']}")["status"] == "succeeded"
    name = f"wine-{uuid.uuid4().hex[:6]}"
    for price in (1, 2):  # version 1 at 1 credit a row, version 2 at 2
        live_api.call(
            "POST", "/models", token, json={"training_job_id": job["id"], "name": name, "price_per_row": price}
        )
    return name


def signed_in_at(page: Any, ui_url: str, person: Person, address: str, heading: str) -> None:
    """Opens ``address`` signed out, signs in there, and waits for the page after the cookie's round trip."""
    page.goto(f"{ui_url}/{address}")
    page.get_by_role("tab", name="Sign in").wait_for()
    fill_sign_in(page, person.email, PASSWORD)
    assert cookie_once_set(page) is not None
    page.wait_for_load_state()
    page.get_by_role("heading", name=heading).wait_for()
    settled(page)


def combobox_text(page: Any, name: str) -> str:
    """What a select box shows as chosen (the text of its combobox field)."""
    return str(page.get_by_role("combobox", name=name).input_value()).strip()


def choose(page: Any, box: str, option: re.Pattern[str]) -> None:
    """Picks an option of a select box, opening it again if a rerun closed it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    settled(page)
    for attempt in range(3):
        page.get_by_role("combobox", name=box).click()
        try:
            page.get_by_role("option", name=option).click(timeout=5_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
            settled(page)


def class_chart(page: Any) -> Any:
    return page.get_by_test_id("stVegaLiteChart").filter(has=page.get_by_label("Title text 'Predicted classes'"))


def class_bars(page: Any) -> list[tuple[str, float]]:
    """Each bar of the "Predicted classes" chart: its class and its height on screen (the chart is SVG with one
    labelled element per bar)."""
    bars = class_chart(page).locator('[aria-roledescription="bar"]')
    bars.first.wait_for()
    found = []
    for index in range(bars.count()):
        label = str(bars.nth(index).get_attribute("aria-label"))
        match = re.search(r"(?:class|prediction): ([^;]+)", label)
        assert match, label
        found.append((match.group(1).strip(), float(bars.nth(index).bounding_box()["height"])))
    return found


def axis_labels(axis: Any, title: str | None = None) -> list[tuple[str, dict[str, float]]]:
    """The tick labels of a chart axis (its title left out), with their boxes on screen."""
    axis.wait_for()
    texts = axis.locator("text")
    shown = []
    for index in range(texts.count()):
        text = str(texts.nth(index).text_content()).strip()
        if text and text != title:
            shown.append((text, texts.nth(index).bounding_box()))
    return shown


def apart(boxes: list[tuple[float, float]]) -> bool:
    """Whether intervals on one axis (start, end) do not overlap."""
    ordered = sorted(boxes)
    return all(first[1] <= second[0] + 0.5 for first, second in itertools.pairwise(ordered))


def results_predictions(page: Any) -> list[str]:
    button = page.get_by_role("button", name="Download the results (CSV)")
    button.wait_for()
    settled(page)
    with page.expect_download() as download:
        button.click()
    rows = csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8")))
    return [r["prediction"] for r in rows if r["status"] == "ok"]


def test_numbered_classes_get_a_bar_each_and_a_link_or_reload_keeps_the_model(
    page: Any, ui_url: str, make_person: Any, wine: str
) -> None:
    # A link to version 1 of the model, opened signed out: the sign-in leads to that model and version.
    signed_in_at(page, ui_url, make_person(credits=40), f"predict?model={wine}&version=1", "Predict")
    assert combobox_text(page, "Model").startswith(f"{wine} · Classification")
    assert combobox_text(page, "Version").startswith("v1 ")
    page.get_by_test_id("stNumberInputField").nth(12).wait_for()  # the form is drawn after the model's header
    settled(page)
    values = page.get_by_test_id("stNumberInputField").evaluate_all("fields => fields.map(f => f.value)")
    assert len(values) == 13 and all(AS_TYPED.fullmatch(v) for v in values), values
    screenshot(page, "polish-01-link-opens-the-model-after-signing-in")

    frame = load_wine(as_frame=True).frame
    data = frame.drop(columns="target").iloc[WINE_ROWS].to_csv(index=False).encode()
    page.get_by_role("tab", name="A CSV file (batch)").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": "wine.csv", "mimeType": "text/csv", "buffer": data}
    )
    page.get_by_role("button", name="Pay 6 credits and predict 6 rows").click()
    predicted = results_predictions(page)
    bars = class_bars(page)
    assert sorted(name for name, _ in bars) == sorted(set(predicted)) and len(bars) >= 2
    assert all(height >= 14 for _, height in bars), bars  # bars a person can see
    assert page.get_by_label("Title text 'Distribution of the predictions'").count() == 0
    # The class names on separate lines, not printed over each other.
    names = axis_labels(class_chart(page).get_by_label(re.compile("^Y-axis")))
    assert sorted(text for text, _ in names) == sorted(name for name, _ in bars), names
    assert apart([(box["y"], box["y"] + box["height"]) for _, box in names]), names
    page.get_by_test_id("stVegaLiteChart").last.scroll_into_view_if_needed()
    screenshot(page, "polish-02-numbered-classes-one-bar-each")

    # Version 2 chosen, then a reload: the same model and version are open.
    choose(page, "Version", re.compile(r"^v2 "))
    page.wait_for_url(re.compile(r"version=2"))
    settled(page)
    page.reload()
    page.get_by_role("heading", name="Predict").wait_for()
    settled(page)
    assert combobox_text(page, "Model").startswith(f"{wine} · ")
    assert combobox_text(page, "Version").startswith("v2 ")
    screenshot(page, "polish-03-reload-keeps-the-model-and-version")


def test_a_reload_or_a_link_keeps_the_opened_prediction(
    page: Any, ui_url: str, make_person: Any, live_api: LiveApi, browser: Any
) -> None:
    person: Person = make_person(credits=20)
    rows = [dict(zip(IRIS_HEADER.split(","), values, strict=True)) for values in IRIS_ROWS]
    iris = live_api.call("POST", "/predictions", person.token, json={"model": "iris-logistic", "rows": rows})
    assert _wait(live_api, person.token, f"/predictions/{iris['id']}")["status"] == "succeeded"
    one = live_api.call("POST", "/predictions", person.token, json={"model": "iris-logistic", "rows": rows[:1]})
    assert _wait(live_api, person.token, f"/predictions/{one['id']}")["status"] == "succeeded"

    signed_in_at(page, ui_url, person, "history", "History")
    choose(page, "Prediction", re.compile("5 credits"))
    page.wait_for_url(re.compile(f"prediction={iris['id']}"))
    page.locator("code", has_text=str(iris["id"])).wait_for()
    bars = class_bars(page)
    assert len(bars) == 3 and all(height >= 14 for _, height in bars), bars  # setosa, versicolor, virginica
    settled(page)
    page.reload()
    page.get_by_role("heading", name="History").wait_for()
    page.locator("code", has_text=str(iris["id"])).wait_for()
    settled(page)
    assert "5 credits" in combobox_text(page, "Prediction")
    assert len(class_bars(page)) == 3
    screenshot(page, "polish-04-reload-keeps-the-opened-prediction")

    # The address, shared with a browser that is not signed in, opens the same prediction after signing in.
    address = page.url.removeprefix(f"{ui_url}/")
    other = browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        fresh = other.new_page()
        signed_in_at(fresh, ui_url, person, address, "History")
        fresh.locator("code", has_text=str(iris["id"])).wait_for()
        assert "5 credits" in combobox_text(fresh, "Prediction")
        screenshot(fresh, "polish-05-shared-link-opens-the-prediction")
    finally:
        other.close()


def test_the_wallet_time_axis_has_distinct_labels(page: Any, ui_url: str, make_person: Any, live_api: LiveApi) -> None:
    person: Person = make_person(credits=50)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    live_api.call("POST", "/wallet/top-ups", person.token, json={"amount": 5}, headers=key)
    signed_in_at(page, ui_url, person, "wallet", "Wallet")
    labels = axis_labels(page.get_by_label(re.compile("^X-axis titled 'time \\(UTC\\)'")), "time (UTC)")
    texts = [text for text, _ in labels]
    assert len(texts) >= 2 and len(set(texts)) == len(texts), texts
    assert all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", t) for t in texts), texts  # times within a day, no date
    assert apart([(box["x"], box["x"] + box["width"]) for _, box in labels]), labels
    screenshot(page, "polish-06-wallet-axis-distinct-labels")


def test_the_sign_in_trip_keeps_the_query_of_the_page_asked_for() -> None:
    def next_of(url: str) -> str:
        return parse_qs(urlsplit(url).query)["next"][0]

    assert next_of(browser_session.start_url("code", "/predict", "model=wine+red&version=1")) == (
        "/predict?model=wine+red&version=1"
    )
    assert next_of(browser_session.start_url("code", "/history")) == "/history"  # no page run: no query
    assert next_of(browser_session.start_url("code", "//elsewhere.example", "a=1")) == "/?a=1"
