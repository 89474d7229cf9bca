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
        "By demo-admin@example.com",
        "`setosa`",
    ):
        assert expected in page, expected
    table = at.dataframe[0].value
    assert set(table["model"]) == {"iris-logistic", "diabetes-linear"}
    assert set(table["author"]) == {"demo-admin@example.com"}


def test_search_and_task_filters_narrow_the_catalog(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person())
    at.selectbox(key="market_task").select("regression").run()
    assert list(at.dataframe[0].value["model"]) == ["diabetes-linear"]
    at.selectbox(key="market_task").select("All tasks")
    at.text_input(key="market_search").input("petal").run()
    assert list(at.dataframe[0].value["model"]) == ["iris-logistic"]
    at.text_input(key="market_search").input("nothing like this").run()
    assert "0 of 2 model(s)" in texts(at)


def test_choosing_a_model_opens_the_predict_page_with_it(
    app_as: Callable[..., AppTest], make_person: Callable[..., Person]
) -> None:
    at = app_as(make_person())
    at.button(key="use-iris-logistic").click().run()
    no_exceptions(at)
    assert "Predict" in at.title[0].value
    assert at.selectbox[0].value == "iris-logistic"
