"""The training studio in a real browser, from the author's side: adding a dataset, the price before paying,
the report and its PDF, a second training replacing the first on screen, and publishing a new version under a
name already in the catalog.

Each journey asserts what a person sees and keeps screenshots named studio-NN-… in test-artifacts/screenshots/.
"""

from __future__ import annotations

import io
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

from playwright.sync_api import expect

from tests.web_ui.browser import SCREENSHOTS, open_page, settled, sign_in, sign_out
from tests.web_ui.conftest import LiveApi, Person
from tests.web_ui.test_studio import trained_job

TARGET = "cultivar"
TRAINING_WAIT_MS = 60_000


def wine_frame() -> Any:
    """sklearn's wine data (178 rows, 13 measurements) with the cultivar first, so it has to be picked."""
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.frame.drop(columns=["target"])
    frame = frame.rename(columns=lambda c: re.sub(r"[^a-z0-9]+", "_", str(c).lower()).strip("_"))
    frame.insert(0, TARGET, [("barolo", "grignolino", "barbera")[int(t)] for t in wine.target])
    return frame


def wine_csv(drop: tuple[str, ...] = ()) -> bytes:
    return bytes(wine_frame().drop(columns=list(drop)).to_csv(index=False).encode())


def api_wine_dataset(live_api: LiveApi, person: Person, name: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    files = {"file": (f"{name}.csv", wine_csv(drop), "text/csv")}
    return dict(live_api.call("POST", "/datasets", person.token, files=files, data={"target": TARGET, "name": name}))


def active_tab(page: Any) -> Any:
    """The studio tab on screen (the others stay in the page, hidden)."""
    return page.locator('[data-testid="stTabPanel"]:not([data-st-inactive])')


def open_tab(page: Any, name: str) -> Any:
    page.get_by_role("tab", name=name, exact=True).click()
    settled(page)
    return active_tab(page)


def snap(page: Any, name: str, element: Any | None = None) -> None:
    """A screenshot of what is on screen, scrolled to ``element``, once its charts and tables are drawn.

    Streamlit draws Vega charts as SVG and tables on a canvas; only those in sight are waited for.
    """
    if element is not None:
        element.scroll_into_view_if_needed()
    settled(page)
    height = page.viewport_size["height"]
    for selector, drawn in (("stVegaLiteChart", "svg.marks"), ("stDataFrame", "canvas")):
        found = page.get_by_test_id(selector)
        for index in range(found.count()):
            box = found.nth(index).bounding_box() if found.nth(index).is_visible() else None
            if box and box["y"] < height and box["y"] + box["height"] > 0:
                found.nth(index).locator(drawn).first.wait_for()
    page.wait_for_timeout(300)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def chart_words(chart: Any) -> list[str]:
    """The words a Vega chart shows (axis labels, titles), from its SVG; labels it hid for lack of room are left
    out."""
    chart.locator("svg.marks").first.wait_for()
    shown = chart.locator('svg.marks text:not([opacity="0"])').all_text_contents()
    return [t.strip() for t in shown if t.strip()]


def attributes(found: Any, name: str) -> list[str | None]:
    return list(found.evaluate_all(f"es => es.map(e => e.getAttribute({name!r}))"))


def slanted(chart: Any) -> list[str]:
    """The axis labels of a chart that are not written across."""
    labels = chart.locator(".role-axis-label text")
    turned = attributes(labels, "transform")
    return [t for t, how in zip(labels.all_text_contents(), turned, strict=True) if "rotate" in (how or "")]


def button_labels(area: Any) -> list[str]:
    """The words on the buttons of ``area`` (not their icons)."""
    return [t.strip() for t in area.locator('button [data-testid="stMarkdownContainer"]').all_inner_texts()]


def grid_cells(page: Any) -> list[str]:
    grid = page.get_by_test_id("stDataFrame").first
    grid.locator("td").first.wait_for(state="attached")
    return [c.strip() for c in grid.locator("td").all_inner_texts()]


def training_price(live_api: LiveApi, person: Person, algorithm: str, rows: int) -> int:
    """What the API charges for ``rows`` rows: its price per started 1,000 rows."""
    algorithms = {a["name"]: a for a in live_api.call("GET", "/algorithms", person.token)}
    return max(1, -(-rows // 1000)) * int(algorithms[algorithm]["price_per_1000_rows"])


def credits(n: int) -> str:
    return f"{n} credit{'s' if n != 1 else ''}"


def test_an_author_adds_a_dataset_trains_at_the_price_shown_and_reads_the_report(
    page: Any, live_api: LiveApi, make_person: Any
) -> None:
    person: Person = make_person(credits=50)
    sign_in(page, person.email, person.password)
    open_page(page, "Training studio")

    # One way to upload, and the limit the API really has (not Streamlit's default 200MB).
    adding = (
        active_tab(page).locator('[data-testid="stVerticalBlock"]').filter(has=page.locator(".st-key-dataset_add")).last
    )
    uploader = adding.get_by_test_id("stFileUploader")
    assert uploader.get_by_test_id("stWidgetLabel").inner_text() == "CSV file (at most 5 MB)"
    assert uploader.get_by_test_id("stFileUploaderDropzoneInstructions").inner_text().startswith("5MB per file")
    assert "200MB" not in active_tab(page).inner_text()
    assert button_labels(adding) == ["Upload", "Add this dataset"]
    assert adding.get_by_role("button", name="Add this dataset").is_disabled()  # nothing to add yet
    snap(page, "studio-01-add-a-dataset")

    # The column to predict is a choice among the file's own columns.
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(
        {"name": "wine.csv", "mimeType": "text/csv", "buffer": wine_csv()}
    )
    column = page.get_by_role("combobox", name="Column to predict")
    column.wait_for()
    settled(page)
    column.click()
    header = list(wine_frame().columns)
    assert page.get_by_role("option").all_inner_texts() == header
    page.get_by_role("option", name=TARGET, exact=True).click()
    settled(page)
    assert column.input_value() == TARGET
    snap(page, "studio-02-column-to-predict")
    page.get_by_role("button", name="Add this dataset").click()
    page.get_by_text("Dataset wine.csv stored: 178 rows, 14 columns, a classification task on 'cultivar'.").wait_for()
    settled(page)

    # The classes: horizontal bars of one colour, every label shown and written across.
    classes = active_tab(page).get_by_test_id("stVegaLiteChart").first
    assert {"barolo", "grignolino", "barbera"} <= set(chart_words(classes))
    assert not slanted(classes)
    assert len(set(attributes(classes.locator('path[aria-roledescription="bar"]'), "fill"))) == 1
    # Appending rows: one upload button in its form, and its own, smaller limit.
    append = active_tab(page).get_by_test_id("stForm").filter(has_text="Append rows")
    assert "2MB per file" in append.get_by_test_id("stFileUploaderDropzoneInstructions").inner_text()
    assert button_labels(append) == ["Upload", "Append rows"]
    snap(page, "studio-03-dataset-classes", classes)

    # The Train tab: shards are explained, and the price is on the button before paying.
    train = open_tab(page, "Train")
    assert train.get_by_role("combobox", name="Algorithm").input_value() == "LogisticRegression"
    train.get_by_text("2 to 8 split the training rows into that many parts").wait_for()
    cost = training_price(live_api, person, "LogisticRegression", 178)
    train.get_by_text(f"Cost: {credits(cost)}").wait_for()
    train.get_by_text(f"your balance: {credits(50)}").wait_for()
    pay = train.get_by_role("button", name=f"Pay {credits(cost)} and start training")
    snap(page, "studio-04-price-before-paying", pay)
    pay.click()
    train.get_by_role("button", name="Download the report (PDF)").wait_for(timeout=TRAINING_WAIT_MS)
    settled(page)
    (job,) = live_api.call("GET", "/training-jobs", person.token)
    assert (job["status"], job["cost"]) == ("succeeded", cost)
    report = live_api.call("GET", f"/training-jobs/{job['id']}/report", person.token)
    test_rows, train_rows = report["rows"]["test"], report["rows"]["train"]
    assert test_rows + train_rows == 178

    # Scores come with the rows they were measured on.
    assert "test accuracy" in [m.strip() for m in train.get_by_test_id("stMetricLabel").all_inner_texts()]
    train.get_by_text(
        f"Scores measured on the {test_rows} held-out test rows the model never saw "
        f"(it was trained on the other {train_rows})."
    ).wait_for()
    # The charts: a confusion matrix over the cultivars and every measurement's importance, labels in full.
    charts = train.get_by_test_id("stVegaLiteChart")
    assert charts.count() == 2
    confusion, importance = chart_words(charts.nth(0)), chart_words(charts.nth(1))
    assert "Confusion matrix (held-out rows)" in confusion
    assert {"barolo", "grignolino", "barbera"} <= set(confusion)
    assert not slanted(charts.nth(0))
    cells = attributes(charts.nth(0).locator('path[aria-roledescription="rect mark"]'), "aria-label")
    assert sum(int(str(cell).rsplit("rows: ", 1)[1]) for cell in cells) == test_rows
    assert "Feature importance" in importance
    assert set(header[1:]) <= set(importance), f"feature names not shown: {set(header[1:]) - set(importance)}"
    # What the bars mean is said (a linear model's bars are permutation importance, which can fall below zero),
    # and every tick of the value axis is inside the chart, none cut at its edge.
    train.get_by_text("how much the held-out score drops when that input's values are shuffled").wait_for()
    edge = charts.nth(1).bounding_box()
    for tick in charts.nth(1).locator(".role-axis-label text").all():
        box = tick.bounding_box()
        if box is not None:
            inside = edge["x"] <= box["x"] and box["x"] + box["width"] <= edge["x"] + edge["width"]
            assert inside, (tick.text_content(), box, edge)
    snap(page, "studio-05-report-scores-and-charts", charts.nth(0))

    # The PDF report is a typeset PDF: several fonts, the title and the scores with their row counts.
    with page.expect_download() as download_info:
        train.get_by_role("button", name="Download the report (PDF)").click()
    pdf = download_info.value.path().read_bytes()
    assert pdf.startswith(b"%PDF")
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 3  # summary, confusion matrix, feature importance
    fonts = {
        str(font.get_object()["/BaseFont"]).split("+")[-1]  # without the subset's tag
        for sheet in reader.pages
        for font in (sheet["/Resources"].get("/Font") or {}).values()
    }
    assert len(fonts) >= 2 and not any("Courier" in f for f in fonts), fonts  # typeset, not a monospace dump
    summary = reader.pages[0].extract_text()
    assert "Training report" in summary
    assert f"Rows {train_rows} to train on, {test_rows} held out to test" in summary
    assert f"accuracy test {report['metrics']['test_accuracy']:.4g} {test_rows} rows" in summary

    # The wallet names the charge by what it paid for, at the price shown before paying.
    open_page(page, "Wallet")
    cells = grid_cells(page)
    assert "Prediction charge" not in cells
    charge = cells.index("Training charge")
    assert cells[charge + 1] == f"-{cost}"
    balance = page.get_by_test_id("stMetric").filter(has_text="Balance")
    assert balance.get_by_test_id("stMetricValue").inner_text() == credits(50 - cost)
    snap(page, "studio-06-wallet-training-charge")


# Records, while a training's progress bar says it is queued or running, whether anything of an earlier job
# (its shard table, scores or report download) is on screen in the same tab.
WATCH_OLD_RESULTS = """() => {
  const seen = (window.studioSeen = {progress: [], overlaps: []});
  const look = () => {
    const panel = document.querySelector('[data-testid="stTabPanel"]:not([data-st-inactive])');
    if (!panel) return;
    const running = [...panel.querySelectorAll('[data-testid="stProgress"]')]
      .map((bar) => bar.innerText.trim())
      .filter((text) => /^(Queued|Running)/.test(text));
    if (!running.length) return;
    seen.progress.push(running.join(" | "));
    const shown = panel.innerText;
    for (const old of ["A shard is one part", "test accuracy", "Scores measured on", "Download the report (PDF)"]) {
      if (shown.includes(old)) seen.overlaps.push(old + " under " + running.join(" | "));
    }
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def choose(page: Any, box: str, option: str, typed: str | None = None) -> None:
    """Picks an option of a select box by typing (part of) it, as a person looking for it would."""
    field = page.get_by_role("combobox", name=box)
    field.click()
    field.fill(typed or option)
    page.get_by_role("option", name=re.compile(re.escape(option))).first.click()
    settled(page)


def test_a_second_training_shows_only_its_own_progress_and_results(
    page: Any, live_api: LiveApi, make_person: Any
) -> None:
    person: Person = make_person(credits=100)
    api_wine_dataset(live_api, person, "wine")
    sign_in(page, person.email, person.password)
    open_page(page, "Training studio")
    train = open_tab(page, "Train")

    # A first training, sharded: a shard table and scores under it.
    choose(page, "Algorithm", "RandomForestClassifier")
    train.get_by_role("spinbutton", name="n_estimators").fill("10")
    train.get_by_role("spinbutton", name="Shards (parts trained at once)").fill("2")
    train.get_by_role("spinbutton", name="Shards (parts trained at once)").press("Tab")
    forest = training_price(live_api, person, "RandomForestClassifier", 178)
    train.get_by_role("button", name=f"Pay {credits(forest)} and start training").click()
    train.get_by_role("button", name="Download the report (PDF)").wait_for(timeout=TRAINING_WAIT_MS)
    train.get_by_text("2 shards", exact=False).wait_for()
    settled(page)
    snap(page, "studio-07-first-training-with-shards", train.get_by_text("2 shards", exact=False))

    # A second training: while it runs, nothing of the first stays on screen under its progress bar.
    choose(page, "Algorithm", "LogisticRegression")
    logistic = training_price(live_api, person, "LogisticRegression", 178)
    page.evaluate(WATCH_OLD_RESULTS)
    train.get_by_role("button", name=f"Pay {credits(logistic)} and start training").click()
    train.get_by_text("2 shards", exact=False).wait_for(state="detached")
    train.get_by_role("button", name="Download the report (PDF)").wait_for(timeout=TRAINING_WAIT_MS)
    settled(page)
    seen = page.evaluate("window.studioSeen")
    assert seen["progress"], "the second training's progress bar was never shown"
    assert seen["overlaps"] == []
    jobs = live_api.call("GET", "/training-jobs", person.token)
    assert sorted((j["algorithm"], j["status"]) for j in jobs) == [
        ("LogisticRegression", "succeeded"),
        ("RandomForestClassifier", "succeeded"),
    ]
    # Once it finished, the tab shows one job: the second one, with one set of scores and one report.
    assert train.get_by_test_id("stProgress").count() == 0  # the finished job's results took the bar's place
    assert train.get_by_role("button", name="Download the report (PDF)").count() == 1
    assert train.locator("strong", has_text=re.compile("^Status$")).count() == 1
    algorithm = train.locator("p", has=page.locator("strong", has_text=re.compile("^Algorithm$")))
    assert algorithm.inner_text().split() == ["Algorithm", "LogisticRegression"]
    labels = [m.strip() for m in train.get_by_test_id("stMetricLabel").all_inner_texts()]
    assert labels.count("test accuracy") == 1
    cost = train.get_by_test_id("stMetric").filter(has_text="Cost").get_by_test_id("stMetricValue")
    assert cost.inner_text() == credits(logistic)
    snap(page, "studio-08-second-training-replaces-the-first", train.locator("strong", has_text=re.compile("^Status$")))

    # Retraining from "My trainings": the page stays on that tab, and the new training takes the old one's place.
    trainings = open_tab(page, "My trainings")
    first = next(j for j in jobs if j["algorithm"] == "RandomForestClassifier")
    choose(page, "Training", first["id"][:8])
    trainings.get_by_text("A shard is one part of the training rows").wait_for()
    page.evaluate(WATCH_OLD_RESULTS)
    trainings.get_by_role("button", name=f"Pay {credits(forest)} and retrain").click()
    page.get_by_text(re.compile(f"started: a retraining of {first['id'][:8]}")).wait_for()
    assert page.get_by_role("tab", name="My trainings", selected=True).is_visible()
    (again,) = [j for j in live_api.call("GET", "/training-jobs", person.token) if j["retrain_of"] == first["id"]]
    expect(page.get_by_role("combobox", name="Training")).to_have_value(re.compile(again["id"][:8]))
    trainings.locator(f".st-key-past_pdf-{again['id']}").wait_for(timeout=TRAINING_WAIT_MS)
    settled(page)
    assert trainings.locator(f".st-key-past_pdf-{first['id']}").count() == 0
    # (The retraining may finish before the page shows it; if its progress bar showed, nothing old was under it.)
    assert page.evaluate("window.studioSeen")["overlaps"] == []
    assert trainings.get_by_role("button", name="Download the report (PDF)").count() == 1
    snap(page, "studio-09-retraining-opened-in-my-trainings", trainings.get_by_role("combobox", name="Training"))


def fill(field: Any, value: str) -> None:
    field.fill(value)
    field.press("Tab")


def open_training(page: Any, area: Any, job_id: str) -> None:
    """Opens a past training in "My trainings" and waits until its own report is on screen (the page has rerun),
    so what is typed next goes into its form and not into the one the rerun replaces."""
    choose(page, "Training", job_id[:8])
    area.locator(f".st-key-past_pdf-{job_id}").wait_for()
    settled(page)


def test_publishing_under_a_taken_name_shows_what_changes_and_buyers_can_pick_a_version(
    page: Any, live_api: LiveApi, make_person: Any
) -> None:
    author: Person = make_person(credits=50)
    first = trained_job(live_api, author, api_wine_dataset(live_api, author, "wine")["id"])
    gone = ("magnesium", "proline")
    second = trained_job(live_api, author, api_wine_dataset(live_api, author, "wine-lite", drop=gone)["id"])
    name = f"wine-{uuid.uuid4().hex[:6]}"
    sign_in(page, author.email, author.password)
    open_page(page, "Training studio")
    trainings = open_tab(page, "My trainings")

    # The first model, under a new name and at a price. The newest training is open: picking another one must
    # leave a publish form that still sends what is typed in it.
    open_training(page, trainings, first["id"])
    fill(trainings.locator(".st-key-past_publish_name input"), name)
    fill(trainings.locator(".st-key-past_publish_description textarea"), "Which of three cultivars a wine comes from")
    fill(trainings.locator(".st-key-past_publish_price input"), "2")
    trainings.get_by_role("button", name="Publish", exact=True).click()
    trainings.get_by_text(f"Published {name} v1 at 2 credits per row.").wait_for()
    settled(page)
    snap(page, "studio-10-published-v1", trainings.get_by_text(f"Published {name} v1"))

    # The second model, with fewer inputs, under the same name: the page says what changes and asks first.
    open_training(page, trainings, second["id"])
    fill(trainings.locator(".st-key-past_publish_name input"), name)
    fill(trainings.locator(".st-key-past_publish_description textarea"), "")
    fill(trainings.locator(".st-key-past_publish_price input"), "3")
    trainings.get_by_role("button", name="Publish", exact=True).click()
    review = trainings.locator(".st-key-past_publish-review")
    review.wait_for()
    settled(page)
    said = review.inner_text()
    assert f"{name} is already in the catalog (v1). Publishing adds v2" in said
    for change in (
        "Input magnesium is gone",
        "Input proline is gone",
        "Price per row changes from 2 credits to 3 credits",
        "The description stays v1's (confirm it below)",
    ):
        assert change in said, change
    assert [v["version"] for v in live_api.call("GET", f"/models/{name}", author.token)["versions"]] == [1]
    snap(page, "studio-11-publishing-under-a-taken-name-asks", review)

    # Cancelling keeps the listed model as it was.
    review.get_by_role("button", name="Cancel").click()
    review.wait_for(state="detached")
    settled(page)
    listed = live_api.call("GET", f"/models/{name}", author.token)
    assert ([v["version"] for v in listed["versions"]], listed["price_per_row"]) == ([1], 2)
    earnings = open_tab(page, "Models and earnings")
    published = earnings.get_by_test_id("stMetric").filter(has_text="Published models")
    assert published.get_by_test_id("stMetricValue").inner_text() == "1"

    # Confirming lists version 2. The description of version 1 is pre-filled (the same algorithm), but kept only
    # once the author says it fits.
    trainings = open_tab(page, "My trainings")
    trainings.get_by_role("button", name="Publish", exact=True).click()
    review.wait_for()
    settled(page)
    assert review.locator("textarea").input_value() == "Which of three cultivars a wine comes from"
    confirm = review.get_by_role("button", name="Publish as v2")
    assert confirm.is_disabled()
    review.get_by_text("v1's description fits v2").click()
    expect(confirm).to_be_enabled()
    settled(page)
    confirm.click()
    trainings.get_by_text(f"Published {name} v2 at 3 credits per row.").wait_for()
    settled(page)
    listed = live_api.call("GET", f"/models/{name}", author.token)
    assert [v["version"] for v in listed["versions"]] == [2, 1]
    assert listed["description"] == "Which of three cultivars a wine comes from"
    # Only the outcome stays: no review still offering v2 under the message, which names the next version.
    assert review.count() == 0
    assert trainings.get_by_role("button", name=re.compile("^Publish as")).count() == 0
    assert "Publishing adds v2" not in trainings.inner_text()
    trainings.get_by_text("Publishing again under this name would add v3.").wait_for()
    snap(page, "studio-12-published-v2", trainings.get_by_text(f"Published {name} v2"))

    # A buyer picks either version: each with its own inputs and price.
    sign_out(page)
    buyer: Person = make_person(credits=10)
    sign_in(page, buyer.email, buyer.password)
    open_page(page, "Predict")
    choose(page, "Model", f"{name} ·", typed=name)
    page.get_by_role("combobox", name="Version").click()
    day = {v["version"]: v["created_at"][:10] for v in listed["versions"]}
    assert page.get_by_role("option").all_inner_texts() == [
        f"v2 (newest) · 3 credits per row · published {day[2]}",
        f"v1 · 2 credits per row · published {day[1]}",
    ]
    page.keyboard.press("Escape")
    settled(page)
    page.get_by_label("alcohol", exact=True).wait_for()
    assert page.get_by_label("proline", exact=True).count() == 0  # version 2 has no such input
    page.get_by_text("3 credits per row", exact=True).wait_for()
    snap(page, "studio-13-buyer-sees-version-2")
    choose(page, "Version", "v1 ·", typed="v1")
    page.get_by_label("proline", exact=True).wait_for()
    page.get_by_text("2 credits per row", exact=True).wait_for()
    page.get_by_text("v1", exact=True).wait_for()
    snap(page, "studio-14-buyer-picks-version-1")
    # Paying predicts with the version picked, at its price.
    page.get_by_role("button", name="Pay 2 credits and predict").click()
    page.get_by_text("Done: the prediction succeeded").wait_for()
    settled(page)
    (paid,) = live_api.call("GET", "/predictions", buyer.token)
    assert (paid["model"], paid["version"], paid["cost"]) == (name, 1, 2)


def test_publishing_refuses_another_authors_name_and_asks_for_a_new_description(
    page: Any, live_api: LiveApi, make_person: Any
) -> None:
    author: Person = make_person(credits=50)
    dataset = api_wine_dataset(live_api, author, "wine")
    logistic = trained_job(live_api, author, dataset["id"])
    forest = trained_job(live_api, author, dataset["id"], algorithm="RandomForestClassifier")
    name = f"wine-{uuid.uuid4().hex[:6]}"
    old_words = "Which cultivar a wine comes from (logistic regression)"
    body = {"training_job_id": logistic["id"], "name": name, "price_per_row": 2, "description": old_words}
    live_api.call("POST", "/models", author.token, json=body)
    sign_in(page, author.email, author.password)
    open_page(page, "Training studio")
    trainings = open_tab(page, "My trainings")
    open_training(page, trainings, forest["id"])

    # A name another author publishes under: said at once, and nothing offers to publish under it.
    fill(trainings.locator(".st-key-past_publish_name input"), "iris-logistic")
    fill(trainings.locator(".st-key-past_publish_price input"), "3")
    trainings.get_by_role("button", name="Publish", exact=True).click()
    refused = trainings.get_by_text("iris-logistic belongs to another author; choose another name.")
    refused.wait_for()
    settled(page)
    assert trainings.locator(".st-key-past_publish-review").count() == 0
    assert trainings.get_by_role("button", name=re.compile("^Publish as")).count() == 0
    assert "Publishing adds" not in trainings.inner_text()
    assert live_api.call("GET", "/models/iris-logistic", author.token)["author_id"] != author.user["id"]
    snap(page, "studio-15-another-authors-name-refused", refused)

    # The author's own name, with a random forest where v1 was a logistic regression: v1's description is shown
    # but not carried over; publishing waits for one written for v2.
    fill(trainings.locator(".st-key-past_publish_name input"), name)
    trainings.get_by_role("button", name="Publish", exact=True).click()
    review = trainings.locator(".st-key-past_publish-review")
    review.wait_for()
    settled(page)
    said = review.inner_text()
    for words in (
        "Algorithm changes from LogisticRegression to RandomForestClassifier",
        "v2 needs a description (v1's is not carried over unseen)",
        "v1's description is not carried over: write one for v2.",
        old_words,
    ):
        assert words in said, words
    assert review.locator("textarea").input_value() == ""
    confirm = review.get_by_role("button", name="Publish as v2")
    assert confirm.is_disabled()
    snap(page, "studio-16-new-algorithm-needs-its-description", review)
    fill(review.locator("textarea"), "Which cultivar a wine comes from (random forest)")
    expect(review).to_contain_text("The description of v2 is new (below)")
    settled(page)
    expect(confirm).to_be_enabled()
    confirm.click()
    trainings.get_by_text(f"Published {name} v2 at 3 credits per row.").wait_for()
    settled(page)
    listed = live_api.call("GET", f"/models/{name}", author.token)
    assert (listed["version"], listed["description"]) == (2, "Which cultivar a wine comes from (random forest)")
    assert listed["versions"][1]["description"] == old_words
    snap(page, "studio-17-published-with-its-own-description", trainings.get_by_text(f"Published {name} v2"))


def test_a_reload_keeps_the_tab_and_the_training_on_screen(page: Any, live_api: LiveApi, make_person: Any) -> None:
    author: Person = make_person(credits=50)
    dataset = api_wine_dataset(live_api, author, "wine")
    older = trained_job(live_api, author, dataset["id"])
    trained_job(live_api, author, dataset["id"], algorithm="RandomForestClassifier")
    sign_in(page, author.email, author.password)
    open_page(page, "Training studio")

    # "My trainings" with the older training open (not the one a fresh page would open) survives a reload.
    trainings = open_tab(page, "My trainings")
    choose(page, "Training", older["id"][:8])
    trainings.locator(f".st-key-past_pdf-{older['id']}").wait_for()
    asked = parse_qs(urlparse(page.url).query)
    assert (asked.get("tab"), asked.get("training")) == (["My trainings"], [older["id"]])
    page.reload()
    settled(page)
    expect(page.get_by_role("tab", name="My trainings", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("combobox", name="Training")).to_have_value(re.compile(older["id"][:8]))
    active_tab(page).locator(f".st-key-past_pdf-{older['id']}").wait_for()
    snap(page, "studio-18-reload-keeps-my-trainings", page.get_by_role("combobox", name="Training"))

    # A training started in "Train" is still on screen there after a reload.
    train = open_tab(page, "Train")
    cost = training_price(live_api, author, "LogisticRegression", 178)
    train.get_by_role("button", name=f"Pay {credits(cost)} and start training").click()
    train.get_by_role("button", name="Download the report (PDF)").wait_for(timeout=TRAINING_WAIT_MS)
    settled(page)
    newest = live_api.call("GET", "/training-jobs", author.token)[0]
    assert parse_qs(urlparse(page.url).query).get("tab") == ["Train"]
    page.reload()
    settled(page)
    expect(page.get_by_role("tab", name="Train", exact=True)).to_have_attribute("aria-selected", "true")
    train = active_tab(page)
    train.locator(f".st-key-job-{newest['id']}").wait_for()
    train.get_by_role("button", name="Download the report (PDF)").wait_for()
    snap(
        page,
        "studio-19-reload-keeps-the-started-training",
        train.get_by_role("button", name="Download the report (PDF)"),
    )
