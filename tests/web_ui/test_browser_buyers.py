"""The buyer's and the administrator's side in a real browser.

Files saved in Latin-1 or UTF-16 are read and sent as UTF-8; the answer comes first in a wide model's results,
and the results CSV keeps rejected rows; the administrator credits a user seeing their balance as it is now,
once per click, under a banner that does not linger; the catalog sorts by use and never shows an email.
"""

from __future__ import annotations

import csv
import io
import random
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.web_ui.browser import open_page, screenshot, settled
from tests.web_ui.conftest import PASSWORD, LiveApi, Person
from tests.web_ui.test_browser_session import fill_sign_in

# A city decides the class: a city read with the wrong encoding is unknown to the model and predicts wrong.
CITIES = {"Z\u00fcrich": "alpine", "Gen\u00e8ve": "lake", "Montr\u00e9al": "river", "S\u00e3o Paulo": "coast"}
NOISE = [f"f{i:02d}" for i in range(1, 25)]  # more inputs than the screen is wide
AUTHOR_NAME = "\u00c9lodie Marchand"


@dataclass(frozen=True)
class WideModel:
    name: str
    author_email: str


def signed_in(page: Any, ui_url: str, person: Person, path: str, heading: str) -> None:
    page.goto(f"{ui_url}/{path}")
    fill_sign_in(page, person.email, person.password)
    page.get_by_role("heading", name=heading).wait_for()
    settled(page)


def _noise(rng: random.Random) -> list[str]:
    return [f"{rng.uniform(0, 1):.3f}" for _ in NOISE]


@pytest.fixture(scope="module")
def wide_model(live_api: LiveApi) -> WideModel:
    """A classifier on a city (a string with accents) and 24 numbers, trained and published by a named author."""
    email = f"author-{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(
        f"{live_api.url}/api/v1/auth/register", json={"email": email, "password": PASSWORD, "full_name": AUTHOR_NAME}
    )
    assert r.status_code == 201, r.text
    token = live_api.token(email, PASSWORD)
    live_api.call(
        "POST", "/wallet/top-ups", token, json={"amount": 100}, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    rng = random.Random(7)
    lines = [",".join(["city", *NOISE, "band"])]
    for i in range(120):
        city = list(CITIES)[i % len(CITIES)]
        lines.append(",".join([city, *_noise(rng), CITIES[city]]))
    data = ("\n".join(lines) + "\n").encode()
    dataset = live_api.call(
        "POST", "/datasets", token, files={"file": ("cities.csv", data, "text/csv")}, data={"target": "band"}
    )
    job = live_api.call(
        "POST", "/training-jobs", token, json={"dataset_id": dataset["id"], "algorithm": "LogisticRegression"}
    )
    deadline = time.monotonic() + 120
    while job["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, "the training job did not finish"
        time.sleep(0.2)
        job = live_api.call("GET", f"/training-jobs/{job['id']}", token)
    assert job["status"] == "succeeded", job
    name = f"wide-{uuid.uuid4().hex[:6]}-test"  # a test model: the catalog shows it last
    live_api.call(
        "POST",
        "/models",
        token,
        json={"training_job_id": job["id"], "name": name, "price_per_row": 1, "description": "The band of a city."},
    )
    return WideModel(name, email)


def open_model(page: Any, ui_url: str, person: Person, model: str) -> None:
    signed_in(page, ui_url, person, "predict", "Predict")
    page.get_by_role("combobox", name="Model").click()
    page.get_by_role("option", name=model).click()
    page.get_by_text("Fill in the model's inputs").wait_for()
    settled(page)


def upload(page: Any, name: str, data: bytes) -> None:
    page.get_by_role("tab", name="A CSV file (batch)").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": name, "mimeType": "text/csv", "buffer": data}
    )


def cities_file(cities: list[str]) -> str:
    rng = random.Random(11)
    return "\n".join([",".join(["city", *NOISE]), *(",".join([c, *_noise(rng)]) for c in cities)]) + "\n"


def downloaded_rows(page: Any) -> list[dict[str, str]]:
    button = page.get_by_role("button", name="Download the results (CSV)")
    button.wait_for()
    settled(page)
    with page.expect_download() as download:
        button.click()
    return list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))


def result_headers(page: Any) -> list[str]:
    """The column headers of the results table drawn on screen, left to right (the grid is a canvas; its hidden
    table, for screen readers, holds the columns in sight)."""
    answer = page.locator("th", has_text=re.compile(r"^\s*prediction\s*$"))
    grid = page.get_by_test_id("stDataFrame").filter(has=answer).first
    grid.locator("th").first.wait_for(state="attached")
    return [h.strip() for h in grid.locator("th").all_inner_texts()]


