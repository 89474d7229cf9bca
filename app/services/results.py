"""The results of a paid prediction as a table, and the formats it is downloaded in (JSON, CSV, Arrow, Parquet).

A task keeps its accepted rows and predictions compactly (app.services.tabular). A download lists every row the
user sent, in request order: ``row`` (its 1-based position in the request), the features, ``prediction``,
``status`` (``ok`` or ``rejected``) and ``error`` (why a row was rejected); a task that asked for class
probabilities has a ``probability_<class>`` column per class right after ``prediction``. :class:`ResultTable`
hands it over in chunks of rows, which app.services.result_writers turns into a body in each format, so a body
is never built whole. Parquet uploads are read in by app.services.parquet_uploads.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from sqlmodel import Session

from app.core.errors import AppError, BadRequest, Conflict
from app.models.catalog import ModelVersion
from app.models.task import TaskStatus
from app.runtime.schema import Feature, FeatureType
from app.services import catalog, predictions, tabular

# -- formats ------------------------------------------------------------------------------------------------

JSON: Final = "json"
CSV: Final = "csv"
ARROW: Final = "arrow"
PARQUET: Final = "parquet"
FORMATS: Final = (JSON, CSV, ARROW, PARQUET)
MEDIA_TYPES: Final = {
    JSON: "application/json",
    CSV: "text/csv",
    ARROW: "application/vnd.apache.arrow.stream",
    PARQUET: "application/vnd.apache.parquet",
}
# Other names clients use for the same formats in Accept.
_MEDIA_ALIASES: Final = {
    "application/x-parquet": PARQUET,
    "application/parquet": PARQUET,
    "application/x-apache-arrow-stream": ARROW,
}
_WILDCARDS: Final = {"*/*": JSON, "application/*": JSON, "text/*": CSV}
EXTENSIONS = {JSON: "json", CSV: "csv", ARROW: "arrows", PARQUET: "parquet"}

OK = "ok"
REJECTED = "rejected"


class NotAcceptable(AppError):
    status_code = 406


def format_from_accept(accept: str | None) -> str:
    """The format an Accept header asks for (highest quality first, then the order given); JSON without one.

    :class:`NotAcceptable` when it names none of the formats.
    """
    if accept is None or not accept.strip():
        return JSON
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        found = _WILDCARDS.get(media) or _MEDIA_ALIASES.get(media)
        found = found or next((name for name, media_type in MEDIA_TYPES.items() if media_type == media), None)
        if found is None or not quality > 0:
            continue
        if best is None or (-quality, position) < (-best[0], best[1]):
            best = (quality, position, found)
    if best is None:
        raise NotAcceptable(
            "results are available as " + ", ".join(MEDIA_TYPES.values()) + "; choose one with Accept or ?format="
        )
    return best[2]


def format_from_query(value: str) -> str:
    name = value.strip().lower()
    if name not in FORMATS:
        raise BadRequest(f"unknown results format {value[:40]!r}; use one of {', '.join(FORMATS)}")
    return name


# -- the results of a task ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultTable:
    """Everything a download needs, read from the task before the body is streamed (no database session
    stays open meanwhile)."""

    task_id: str
    model: str
    version: int
    features: list[Feature]
    inputs: dict[str, list[Any]]
    outputs: list[Any]
    row_numbers: list[int] | None
    rows_total: int
    errors: dict[int, str]
    # For a task that asked for them: the classes, and each accepted row's probabilities in their order.
    classes: list[Any] | None = None
    probabilities: list[list[float]] | None = None

    @property
    def rows_accepted(self) -> int:
        return len(self.row_numbers) if self.row_numbers is not None else len(self.outputs)

    @property
    def columns(self) -> list[str]:
        """``row``, the features, ``prediction``, ``probability_<class>`` per class (a task that asked for them),
        ``status``, ``error``; a column of ours that a feature's name takes is prefixed with ``_`` (as often as
        needed) so that every name is distinct."""
        taken = {f.name for f in self.features}

        def free(name: str) -> str:
            while name in taken:
                name = "_" + name
            taken.add(name)
            return name

        row = free("row")
        prediction, status, error = free("prediction"), free("status"), free("error")
        classes = [free(f"probability_{c}") for c in self.classes or []]
        return [row, *(f.name for f in self.features), prediction, *classes, status, error]

    @property
    def width(self) -> int:
        """How many probability columns follow ``prediction``."""
        return len(self.classes or [])

    def _probability_columns(self, lo: int, hi: int, at: list[int] | None, count: int) -> list[list[Any]]:
        """The probability columns of accepted rows ``lo:hi``: in place, or at positions ``at`` of ``count``."""
        if not self.width:
            return []
        rows: list[Any] = (self.probabilities or [])[lo:hi]
        rows += [None] * (hi - lo - len(rows))
        columns: list[list[Any]] = []
        for j in range(self.width):
            values = [None if r is None else r[j] for r in rows]
            if at is None:
                columns.append(values)
                continue
            column: list[Any] = [None] * count
            for i, value in zip(at, values, strict=True):
                column[i] = value
            columns.append(column)
        return columns

    def chunks(self, size: int) -> Iterator[list[list[Any]]]:
        """The table in request order, ``size`` rows at a time, as one list per column (see ``columns``)."""
        numbers = self.row_numbers
        names = [f.name for f in self.features]
        for start in range(1, self.rows_total + 1, size):
            stop = min(start + size, self.rows_total + 1)
            count = stop - start
            if numbers is None:
                lo, hi = start - 1, stop - 1
            else:
                lo, hi = bisect.bisect_left(numbers, start), bisect.bisect_left(numbers, stop)
            outputs = self.outputs[lo:hi]
            if len(outputs) < hi - lo:
                outputs = outputs + [None] * (hi - lo - len(outputs))
            if hi - lo == count:  # every row of the chunk was accepted
                status: list[Any] = [OK] * count
                yield [
                    list(range(start, stop)),
                    *(self.inputs[name][lo:hi] for name in names),
                    outputs,
                    *self._probability_columns(lo, hi, None, count),
                    status,
                    [None] * count,
                ]
                continue
            at = [n - start for n in numbers[lo:hi]] if numbers is not None else []
            features: list[list[Any]] = []
            for name in names:
                column: list[Any] = [None] * count
                for i, value in zip(at, self.inputs[name][lo:hi], strict=True):
                    column[i] = value
                features.append(column)
            prediction: list[Any] = [None] * count
            for i, value in zip(at, outputs, strict=True):
                prediction[i] = value
            status = [REJECTED] * count
            for i in at:
                status[i] = OK
            error = [None if s == OK else self.errors.get(start + i) for i, s in enumerate(status)]
            probabilities = self._probability_columns(lo, hi, at, count)
            yield [list(range(start, stop)), *features, prediction, *probabilities, status, error]


def load(session: Session, *, user_id: int, task_id: str) -> ResultTable:
    """The results of one of the user's tasks (:class:`NotFound` for another user's or an unknown one,
    :class:`Conflict` while it has none)."""
    task = predictions.get_for_user(session, user_id=user_id, task_id=task_id)
    if task.status != TaskStatus.succeeded.value or task.outputs is None:
        raise Conflict(f"prediction {task_id} has no results yet (status {task.status})")
    inputs = tabular.unpack_lists(task.inputs)
    model = session.get(ModelVersion, task.model_version_id)
    features = catalog.features_of(model) if model else [_guess_feature(name, inputs[name]) for name in inputs]
    outputs = tabular.unpack_values(task.outputs) or []
    numbers = sorted(task.row_numbers) if task.row_numbers is not None else None
    total = max(task.rows_total, numbers[-1] if numbers else 0, 0 if numbers is not None else len(outputs))
    stored = tabular.unpack_probabilities(task.probability_data) if task.wants_probabilities else None
    return ResultTable(
        task_id=task.id,
        model=model.name if model else "",
        version=model.version if model else 0,
        features=features,
        inputs=inputs,
        outputs=outputs,
        row_numbers=numbers,
        rows_total=total,
        errors={int(e["row"]): str(e["reason"]) for e in task.errors or []},
        classes=stored[0] if stored else None,
        probabilities=stored[1] if stored else None,
    )


def _guess_feature(name: str, values: list[Any]) -> Feature:
    kind: FeatureType = "string" if any(isinstance(v, str) for v in values) else "number"
    return Feature(name=name, type=kind)
