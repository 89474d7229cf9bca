"""Results out as JSON, CSV, Arrow and Parquet; rows in as CSV and Parquet; every row sent shows in the results."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from app.core.config import Settings
from app.main import create_app
from app.models.catalog import ModelTask
from app.runtime.schema import Feature
from app.services import result_writers, results
from tests.api.routes.test_predictions import PREDICT, balance, top_up, wait_finished
from tests.conftest import make_settings
from tests.models import train_and_publish
from tests.samples import DIABETES_ROW

FEATURES = list(DIABETES_ROW)
COLUMNS = ["row", *FEATURES, "prediction", "status", "error"]
ARROW_TYPE = "application/vnd.apache.arrow.stream"
PARQUET_TYPE = "application/vnd.apache.parquet"


def _row(age: float) -> dict[str, float]:
    return {**DIABETES_ROW, "age": age}


def _csv_body(header: list[str], lines: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(lines)
    return out.getvalue().encode()


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _upload(
    client: TestClient, headers: dict[str, str], name: str, data: bytes, media: str, model: str = "diabetes-linear"
) -> Any:
    return client.post(PREDICT, headers=headers, data={"model": model}, files={"file": (name, data, media)})


def _json_path_predictions(client: TestClient, headers: dict[str, str], rows: list[Any]) -> dict[str, Any]:
    """The same rows sent as JSON: what the other paths must agree with."""
    r = client.post(PREDICT, json={"model": "diabetes-linear", "rows": rows}, headers=headers)
    assert r.status_code == 202, r.text
    return wait_finished(client, headers, r.json()["id"])


def _same(actual: list[Any], expected: list[Any]) -> bool:
    """Equal up to float rounding, with None in the same places."""
    return [a is None for a in actual] == [e is None for e in expected] and [
        a for a in actual if a is not None
    ] == pytest.approx([e for e in expected if e is not None], rel=1e-9)


def _read_csv(body: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body)))


def _tasks(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM tasks")).scalar_one())


def test_a_csv_upload_with_a_bad_row_downloads_in_every_format(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=1)
    headers = make_user()
    top_up(client, headers, 50)
    good = [_row(0.01), _row(0.05)]
    bad = [*DIABETES_ROW.values()]
    bad[FEATURES.index("bmi")] = "fat"
    body = _csv_body(FEATURES, [list(good[0].values()), bad, list(good[1].values())])
    r = _upload(client, headers, "rows.csv", body, "text/csv")
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert (accepted["rows_accepted"], accepted["rows_rejected"], accepted["cost"]) == (2, 1, 2)
    reason = accepted["errors"][0]["reason"]
    assert accepted["errors"][0]["row"] == 2 and "'bmi' must be a finite number" in reason
    task_id = accepted["id"]
    assert wait_finished(client, headers, task_id)["status"] == "succeeded"
    expected = _json_path_predictions(client, headers, good)["results"]

    # CSV: the old columns first, then status and error; the rejected row keeps its place
    r = client.get(f"{PREDICT}/{task_id}/results.csv", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="prediction-{task_id}.csv"' in r.headers["content-disposition"]
    lines = _read_csv(r.text)
    assert lines[0] == COLUMNS
    assert [line[0] for line in lines[1:]] == ["1", "2", "3"]
    assert [line[-2:] for line in lines[1:]] == [["ok", ""], ["rejected", reason], ["ok", ""]]
    assert [float(v) for v in lines[1][1:-3]] == list(good[0].values())
    assert lines[2][1:-2] == [""] * (len(FEATURES) + 1)
    assert [float(lines[1][-3]), float(lines[3][-3])] == pytest.approx(expected, rel=1e-9)
    assert client.get(f"{PREDICT}/{task_id}/results?format=csv", headers=headers).text == r.text
    assert client.get(f"{PREDICT}/{task_id}/results", headers={**headers, "Accept": "text/csv"}).text == r.text

    # JSON: the default of /results, the same rows as arrays
    r = client.get(f"{PREDICT}/{task_id}/results", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["vary"] == "Accept"
    doc = r.json()
    assert {k: doc[k] for k in ("id", "model", "version", "rows_total", "rows_accepted", "rows_rejected")} == {
        "id": task_id,
        "model": "diabetes-linear",
        "version": 1,
        "rows_total": 3,
        "rows_accepted": 2,
        "rows_rejected": 1,
    }
    assert doc["columns"] == COLUMNS
    rows = [dict(zip(doc["columns"], row, strict=True)) for row in doc["rows"]]
    assert [(x["row"], x["status"], x["error"]) for x in rows] == [
        (1, "ok", None),
        (2, "rejected", reason),
        (3, "ok", None),
    ]
    assert {k: rows[2][k] for k in FEATURES} == good[1]
    assert all(rows[1][k] is None for k in [*FEATURES, "prediction"])
    assert [rows[0]["prediction"], rows[2]["prediction"]] == pytest.approx(expected, rel=1e-9)
    for path, extra in (("results.json", {}), ("results?format=json", {}), ("results", {"Accept": "application/json"})):
        assert client.get(f"{PREDICT}/{task_id}/{path}", headers={**headers, **extra}).json() == doc

    # Arrow IPC stream and Parquet: typed columns, the same table
    by_format = {}
    for path, extra, media in (
        ("results.arrow", {}, ARROW_TYPE),
        ("results?format=arrow", {}, ARROW_TYPE),
        ("results", {"Accept": f"text/csv;q=0.5, {ARROW_TYPE}"}, ARROW_TYPE),
        ("results.parquet", {}, PARQUET_TYPE),
        ("results?format=parquet", {"Accept": "text/csv"}, PARQUET_TYPE),
        ("results", {"Accept": "application/x-parquet"}, PARQUET_TYPE),
    ):
        r = client.get(f"{PREDICT}/{task_id}/{path}", headers={**headers, **extra})
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == media, path
        if media == ARROW_TYPE:
            table = pa.ipc.open_stream(r.content).read_all()
        else:
            table = pq.read_table(io.BytesIO(r.content))
        by_format[path + str(extra)] = table.to_pydict()
        assert table.schema.names == COLUMNS
        assert table.schema.field("row").type == pa.int64()
        assert table.schema.field("age").type == pa.float64()
        assert table.schema.field("prediction").type == pa.float64()
        assert table.schema.field("status").type == pa.string()
        assert table.schema.metadata[b"mlmarket.task"] == task_id.encode()
    tables = list(by_format.values())
    assert all(t == tables[0] for t in tables)
    columns = tables[0]
    assert columns["row"] == [1, 2, 3]
    assert columns["status"] == ["ok", "rejected", "ok"]
    assert columns["error"] == [None, reason, None]
    assert columns["bmi"] == [good[0]["bmi"], None, good[1]["bmi"]]
    assert columns["prediction"][1] is None
    assert [columns["prediction"][0], columns["prediction"][2]] == pytest.approx(expected, rel=1e-9)
    assert [columns["prediction"][0], columns["prediction"][2]] == [rows[0]["prediction"], rows[2]["prediction"]]


def test_a_parquet_upload_is_checked_like_json_rows_and_comes_back_as_parquet(
    client: TestClient, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear", price=1)
    headers = make_user()
    top_up(client, headers, 50)
    sent: list[dict[str, Any]] = [_row(0.01), {**_row(0.02), "bmi": None}, _row(0.03), {**_row(0.04), "s1": "x"}]
    for i, row in enumerate(sent):  # one column as whole numbers, one as text
        row["sex"] = [1, 2, 1, 2][i]
        row["s1"] = str(row["s1"])
    good = [sent[0], sent[2]]
    # the columns in another order, and a pandas index to ignore
    frame = pd.DataFrame(sent, index=[10, 11, 12, 13])[list(reversed(FEATURES))]
    data = _parquet(pa.Table.from_pandas(frame, preserve_index=True))
    assert pq.read_schema(io.BytesIO(data)).names[-1] == "__index_level_0__"

    json_path = client.post(PREDICT, json={"model": "diabetes-linear", "rows": sent}, headers=headers).json()
    r = _upload(client, headers, "rows.parquet", data, "application/octet-stream")
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert (accepted["rows_accepted"], accepted["rows_rejected"], accepted["cost"]) == (2, 2, 2)
    # the same rows, the same verdicts and messages as the JSON path
    assert accepted["errors"] == json_path["errors"]
    assert [e["row"] for e in accepted["errors"]] == [2, 4]
    assert "feature 'bmi' must be a finite number, got null" in accepted["errors"][0]["reason"]
    assert "feature 's1' must be a finite number, got 'x'" in accepted["errors"][1]["reason"]
    expected = wait_finished(client, headers, json_path["id"])["results"]
    assert _same(wait_finished(client, headers, accepted["id"])["results"], expected)

    r = client.get(f"{PREDICT}/{accepted['id']}/results", params={"format": "parquet"}, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == PARQUET_TYPE
    assert f'filename="prediction-{accepted["id"]}.parquet"' in r.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(r.content)).to_pydict()
    assert table["row"] == [1, 2, 3, 4]
    assert table["status"] == ["ok", "rejected", "ok", "rejected"]
    assert table["error"] == [
        None,
        *(e["reason"] for e in accepted["errors"][:1]),
        None,
        accepted["errors"][1]["reason"],
    ]
    assert table["sex"] == [1.0, None, 1.0, None]
    assert table["age"] == [good[0]["age"], None, good[1]["age"], None]
    assert table["s1"] == [float(good[0]["s1"]), None, float(good[1]["s1"]), None]
    assert _same(table["prediction"], [expected[0], None, expected[2], None])

    # recognised by its first bytes too, whatever its name and declared type
    r = _upload(client, headers, "upload.bin", _parquet(pa.Table.from_pylist(good)), "application/octet-stream")
    assert r.status_code == 202, r.text
    assert r.json()["rows_accepted"] == 2
    assert balance(client, headers) == 50 - 2 - 2 - 2


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("rows.parquet", b"PAR1 definitely not thrift PAR1", 400, "the Parquet file cannot be read"),
        ("rows.parquet", b"age,sex\n1,2\n", 400, "not a Parquet file"),
        ("rows.parquet", "truncated", 400, "Parquet"),
        ("rows.parquet", "corrupt pages", 400, "the Parquet file cannot be read"),
        ("rows.parquet", "missing column", 422, "lacks feature column(s) 'bmi'"),
        ("rows.parquet", "unknown column", 422, "has unknown column(s) 'colour'"),
        ("rows.parquet", "list column", 422, "the Parquet column 'age' has type list"),
        ("rows.parquet", "no rows", 422, "no rows"),
        ("rows.parquet", "no valid row", 422, "no row is valid"),
    ],
)
def test_bad_parquet_files_are_4xx_and_cost_nothing(
    client: TestClient,
    engine: Engine,
    make_user: Callable[..., dict[str, str]],
    publish_model: Callable[..., Any],
    name: str,
    data: Any,
    status: int,
    words: str,
) -> None:
    publish_model("diabetes-linear", price=1)
    headers = make_user()
    top_up(client, headers, 20)
    good = _parquet(pa.Table.from_pylist([_row(0.01)] * 50))
    made = {
        "truncated": good[:-30] + b"PAR1",
        "corrupt pages": good[:4] + bytes(b ^ 0x5A for b in good[4 : len(good) // 2]) + good[len(good) // 2 :],
        "missing column": _parquet(pa.Table.from_pylist([{k: v for k, v in DIABETES_ROW.items() if k != "bmi"}])),
        "unknown column": _parquet(pa.Table.from_pylist([{**DIABETES_ROW, "colour": "red"}])),
        "list column": _parquet(pa.Table.from_pylist([{**DIABETES_ROW, "age": [1.0, 2.0]}])),
        "no rows": _parquet(pa.Table.from_pylist([DIABETES_ROW]).slice(0, 0)),
        "no valid row": _parquet(pa.Table.from_pylist([{**DIABETES_ROW, "bmi": None}])),
    }
    data = made.get(data, data) if isinstance(data, str) else data
    r = _upload(client, headers, name, data, PARQUET_TYPE)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["detail"]
    assert balance(client, headers) == 20
    assert _tasks(engine) == 0


def test_parquet_uploads_keep_the_row_and_byte_limits(
    settings: Settings, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear")
    small = make_settings(settings.database_url or "", settings.data_dir, predict_max_rows=5, predict_max_bytes=4096)
    with TestClient(create_app(small)) as client:
        client.post("/api/v1/auth/register", json={"email": "pq@example.com", "password": "password-1"})
        token = client.post("/api/v1/auth/token", data={"username": "pq@example.com", "password": "password-1"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        top_up(client, headers, 100)
        r = _upload(client, headers, "rows.parquet", _parquet(pa.Table.from_pylist([DIABETES_ROW] * 6)), PARQUET_TYPE)
        assert r.status_code == 413 and "at most 5 rows" in r.json()["detail"]
        # a small file whose text expands far past the limit once read
        bomb = pa.Table.from_pylist([{**DIABETES_ROW, "age": 0.1}] * 5).append_column(
            "colour", pa.array(["x" * 9000] * 5)
        )
        sink = io.BytesIO()
        pq.write_table(bomb, sink, compression="zstd", use_dictionary=False)
        assert len(sink.getvalue()) < 4096
        r = _upload(client, headers, "rows.parquet", sink.getvalue(), PARQUET_TYPE)
        assert r.status_code == 413 and "uncompressed" in r.json()["detail"]
        big = _parquet(pa.Table.from_pylist([{**DIABETES_ROW, "age": float(i)} for i in range(5)])) + b"\0" * 4096
        r = _upload(client, headers, "rows.parquet", big, PARQUET_TYPE)
        assert r.status_code == 413 and "Parquet file is larger" in r.json()["detail"]
        assert balance(client, headers) == 100


def _publish_formula_model(engine: Engine, settings: Settings) -> list[Feature]:
    """A model whose author named a feature like a formula and whose labels are formulas."""
    frame = pd.DataFrame({"=city": ["a", "b", "c", "d"] * 10, "x": [float(n) for n in range(40)]})
    frame["label"] = ["@SUM(A1)" if n < 20 else "+1" for n in range(40)]
    result, _ = train_and_publish(
        engine,
        settings,
        name="formulas",
        frame=frame,
        target="label",
        algorithm="LogisticRegression",
        task=ModelTask.classification,
        description="formula names",
    )
    return list(result.features)


def test_csv_results_neutralise_formulas_in_names_values_and_labels(
    client: TestClient, make_user: Callable[..., dict[str, str]], engine: Engine, settings: Settings
) -> None:
    features = _publish_formula_model(engine, settings)
    assert [f.name for f in features] == ["=city", "x"]
    headers = make_user()
    top_up(client, headers, 10)
    body = _csv_body(["=city", "x"], [["=HYPERLINK(1)", 1.0], ["b", "-2+3"], ["-c", 39.0]])
    r = _upload(client, headers, "rows.csv", body, "text/csv", model="formulas")
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    assert wait_finished(client, headers, task_id)["status"] == "succeeded"
    lines = _read_csv(client.get(f"{PREDICT}/{task_id}/results.csv", headers=headers).text)
    assert lines[0] == ["row", "'=city", "x", "prediction", "status", "error"]
    assert [line[1] for line in lines[1:]] == ["'=HYPERLINK(1)", "", "'-c"]
    assert {line[3] for line in (lines[1], lines[3])} <= {"'@SUM(A1)", "'+1"}
    assert lines[2][4:] == ["rejected", lines[2][5]] and lines[2][5].startswith("row 2")
    cells = [cell for line in lines for cell in line]
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells), lines
    # the other formats are not spreadsheets: they keep the values as they are
    doc = client.get(f"{PREDICT}/{task_id}/results.json", headers=headers).json()
    assert doc["columns"][1] == "=city" and doc["rows"][0][1] == "=HYPERLINK(1)"
    assert doc["rows"][0][3] in ("@SUM(A1)", "+1")
    table = pq.read_table(io.BytesIO(client.get(f"{PREDICT}/{task_id}/results.parquet", headers=headers).content))
    assert table.column("=city").to_pylist() == ["=HYPERLINK(1)", None, "-c"]


def test_unknown_formats_and_unfinished_or_foreign_tasks_are_refused(
    client: TestClient, engine: Engine, make_user: Callable[..., dict[str, str]], publish_model: Callable[..., Any]
) -> None:
    publish_model("diabetes-linear")
    alice, mallory = make_user(), make_user()
    top_up(client, alice, 20)
    task_id = client.post(PREDICT, json={"model": "diabetes-linear", "rows": [DIABETES_ROW]}, headers=alice).json()[
        "id"
    ]
    wait_finished(client, alice, task_id)
    base = f"{PREDICT}/{task_id}"

    r = client.get(f"{base}/results", params={"format": "xml"}, headers=alice)
    assert r.status_code == 400 and "unknown results format 'xml'" in r.json()["detail"]
    r = client.get(f"{base}/results", headers={**alice, "Accept": "application/xml"})
    assert r.status_code == 406 and "text/csv" in r.json()["detail"]
    assert client.get(f"{base}/results", headers={**alice, "Accept": "text/csv;q=0, */*"}).json()["id"] == task_id
    assert client.get(f"{base}/results.xml", headers=alice).status_code == 404

    paths = [f"{base}/results{suffix}" for suffix in ("", ".csv", ".json", ".arrow", ".parquet")]
    paths.append(f"{base}/results?format=parquet")
    for path in paths:
        assert client.get(path, headers=alice).status_code == 200, path
        r = client.get(path, headers=mallory)
        assert r.status_code == 404 and r.json()["detail"] == f"prediction {task_id} not found", path
        assert client.get(path).status_code == 401, path
    assert client.get(f"{PREDICT}/{'0' * 36}/results.parquet", headers=alice).status_code == 404

    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE tasks SET status = 'running', outputs = NULL WHERE id = :id"), {"id": task_id}
        )
    for path in paths:
        r = client.get(path, headers=alice)
        assert r.status_code == 409 and "no results yet" in r.json()["detail"], path


def test_accept_headers_pick_a_format_by_quality_then_order() -> None:
    assert results.format_from_accept(None) == "json"
    assert results.format_from_accept("*/*") == "json"
    assert results.format_from_accept("text/*") == "csv"
    assert results.format_from_accept("text/html, text/csv;q=0.8, application/vnd.apache.parquet") == "parquet"
    assert results.format_from_accept(f"{ARROW_TYPE};q=0.9, {PARQUET_TYPE};q=0.9") == "arrow"
    assert results.format_from_accept("Text/CSV; charset=utf-8") == "csv"
    assert results.format_from_accept("application/json;q=bad, text/csv") == "csv"
    with pytest.raises(results.NotAcceptable):
        results.format_from_accept("image/png, text/csv;q=0")
    assert results.format_from_query(" Parquet ") == "parquet"


def _table(total: int, accepted: list[int] | None, outputs: list[Any]) -> results.ResultTable:
    numbers = accepted if accepted is not None else list(range(1, total + 1))
    return results.ResultTable(
        task_id="t",
        model="m",
        version=1,
        features=[Feature(name="a", type="number"), Feature(name="s", type="string")],
        inputs={"a": [float(n) for n in numbers], "s": [f"v{n}" for n in numbers]},
        outputs=outputs,
        row_numbers=accepted,
        rows_total=total,
        errors={n: f"row {n}: bad" for n in range(1, total + 1) if n not in numbers},
    )


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 100])
def test_streamed_chunks_line_up_rows_across_chunk_boundaries(chunk: int) -> None:
    table = _table(7, [1, 3, 4, 7], [10, 30, 40, 70])
    rows = [row for part in table.chunks(chunk) for row in zip(*part, strict=True)]
    assert rows == [
        (1, 1.0, "v1", 10, "ok", None),
        (2, None, None, None, "rejected", "row 2: bad"),
        (3, 3.0, "v3", 30, "ok", None),
        (4, 4.0, "v4", 40, "ok", None),
        (5, None, None, None, "rejected", "row 5: bad"),
        (6, None, None, None, "rejected", "row 6: bad"),
        (7, 7.0, "v7", 70, "ok", None),
    ]
    streamed = b"".join(result_writers.json_chunks(table, chunk))
    assert [tuple(r) for r in json.loads(streamed)["rows"]] == rows
    lines = _read_csv(b"".join(result_writers.csv_chunks(table, chunk)).decode())
    assert len(lines) == 8 and lines[2] == ["2", "", "", "", "rejected", "row 2: bad"]
    assert pa.ipc.open_stream(b"".join(result_writers.arrow_chunks(table, chunk))).read_all().num_rows == 7
    parquet = pq.ParquetFile(io.BytesIO(b"".join(result_writers.parquet_chunks(table, chunk))))
    assert parquet.metadata.num_rows == 7 and parquet.metadata.num_row_groups == -(-7 // chunk)
    assert parquet.read().column("prediction").to_pylist() == [10, None, 30, 40, None, None, 70]


def test_every_row_accepted_and_names_that_clash_with_ours() -> None:
    table = _table(3, None, ["x", "y", "z"])
    first, last = table.chunks(2)
    assert first == [[1, 2], [1.0, 2.0], ["v1", "v2"], ["x", "y"], ["ok", "ok"], [None, None]]
    assert last == [[3], [3.0], ["v3"], ["z"], ["ok"], [None]]
    clash = results.ResultTable(
        task_id="t",
        model="m",
        version=1,
        features=[Feature(name="status", type="number"), Feature(name="row", type="integer")],
        inputs={"status": [1.5], "row": [7]},
        outputs=[True],
        row_numbers=None,
        rows_total=1,
        errors={},
    )
    assert clash.columns == ["_row", "status", "row", "prediction", "_status", "error"]
    read = pq.read_table(io.BytesIO(b"".join(result_writers.parquet_chunks(clash))))
    assert read.schema.field("row").type == pa.int64() and read.schema.field("prediction").type == pa.bool_()
    assert read.to_pylist() == [
        {"_row": 1, "status": 1.5, "row": 7, "prediction": True, "_status": "ok", "error": None}
    ]
