"""The marketplace page: the catalog with price, task, inputs, description and author."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from tests.web_ui.conftest import Person, no_exceptions, texts


def test_the_catalog_shows_what_a_buyer_needs(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person())
    no_exceptions(at)
    page = texts(at)
    assert "Marketplace" in at.title[0].value
    for expected in (
        "iris-logistic",
        "diabetes-linear",
        "1 credit / row",
        "Classification",
        "Regression",
        "`sepal_length_cm` (number)",
        "Iris species from sepal and petal sizes",
        "`setosa`",
    ):
        assert expected in page, expected
    # Authors go by their display name, never their email address (the sidebar shows only the reader's own).
    bylines = [c.value for c in at.main.caption if c.value.startswith("By ")]
    assert bylines and not any("@" in b for b in bylines)
    table = at.dataframe[0].value
    assert {"iris-logistic", "diabetes-linear"} <= set(table["model"])
    assert not any("@" in str(a) for a in table["author"])


def test_search_and_task_filters_narrow_the_catalog(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person())
    at.selectbox(key="market_task").select("regression").run()
    assert "diabetes-linear" in list(at.dataframe[0].value["model"])
    assert "iris-logistic" not in list(at.dataframe[0].value["model"])
    at.selectbox(key="market_task").select("All tasks")
    at.text_input(key="market_search").input("petal").run()
    assert list(at.dataframe[0].value["model"]) == ["iris-logistic"]  # found by its input names
    at.text_input(key="market_search").input("nothing like this").run()
    assert "No model matches “nothing like this”. Try another word, or clear the search and the task filter." in [
        i.value for i in at.info
    ]


def test_choosing_a_model_opens_the_predict_page_with_it(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person())
    at.button(key="use-iris-logistic").click().run()
    no_exceptions(at)
    assert "Predict" in at.title[0].value
    assert at.selectbox[0].value == "iris-logistic"


def test_scratch_models_come_last_and_newest_sorts_by_date() -> None:
    from web_ui.utils import formatting as fmt

    models = [
        {"name": "test-model", "description": "x", "metrics": {"a": 1}, "created_at": "2026-03-01T00:00:00Z"},
        {"name": "aardvark", "description": "", "metrics": None, "created_at": "2026-02-01T00:00:00Z"},
        {"name": "iris-logistic", "description": "Iris species", "metrics": {"a": 1}, "created_at": "2026-01-01"},
    ]
    assert [m["name"] for m in fmt.recommended(models)] == ["iris-logistic", "aardvark", "test-model"]
    assert fmt.author({"owner": "someone@example.com"}) == "an mlmarket author"
    assert fmt.author({"owner": "x@example.com", "author_name": "Ada"}) == "Ada"
