"""The predict page: a form from the input schema, CSV batches, the cost before paying, live status, results."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import LiveApi, Person, no_exceptions, texts

IRIS = "iris-logistic"
HEADER = "sepal_length_cm,sepal_width_cm,petal_length_cm,petal_width_cm"


def open_predict(app_as: Callable[..., AppTest], person: Person, model: str = IRIS) -> AppTest:
    at = app_as(person, "app_pages/predict.py")
    at.selectbox[0].select(model).run()
    return at


def test_one_row_from_the_generated_form_is_paid_and_predicted(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=10)
    at = open_predict(app_as, person)
    no_exceptions(at)
    assert "**Cost: 1 credit \N{MULTIPLICATION SIGN} 1 row = 1 credit**" in texts(at)
    for feature, value in zip(HEADER.split(","), (5.1, 3.5, 1.4, 0.2), strict=True):
        at.number_input(key=f"feature-{IRIS}-{feature}").set_value(value)
    next(b for b in at.button if b.label == "Pay 1 credit and predict").click()
    at.run()
    no_exceptions(at)
    assert next(m.value for m in at.metric if m.label == "Prediction") == "setosa"
    assert next(m.value for m in at.metric if m.label == "Cost") == "1 credit"
    assert "succeeded" in texts(at)
    assert at.dataframe[0].value["prediction"].tolist() == ["setosa"]
    assert [b.label for b in at.get("download_button")][-1] == "Download the results (CSV)"
    assert "Your balance: 9 credits" in texts(at)
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 9


def test_a_csv_batch_shows_the_cost_first_and_the_rejected_rows_with_reasons(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=10)
    at = open_predict(app_as, person)
    csv = f"{HEADER}\n5.1,3.5,1.4,0.2\nabc,3.0,1.0,0.2\n6.7,3.0,5.2,2.3\n".encode()
    at.file_uploader(key=f"csv-{IRIS}").upload("flowers.csv", csv, "text/csv")
    at.run()
    # Checked in the page before paying: the bad cell is named, and only the good rows are priced.
    assert "**Cost: 1 credit \N{MULTIPLICATION SIGN} 2 rows = 2 credits**" in texts(at)
    assert "- Row 2, `sepal_length_cm`: 'abc' is not a number" in texts(at)
    preview = at.dataframe[0].value
    assert preview.index.tolist()[0] == 2 and "'abc' is not a number" in preview["problem"].iloc[0]
    assert at.button(key=f"send-{IRIS}").label == "Pay 2 credits and predict 2 rows"
    at.button(key=f"send-{IRIS}").click().run()
    no_exceptions(at)
    assert next(m.value for m in at.metric if m.label == "Cost") == "2 credits"
    assert next(m.value for m in at.metric if m.label == "Rows rejected") == "1"
    assert "1 row was rejected and not charged:" in [w.value for w in at.warning]
    rejected, results = at.dataframe[-2].value, at.dataframe[-1].value
    assert rejected["row"].tolist() == [2]
    assert "must be a finite number" in rejected["reason"][0]
    assert results["row"].tolist() == [1, 3]
    assert results["prediction"].tolist() == ["setosa", "virginica"]
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 8


def test_a_csv_with_the_wrong_header_is_refused_before_paying(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=10)
    at = open_predict(app_as, person)
    at.file_uploader(key=f"csv-{IRIS}").upload("bad.csv", b"colour,size\nred,3\n", "text/csv")
    at.run()
    no_exceptions(at)
    assert len(at.error) == 1
    assert at.error[0].value.startswith("The header lacks 'sepal_length_cm', 'sepal_width_cm'")
    assert at.button(key=f"send-{IRIS}").disabled

    # No header at all: the numbers of the first row are not taken for column names.
    at.file_uploader(key=f"csv-{IRIS}").upload("bare.csv", b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n", "text/csv")
    at.run()
    inputs = HEADER.replace(",", ", ")
    assert [e.value for e in at.error] == [
        f"The first line holds values, not column names. Add a first line naming the inputs: {inputs}."
    ]
    assert at.button(key=f"send-{IRIS}").disabled
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 10
    assert live_api.call("GET", "/predictions", person.token) == []


def test_a_latin1_file_is_read_once_its_encoding_is_chosen(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=10)
    at = open_predict(app_as, person, "diabetes-linear")
    model = next(m for m in live_api.call("GET", "/models", person.token) if m["name"] == "diabetes-linear")
    names = [f["name"] for f in model["input_schema"]]
    row = ",".join("0.01" for _ in names)
    data = (",".join(names) + "\n" + row + "\n" + row + "\n").encode() + "\u00e9".encode("latin-1") + b"\n"
    at.file_uploader(key="csv-diabetes-linear").upload("caf\u00e9.csv", data, "text/csv")
    at.run()
    no_exceptions(at)
    assert at.error[0].value.startswith("This file is not UTF-8 text.")
    next(box for box in at.selectbox if box.label == "File encoding").select("latin-1").run()
    no_exceptions(at)
    assert "Read as Latin-1 (ISO-8859-1); it is sent to mlmarket as UTF-8." in texts(at)
    assert at.button(key="send-diabetes-linear").label == "Pay 2 credits and predict 2 rows"


def test_a_batch_beyond_the_balance_is_stopped_before_paying(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = open_predict(app_as, make_person(credits=1))
    csv = f"{HEADER}\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n".encode()
    at.file_uploader(key=f"csv-{IRIS}").upload("flowers.csv", csv, "text/csv")
    at.run()
    no_exceptions(at)
    assert "Your balance (1 credit) is 1 credit short of this prediction." in [w.value for w in at.warning]
    assert at.button(key=f"send-{IRIS}").disabled


def test_a_short_balance_says_how_much_is_missing(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = open_predict(app_as, make_person(credits=0))
    no_exceptions(at)
    assert "Your balance (0 credits) is 1 credit short of this prediction." in [w.value for w in at.warning]
    assert next(b for b in at.button if b.label == "Pay 1 credit and predict").disabled
    assert "Your prediction" not in texts(at)


def test_the_form_starts_at_typical_values_and_shows_the_training_range(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=5)
    at = open_predict(app_as, person)
    no_exceptions(at)
    model = live_api.call("GET", f"/models/{IRIS}", person.token)
    medians = {f["name"]: f["example"] for f in model["input_schema"]}
    assert medians == {"sepal_length_cm": 5.8, "sepal_width_cm": 3.0, "petal_length_cm": 4.35, "petal_width_cm": 1.3}
    assert [at.number_input(key=f"feature-{IRIS}-{f}").value for f in HEADER.split(",")] == [5.8, 3.0, 4.35, 1.3]
    captions = [c.value for c in at.caption]
    assert "Seen in training: 4.3 \N{EN DASH} 7.9" in captions and "Seen in training: 0.1 \N{EN DASH} 2.5" in captions
    assert not at.warning and not at.checkbox
    assert not next(b for b in at.button if b.label == "Pay 1 credit and predict").disabled


def test_a_value_far_outside_the_training_range_is_paid_only_once_confirmed(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=5)
    at = open_predict(app_as, person)
    # Typed and clicked at once, before the page could warn: nothing is charged.
    at.number_input(key=f"feature-{IRIS}-petal_width_cm").set_value(1e308)
    next(b for b in at.button if b.label == "Pay 1 credit and predict").click().run()
    no_exceptions(at)
    assert [w.value for w in at.warning] == [
        "**petal_width_cm** = 1e+308 is far outside the values seen in training (the model was trained on "
        "0.1 \N{EN DASH} 2.5). Its prediction may mean little."
    ]
    assert next(b for b in at.button if b.label == "Pay 1 credit and predict").disabled
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 5
    assert live_api.call("GET", "/predictions", person.token) == []

    # A new doubtful value needs its own tick; once ticked, the row is paid for as it is.
    at.checkbox[0].check().run()
    at.number_input(key=f"feature-{IRIS}-petal_width_cm").set_value(1000.0).run()
    assert "**petal_width_cm** = 1000 is far outside" in at.warning[0].value
    assert [c.value for c in at.checkbox] == [False]
    assert next(b for b in at.button if b.label == "Pay 1 credit and predict").disabled
    next(c for c in at.checkbox if c.label == "Predict anyway").check().run()
    pay = next(b for b in at.button if b.label == "Pay 1 credit and predict")
    assert not pay.disabled
    pay.click().run()
    no_exceptions(at)
    assert next(m.value for m in at.metric if m.label == "Cost") == "1 credit"
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 4

    at.number_input(key=f"feature-{IRIS}-petal_width_cm").set_value(4.8).run()  # within 2.5 + (2.5 - 0.1)
    assert not at.warning and not at.checkbox
    assert not next(b for b in at.button if b.label == "Pay 1 credit and predict").disabled


def test_a_csv_with_cells_far_outside_the_range_is_warned_about_but_priced_in_full(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = open_predict(app_as, make_person(credits=10))
    csv = f"{HEADER}\n5.1,3.5,1.4,0.2\n1000,3.0,1.0,1e308\n6.7,3.0,5.2,2.3\n".encode()
    at.file_uploader(key=f"csv-{IRIS}").upload("flowers.csv", csv, "text/csv")
    at.run()
    no_exceptions(at)
    assert not at.error
    warning = next(w.value for w in at.warning if "far outside" in w.value)
    assert warning.startswith("2 cells are far outside the values the model was trained on")
    shown = texts(at)
    assert (
        "- Row 2, `sepal_length_cm`: 1000 is far outside the values seen in training "
        "(the model was trained on 4.3 \N{EN DASH} 7.9)"
    ) in shown
    assert "**Cost: 1 credit \N{MULTIPLICATION SIGN} 3 rows = 3 credits**" in shown
    assert at.button(key=f"send-{IRIS}").label == "Pay 3 credits and predict 3 rows"
    assert not at.button(key=f"send-{IRIS}").disabled


def test_a_classifier_result_shows_each_class_probability(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person], live_api: LiveApi
) -> None:
    person = make_person(credits=5)
    at = open_predict(app_as, person)
    for feature, value in zip(HEADER.split(","), (6.7, 3.0, 5.2, 2.3), strict=True):
        at.number_input(key=f"feature-{IRIS}-{feature}").set_value(value)
    at.button(key=f"pay-row-{IRIS}").click().run()
    no_exceptions(at)
    assert next(m.value for m in at.metric if m.label == "Prediction") == "virginica"
    task = live_api.call("GET", "/predictions", person.token)[0]
    answer = live_api.call("GET", f"/predictions/{task['id']}", person.token)
    assert answer["classes"] == ["setosa", "versicolor", "virginica"]
    bars = [str(p.proto.text) for p in at.get("progress")]
    labels = [text.split(":")[0] for text in bars]
    shares = [float(text.split(": ")[1].rstrip("%")) for text in bars]
    assert labels[0] == "virginica" and sorted(labels) == answer["classes"]
    assert shares == sorted(shares, reverse=True) and abs(sum(shares) - 100) < 0.5
    assert shares[0] == round(100 * max(answer["probabilities"][0]), 1)
    table = at.dataframe[-1].value
    assert [c for c in table.columns if c.startswith("probability_")] == [
        "probability_setosa",
        "probability_versicolor",
        "probability_virginica",
    ]
    assert live_api.call("GET", "/wallet", person.token)["balance"] == 4


def test_a_regressor_result_shows_no_class_probabilities(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = open_predict(app_as, make_person(credits=5), "diabetes-linear")
    at.button(key="pay-row-diabetes-linear").click().run()
    no_exceptions(at)
    assert next(m.label for m in at.metric if m.label == "Prediction")
    assert not at.get("progress") and "Class probabilities" not in texts(at)


def test_what_counts_as_far_outside_the_training_range() -> None:
    from web_ui.utils import profile

    iris = {"name": "x", "type": "number", "minimum": 4.3, "maximum": 7.9}
    assert profile.tolerated(iris) == pytest.approx((0.7, 11.5))
    assert [profile.far_outside(iris, v) for v in (0.8, 11.4, 0.6, 11.6, "1e308", float("nan"))] == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    constant = {"name": "c", "type": "integer", "minimum": 5, "maximum": 5}  # one value seen: width max(|5|, 1)
    assert profile.tolerated(constant) == (0, 10) and profile.far_outside(constant, 11)
    # Without a profile (a version trained before it) only impossible values are flagged; strings never are.
    assert not profile.far_outside({"name": "o", "type": "number"}, 1e9)
    assert profile.far_outside({"name": "o", "type": "number"}, 1e308)
    assert not profile.far_outside({"name": "s", "type": "string"}, "1e308")
    assert profile.example_value({"type": "integer", "example": 4}) == 4
    assert profile.example_value({"type": "number", "example": "5"}) is None