def test_a_utf16_file_is_read_and_the_results_put_the_answer_first_and_keep_rejected_rows(
    page: Any, ui_url: str, make_person: Any, live_api: LiveApi, wide_model: WideModel
) -> None:
    person: Person = make_person(credits=20)
    open_model(page, ui_url, person, wide_model.name)
    cities = ["Z\u00fcrich", "Gen\u00e8ve", "Montr\u00e9al", "S\u00e3o Paulo", "Montr\u00e9al"]
    text = cities_file(cities).splitlines()
    text[3] = text[3].replace(text[3].split(",")[1], "abc", 1)  # the third row's f01 is not a number
    upload(page, "villes-utf16.csv", ("\n".join(text) + "\n").encode("utf-16"))  # with its byte order mark
    page.get_by_text("Read as UTF-16; it is sent to mlmarket as UTF-8.").wait_for()
    page.get_by_text("Row 3, f01: 'abc' is not a number").wait_for()
    settled(page)
    assert page.get_by_text("is not one of").count() == 0  # every city read right
    screenshot(page, "buyers-01-utf16-file-read-with-a-bad-row")

    page.get_by_role("button", name="Pay 4 credits and predict 4 rows").click()
    page.get_by_text("Done: the prediction succeeded").wait_for()
    settled(page)
    assert page.get_by_test_id("stMetric").filter(has_text="Rows rejected").inner_text().split()[-1] == "1"
    # A wide model's answer is the first column, in sight: the grid lists only the columns drawn on screen,
    # and the last inputs are off to the right.
    headers = result_headers(page)
    assert headers[:3] == ["prediction", "row", "city"] and "f24" not in headers, headers
    page.get_by_text("1 row was rejected and not charged").scroll_into_view_if_needed()
    screenshot(page, "buyers-02-results-answer-first")

    rows = downloaded_rows(page)
    assert [(r["row"], r["status"]) for r in rows] == [(str(n), "rejected" if n == 3 else "ok") for n in range(1, 6)]
    assert "f01" in rows[2]["error"] and rows[2]["prediction"] == ""
    assert all(r["error"] == "" for n, r in enumerate(rows) if n != 2)
    kept = [c for i, c in enumerate(cities) if i != 2]
    assert [r["city"] for r in rows if r["status"] == "ok"] == kept  # sent as UTF-8: the same names come back
    assert [r["prediction"] for r in rows if r["status"] == "ok"] == [CITIES[c] for c in kept]
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 16  # the rejected row is free

    # Opened again from the history, the results read the same way.
    open_page(page, "History")
    page.get_by_role("combobox", name="Prediction").click()
    page.get_by_role("option", name=re.compile(wide_model.name)).click()
    page.get_by_role("button", name="Download the results (CSV)").wait_for()
    settled(page)
    assert result_headers(page)[:3] == ["prediction", "row", "city"]
    assert downloaded_rows(page) == rows


def test_a_latin1_file_is_offered_as_latin1_and_sent_as_utf8(
    page: Any, ui_url: str, make_person: Any, live_api: LiveApi, wide_model: WideModel
) -> None:
    person: Person = make_person(credits=20)
    open_model(page, ui_url, person, wide_model.name)
    cities = list(reversed(CITIES))
    upload(page, "villes.csv", cities_file(cities).encode("latin-1"))
    page.get_by_text("This file is not UTF-8 text.").wait_for()
    settled(page)
    assert page.get_by_role("button", name="Pay").count() == 0  # nothing is sent before the encoding is chosen
    screenshot(page, "buyers-03-latin1-file-asks-for-its-encoding")

    page.get_by_role("combobox", name="File encoding").click()
    assert {"Latin-1 (ISO-8859-1)", "Windows-1252", "UTF-16"} <= set(page.get_by_role("option").all_inner_texts())
    page.get_by_role("option", name="Latin-1 (ISO-8859-1)").click()
    page.get_by_text("Read as Latin-1 (ISO-8859-1); it is sent to mlmarket as UTF-8.").wait_for()
    settled(page)
    assert page.get_by_text("is not one of").count() == 0
    screenshot(page, "buyers-04-latin1-file-read")

    page.get_by_role("button", name="Pay 4 credits and predict 4 rows").click()
    rows = downloaded_rows(page)
    assert [r["city"] for r in rows] == cities
    assert [(r["status"], r["prediction"]) for r in rows] == [("ok", CITIES[c]) for c in cities]
    screenshot(page, "buyers-05-latin1-results")


def test_the_encoding_chosen_for_one_file_is_not_forced_on_the_next(
    page: Any, ui_url: str, make_person: Any, wide_model: WideModel
) -> None:
    open_model(page, ui_url, make_person(credits=20), wide_model.name)
    data = cities_file(list(CITIES))
    upload(page, "villes.csv", data.encode("latin-1"))
    page.get_by_role("combobox", name="File encoding").click()
    page.get_by_role("option", name="Latin-1 (ISO-8859-1)").click()
    page.get_by_text("Read as Latin-1 (ISO-8859-1)").wait_for()
    settled(page)
    upload(page, "villes-utf16.csv", data.encode("utf-16"))
    page.get_by_text("villes-utf16.csv").wait_for()
    settled(page)
    screenshot(page, "buyers-06-next-file-read-in-its-own-encoding")
    assert page.get_by_text("Read as UTF-16").count() == 1
    assert page.get_by_role("button", name="Pay 4 credits and predict 4 rows").is_enabled()


def balance_shown(page: Any) -> str:
    return str(page.get_by_test_id("stMetric").filter(has_text="Their balance now").inner_text().split("\n")[-1])


