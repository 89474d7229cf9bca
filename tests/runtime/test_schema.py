"""Checking prediction rows against a model's input schema, from JSON and from CSV."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import Unprocessable
from app.runtime.schema import Feature, RowError, rows_from_csv, validate_rows

FEATURES = [
    Feature(name="age", type="number"),
    Feature(name="children", type="integer"),
    Feature(name="region", type="string", categories=["north", "south"]),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


def good_row(**changes: Any) -> dict[str, Any]:
    return {"age": 41.5, "children": 2, "region": "north", **changes}


def only_reason(rows: list[Any]) -> str:
    accepted, errors = validate_rows(FEATURES, rows)
    assert accepted == []
    assert len(errors) == 1
    return errors[0].reason


def test_valid_rows_are_normalised_in_schema_order() -> None:
    accepted, errors = validate_rows(FEATURES, [{"region": "  south ", "children": "3", "age": "7"}, good_row()])
    assert errors == []
    assert accepted == [
        {"age": 7.0, "children": 3, "region": "south"},
        {"age": 41.5, "children": 2, "region": "north"},
    ]
    assert list(accepted[0]) == ["age", "children", "region"]
    assert isinstance(accepted[0]["age"], float) and isinstance(accepted[0]["children"], int)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (good_row(age="abc"), "row 1: feature 'age' must be a finite number, got 'abc'"),
        (good_row(age=True), "row 1: feature 'age' must be a finite number, got true"),
        (good_row(age=float("nan")), "row 1: feature 'age' must be a finite number, got nan"),
        (good_row(age=float("inf")), "row 1: feature 'age' must be a finite number, got inf"),
        (good_row(age="1e999"), "row 1: feature 'age' must be a finite number, got '1e999'"),
        (good_row(age=None), "row 1: feature 'age' must be a finite number, got null"),
        (good_row(age=[1]), "row 1: feature 'age' must be a finite number, got a list"),
        (good_row(children=2.5), "row 1: feature 'children' must be an integer, got 2.5"),
        (good_row(children=2**60), "row 1: feature 'children' is out of range"),
        (good_row(region=""), "row 1: feature 'region' is empty"),
        (good_row(region="a\x00b"), "row 1: feature 'region' contains control characters"),
        (good_row(region={"x": 1}), "row 1: feature 'region' must be a string, got an object"),
        ({"age": 1, "children": 1}, "row 1: missing feature 'region'"),
        (good_row(foo=1), "row 1: unknown feature 'foo'"),
        ([1, 2, "north"], "row 1: must be an object with the features as keys, got a list"),
        ("age=1", "row 1: must be an object with the features as keys, got 'age=1'"),
    ],
)
def test_invalid_row_says_what_to_fix(row: Any, reason: str) -> None:
    assert only_reason([row]).startswith(reason)


def test_every_problem_of_a_row_is_in_one_error_with_the_row_number() -> None:
    accepted, errors = validate_rows(FEATURES, [good_row(), {"age": "x", "foo": 1, "children": 1}, good_row()])
    assert len(accepted) == 2
    assert errors == [
        RowError(
            row=2,
            reason="row 2: unknown feature 'foo'; feature 'age' must be a finite number, got 'x'; "
            "missing feature 'region'",
        )
    ]


def test_integers_accept_whole_floats_and_strings() -> None:
    accepted, errors = validate_rows(FEATURES, [good_row(children=3.0), good_row(children=" 4 ")])
    assert errors == []
    assert [r["children"] for r in accepted] == [3, 4]


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=5))
def test_any_json_input_is_accepted_or_explained(rows: list[Any]) -> None:
    accepted, errors = validate_rows(FEATURES, rows)
    assert len(accepted) + len(errors) == len(rows)
    assert [e.row for e in errors] == sorted({e.row for e in errors})
    for error in errors:
        assert 1 <= error.row <= len(rows)
        assert error.reason.startswith(f"row {error.row}: ")
    for row in accepted:
        assert list(row) == ["age", "children", "region"]
        assert isinstance(row["age"], float) and math.isfinite(row["age"])
        assert type(row["children"]) is int
        assert isinstance(row["region"], str) and row["region"] == row["region"].strip() and row["region"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=False, allow_infinity=False, width=32),
            st.integers(min_value=-(10**9), max_value=10**9),
            st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), min_size=1, max_size=10).filter(
                str.strip
            ),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_csv_written_by_a_spreadsheet_reads_back_the_same_rows(records: list[tuple[float, int, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["region", "age", "children"])  # column order differs from the schema
    for age, children, region in records:
        writer.writerow([region, repr(age), children])
    accepted, errors = rows_from_csv(buffer.getvalue(), FEATURES)
    assert errors == []
    assert accepted == [{"age": age, "children": c, "region": r.strip()} for age, c, r in records]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_csv_text_gives_rows_errors_or_unprocessable(text: str) -> None:
    try:
        _, errors = rows_from_csv("age,children,region\n" + text, FEATURES)
    except Unprocessable as exc:
        assert "no rows" in exc.detail
        return
    for error in errors:
        assert error.reason.startswith(f"row {error.row} (line ")


def test_csv_rows_get_numbers_and_line_numbers() -> None:
    text = "age,children,region\n1,2,north\n\nabc,2,south\n1,2\n3,4,south,extra\n5,6,south\n"
    accepted, errors = rows_from_csv(text, FEATURES)
    assert accepted == [
        {"age": 1.0, "children": 2, "region": "north"},
        {"age": 5.0, "children": 6, "region": "south"},
    ]
    assert [(e.row, e.reason) for e in errors] == [
        (2, "row 2 (line 4): feature 'age' must be a finite number, got 'abc'"),
        (3, "row 3 (line 5): has 2 value(s), the header has 3 column(s)"),
        (4, "row 4 (line 6): has 4 value(s), the header has 3 column(s)"),
    ]


def test_csv_quoted_values_crlf_and_bom() -> None:
    text = '\ufeffage,children,region\r\n"1.5",2,"south, coast"\r\n'
    accepted, errors = rows_from_csv(text, FEATURES)
    assert errors == []
    assert accepted == [{"age": 1.5, "children": 2, "region": "south, coast"}]


def test_csv_unclosed_quote_is_a_row_error() -> None:
    accepted, errors = rows_from_csv('age,children,region\n1,2,north\n2,3,"south\n4,5,north\n', FEATURES)
    assert accepted == [{"age": 1.0, "children": 2, "region": "north"}]
    assert errors[0].row == 2
    assert "malformed CSV" in errors[0].reason and "quote" in errors[0].reason


def test_csv_stray_quote_is_a_row_error_and_later_rows_still_count() -> None:
    accepted, errors = rows_from_csv('age,children,region\n1,2,"a"b\n3,4,north\n', FEATURES)
    assert [e.row for e in errors] == [1]
    assert accepted == [{"age": 3.0, "children": 4, "region": "north"}]


def test_csv_empty_cell_is_a_row_error() -> None:
    _, errors = rows_from_csv("age,children,region\n,2,north\n", FEATURES)
    assert errors[0].reason == "row 1 (line 2): feature 'age' is empty"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the first line of the CSV file must be a header naming age, children, region"),
        ("\n\n", "the first line of the CSV file must be a header"),
        ("age,children\n1,2\n", "lacks feature column(s) 'region'"),
        ("age,children,region,id\n1,2,north,7\n", "has unknown column(s) 'id'"),
        ("age,age,children,region\n", "repeats column(s) 'age'"),
        ("age,children,region\n", "has a header but no rows"),
        ('"age,children,region\n', "the CSV header cannot be read"),
        ("\nage,children,region\n1,2,north\n", "the first line of the CSV file must be a header"),
    ],
)
def test_csv_file_level_problems_are_unprocessable(text: str, message: str) -> None:
    with pytest.raises(Unprocessable) as raised:
        rows_from_csv(text, FEATURES)
    assert message in raised.value.detail
    assert raised.value.status_code == 422


def test_feature_schema_round_trips_through_json() -> None:
    dumped = [f.model_dump() for f in FEATURES]
    assert [Feature.model_validate(d) for d in dumped] == FEATURES
    with pytest.raises(ValueError):
        Feature.model_validate({"name": "x", "type": "date"})


def test_the_column_reading_of_a_csv_accepts_what_the_row_reading_accepts_with_the_same_values() -> None:
    from app.runtime.schema import number_columns_from_csv

    features = [Feature(name="a", type="number"), Feature(name="b", type="number")]
    texts = [
        "a,b\n1,2\n3.5, 4\n-1e3,+.5\n",
        "b,a\n1,2\n",
        "a,b\n1,nan\n",
        "a,b\n1,inf\n",
        "a,b\n1,1_000\n",
        "a,b\n1,2\n\n3,4\n",
        "a,b\n1\n",
        "a,b\n1,\n",
        'a,b\n"1",2\n',
        "a,b\n1,0x10\n",
    ]
    for text in texts:
        columns = number_columns_from_csv(text, features)
        accepted, errors = rows_from_csv(text, features)
        if columns is None:
            continue
        assert not errors, text
        assert [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)] == [
            {k: float(v) for k, v in row.items()} for row in accepted
        ], text
    # what the row reading refuses, the column reading leaves to it
    for text in ("a,b\n1,nan\n", "a,b\n1,1_000\n", "a,b\n1,\n", "a,b\n1\n"):
        assert number_columns_from_csv(text, features) is None
    # a text feature: always the row reading
    assert number_columns_from_csv("a\nx\n", [Feature(name="a", type="string")]) is None
