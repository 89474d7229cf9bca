"""``mlmarket-client``: the catalog and paid predictions from a shell.

export MLMARKET_URL=http://localhost:8000 MLMARKET_API_KEY=mlm_...
mlmarket-client models
mlmarket-client predict --model diabetes-linear rows.csv > predicted.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from mlmarket_client import _core, errors
from mlmarket_client.client import Client

# A text cell starting with one of these runs as a formula in a spreadsheet; predictions come from a model's
# author, so those cells are written with a leading ' (as the server's own CSV download does).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with Client(args.url, timeout=args.timeout) as client:
            if args.command == "models":
                return _models(client, args.json, sys.stdout)
            return _predict(client, args)
    except errors.MlmarketError as exc:
        print(f"mlmarket-client: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mlmarket-client: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlmarket-client",
        description="mlmarket from a shell. The API key is read from MLMARKET_API_KEY.",
    )
    parser.add_argument("--url", help="the mlmarket server (default: MLMARKET_URL, else http://localhost:8000)")
    parser.add_argument("--timeout", type=float, default=_core.DEFAULT_TIMEOUT, help="seconds per HTTP request")
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="list the catalog")
    models.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    predict = commands.add_parser(
        "predict",
        help="predict the rows of a CSV file and write them, with a prediction column, as CSV",
        description="Writes the input rows with a 'prediction' column (and 'error' when rows were rejected; "
        "rejected rows are not charged). A summary goes to standard error.",
    )
    predict.add_argument("--model", required=True, help="the catalog model's name")
    predict.add_argument("--version", type=int, help="a version of the model (default: the newest)")
    predict.add_argument("--max-price-per-row", type=int, help="refuse (and pay nothing) if the model costs more")
    predict.add_argument("--wait", type=float, help="give up after this many seconds (default: wait until done)")
    predict.add_argument("-o", "--output", help="write here instead of standard output")
    predict.add_argument("file", help="a CSV file with a header naming the features ('-' for standard input)")
    return parser


def _models(client: Client, as_json: bool, out: TextIO) -> int:
    models = client.models()
    if as_json:
        for model in models:
            out.write(json.dumps(model.raw) + "\n")
        return 0
    table = [("NAME", "VERSION", "TASK", "PRICE/ROW", "FEATURES")]
    table += [(m.name, str(m.version), m.task, str(m.price_per_row), ", ".join(m.feature_names)) for m in models]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4] + "\n")
    return 0


def _predict(client: Client, args: argparse.Namespace) -> int:
    header, records = _read_csv(args.file)
    features = client.model(args.model)
    wanted = _core.features_of(features, args.version)
    missing = [f for f in wanted if f not in header]
    if missing:
        raise errors.ValidationError(
            f"the CSV header lacks feature column(s) {', '.join(missing)}; {args.model} expects {', '.join(wanted)}"
        )
    if not records:
        raise errors.ValidationError("the CSV file has a header but no rows")
    rows = [{name: record.get(name) for name in wanted} for record in records]
    result = client.predict(
        args.model,
        rows,
        version=args.version,
        wait=args.wait if args.wait is not None else True,
        max_price_per_row=args.max_price_per_row,
    )
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            _write_csv(out, header, records, result)
    else:
        _write_csv(sys.stdout, header, records, result)
    print(
        f"prediction {result.id}: {len(records) - len(result.errors)} rows predicted, {len(result.errors)} rejected, "
        f"cost {result.cost} credits",
        file=sys.stderr,
    )
    return 0


def _read_csv(path: str) -> tuple[list[str], list[dict[str, Any]]]:
    if path == "-":
        text = sys.stdin.read()
    else:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    header = [str(name).strip() for name in reader.fieldnames or []]
    if not header:
        raise errors.ValidationError("the CSV file is empty: its first line must be a header naming the features")
    reader.fieldnames = header
    return header, list(reader)


def _write_csv(out: TextIO, header: list[str], records: list[dict[str, Any]], result: _core.PredictionResult) -> None:
    reasons = result.error_by_row
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, "prediction", *(["error"] if reasons else [])])
    for i, (record, prediction) in enumerate(zip(records, result.predictions, strict=False)):
        cells = [record.get(name, "") for name in header]
        cells.append(_cell(prediction))
        if reasons:
            cells.append(_cell(reasons.get(i)))
        writer.writerow(cells)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return "'" + text if isinstance(value, str) and text.startswith(_FORMULA_STARTS) else text


if __name__ == "__main__":
    raise SystemExit(main())