def test_the_admin_credits_a_user_seeing_their_balance_as_it_is_now_once_per_click(
    page: Any, ui_url: str, make_person: Any, admin: Person, live_api: LiveApi
) -> None:
    user: Person = make_person()
    signed_in(page, ui_url, admin, "admin", "Administration")
    picker = page.get_by_role("combobox", name="User")
    picker.click()
    picker.press_sequentially(user.email)
    page.get_by_role("option", name=user.email, exact=True).click()  # a user without a name goes by email
    page.get_by_test_id("stMetric").filter(has_text="Their balance now").filter(has_text="0 credits").wait_for()
    settled(page)

    # Meanwhile the user tops up in their own session: the admin's next step shows the balance as it is now.
    live_api.call(
        "POST", "/wallet/top-ups", user.token, json={"amount": 30}, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    amount = page.get_by_label("Credits", exact=True)
    amount.fill("50")
    amount.press("Enter")  # Enter confirms the number and credits nobody
    page.get_by_role("button", name="Credit 50 credits").wait_for()
    page.get_by_test_id("stMetric").filter(has_text="30 credits").wait_for()
    settled(page)
    assert balance_shown(page) == "30 credits"
    assert live_api.call("GET", "/wallet", user.token)["balance"] == 30
    screenshot(page, "buyers-07-admin-sees-the-fresh-balance")

    page.get_by_role("button", name="Credit 50 credits").click()
    banner = page.get_by_text(f"Credited 50 credits to {user.email}. Their balance is now 80 credits.")
    banner.wait_for()
    settled(page)
    assert balance_shown(page) == "80 credits"
    assert live_api.call("GET", "/wallet", user.token)["balance"] == 80  # one click, one credit
    screenshot(page, "buyers-08-admin-credited-once")

    # The banner belongs to that credit: the next step clears it, and so does another page.
    page.get_by_label("Memo (optional)").fill("goodwill")
    page.get_by_label("Memo (optional)").press("Tab")
    banner.wait_for(state="detached")
    settled(page)
    assert live_api.call("GET", "/wallet", user.token)["balance"] == 80
    page.get_by_role("button", name="Credit 50 credits").click()
    banner = page.get_by_text(f"Credited 50 credits to {user.email}. Their balance is now 130 credits.")
    banner.wait_for()
    open_page(page, "Wallet")
    open_page(page, "Admin")
    page.get_by_text("Credit a user").wait_for()
    settled(page)
    assert page.get_by_text("Credited 50 credits").count() == 0
    screenshot(page, "buyers-09-admin-banner-gone-after-another-page")
    entries = live_api.call("GET", "/wallet/ledger", user.token)
    assert sorted(int(e["amount"]) for e in entries) == [30, 50, 50]


def test_the_catalog_sorts_by_use_and_shows_no_email(
    page: Any, ui_url: str, make_person: Any, live_api: LiveApi, wide_model: WideModel
) -> None:
    from playwright.sync_api import expect

    from app.services import catalog  # the API runs in this process: its usage counts can be made fresh here
    from tests.web_ui.test_history import SETOSA, predict_and_wait

    buyer: Person = make_person(credits=50)
    catalog.USAGE.forget()
    used = {m["name"]: int(m["predictions"]) for m in live_api.call("GET", "/models", buyer.token)}
    # The iris model, neither first by name nor the newest, becomes the most used, whatever other tests did.
    for _ in range(max(n for name, n in used.items() if name != "iris-logistic") - used["iris-logistic"] + 1):
        assert predict_and_wait(live_api, buyer, "iris-logistic", [SETOSA])["status"] == "succeeded"
    catalog.USAGE.forget()  # counted again now, not up to a minute later

    signed_in(page, ui_url, buyer, "", "Marketplace")
    cards = page.get_by_test_id("stMain").get_by_role("heading", level=3)
    cards.first.wait_for()
    assert cards.first.inner_text().strip() != "iris-logistic"  # recommended: described and scored, then by name
    page.get_by_role("combobox", name="Sort by").click()
    page.get_by_role("option", name="Most used").click()
    expect(cards.first).to_have_text("iris-logistic")
    settled(page)
    names = [n.strip() for n in cards.all_inner_texts()]
    assert names[0] == "iris-logistic" and wide_model.name in names, names
    page.get_by_text(f"By {AUTHOR_NAME} · published").wait_for()
    screenshot(page, "buyers-10-catalog-most-used-first")

    # No author's email anywhere the buyer can read: cards, captions, nor the table of all models.
    page.get_by_text("All models as a table").click()
    page.get_by_test_id("stDataFrame").first.locator("td", has_text=AUTHOR_NAME).first.wait_for(state="attached")
    settled(page)
    main = page.get_by_test_id("stMain")
    shown = main.inner_text() + " ".join(main.locator("td").all_inner_texts())
    assert AUTHOR_NAME in shown and "@" not in shown
    html = page.content()
    assert wide_model.author_email not in html and live_api.admin_email not in html  # the demo models' author
    screenshot(page, "buyers-11-catalog-authors-by-name")
