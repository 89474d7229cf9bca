"""The prediction worker's own rules, run in-process on both databases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.core.config import Settings
from app.models.task import Task
from app.runtime.cache import ModelCache
from app.services import catalog, ledger, predictions, submissions, users
from app.store import make_store
from ml_worker.worker import CRASH_ALLOWANCE, PredictionWorker
from tests.samples import DIABETES_ROW

IRIS_ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}


def submitted_task(engine: Engine, publish_model: Callable[..., Any]) -> tuple[str, int]:
    publish_model("diabetes-linear", price=2)
    with Session(engine, expire_on_commit=False) as s:
        payer = users.create_user(s, email="payer@example.com", password="password-1")
        ledger.top_up(s, user_id=payer.id or 0, amount=10, idempotency_key="k")
        model = catalog.resolve(s, "diabetes-linear")
        rows = predictions.prepare_rows(catalog.features_of(model), [DIABETES_ROW, DIABETES_ROW], max_rows=10)
        task = submissions.submit(s, user_id=payer.id or 0, model=model, rows=rows)
        return task.task_id, payer.id or 0


def worker(settings: Settings, engine: Engine) -> PredictionWorker:
    return PredictionWorker(settings, engine, ModelCache(make_store(settings), 4, 10**9))


def test_a_task_runs_once_and_a_second_delivery_is_ignored(
    settings: Settings, engine: Engine, publish_model: Callable[..., Any]
) -> None:
    task_id, payer = submitted_task(engine, publish_model)
    w = worker(settings, engine)
    assert w.run_task(task_id) == "succeeded"
    assert w.run_task(task_id) == "ignored"
    with Session(engine) as s:
        assert ledger.balance_of(s, payer) == 6
        assert ledger.verify(s).ok


def test_a_task_that_keeps_killing_workers_is_failed_and_refunded(
    settings: Settings, engine: Engine, publish_model: Callable[..., Any]
) -> None:
    task_id, payer = submitted_task(engine, publish_model)
    # As if workers had taken it and died this many times without a word.
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE tasks SET attempts = :n WHERE id = :task"),
            {"n": settings.task_max_attempts + CRASH_ALLOWANCE, "task": task_id},
        )
    assert worker(settings, engine).run_task(task_id) == "failed"
    with Session(engine) as s:
        task = s.get(Task, task_id)
        assert task is not None and task.status == "failed"
        assert "stopped its worker" in (task.error or "")
        assert ledger.balance_of(s, payer) == 10
        assert ledger.verify(s).ok


def test_a_batch_of_tasks_from_several_payers_settles_each_once(
    settings: Settings, engine: Engine, publish_model: Callable[..., Any]
) -> None:
    """One run of many tasks (two models, five payers, a duplicate and an unknown id): each task is charged and
    settled exactly once, with the same predictions as when it runs alone."""
    publish_model("diabetes-linear", price=2)
    publish_model("iris-logistic", price=3)
    samples = {"diabetes-linear": DIABETES_ROW, "iris-logistic": IRIS_ROW}
    ids: list[str] = []
    payers: list[int] = []
    with Session(engine, expire_on_commit=False) as s:
        for n in range(5):
            payer = users.create_user(s, email=f"batch-{n}@example.com", password="password-1")
            ledger.top_up(s, user_id=payer.id or 0, amount=100, idempotency_key=f"k{n}")
            payers.append(payer.id or 0)
            for name, sample in samples.items():
                model = catalog.resolve(s, name)
                rows = predictions.prepare_rows(catalog.features_of(model), [sample] * (n + 1), max_rows=10)
                ids.append(submissions.submit(s, user_id=payer.id or 0, model=model, rows=rows).task_id)
    w = worker(settings, engine)
    outcomes = w.run_tasks([*ids, ids[0], "no-such-task"])
    assert outcomes[: len(ids)] == ["succeeded"] * len(ids)
    assert outcomes[-1] == "ignored"
    alone_id = ids[0]
    with Session(engine) as s:
        for n, payer in enumerate(payers):
            assert ledger.balance_of(s, payer) == 100 - (n + 1) * (2 + 3)
        report = ledger.verify(s)
        assert report.ok, report
        assert report.total_held == 0
        per_model: dict[int, set[Any]] = {}
        for task_id in ids:
            task = s.get(Task, task_id)
            assert task is not None and task.status == "succeeded"
            results = predictions.aligned_results(task)
            assert results is not None and len(results) == task.rows_total
            per_model.setdefault(task.model_version_id, set()).update(results)  # type: ignore[arg-type]
    # every row is the same: one prediction per model, whichever task and batch position it had
    assert len(per_model) == 2 and all(len(values) == 1 for values in per_model.values())
    assert w.run_tasks([alone_id]) == ["ignored"]
