"""The training report's PDF: typeset pages a person reads (a title, tables, figures), not a text dump."""

from __future__ import annotations

import io
from pathlib import Path

from pypdf import PdfReader

from app.runtime.report import render_pdf

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reports"

REPORT = {
    "job_id": "5b1c0d3e-0000-4000-8000-000000000001",
    "algorithm": "RandomForestClassifier",
    "task": "classification",
    "dataset_id": 7,
    "dataset_name": "garden-flowers",
    "dataset_version": 2,
    "target": "kind",
    "rows": {"train": 48, "test": 12},
    "hyperparameters": {"n_estimators": 10, "max_depth": None},
    "metrics": {"test_accuracy": 0.9166666, "train_accuracy": 1.0, "test_f1_macro": 0.91},
    "durations": {"fit_seconds": 0.081, "evaluate_seconds": 0.004},
    "classes": ["large", "small"],
    "confusion_matrix": [[6, 0], [1, 5]],
    "feature_importance": {"method": "impurity", "values": {"petal length (cm)": 0.7, "sepal width (cm)": 0.3}},
}


def test_the_report_has_a_title_tables_and_figures() -> None:
    pdf = render_pdf(REPORT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "training-report.pdf").write_bytes(pdf)
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 3  # summary, confusion matrix, feature importance
    first = reader.pages[0].extract_text()
    for words in ("Training report", "Summary", "Scores", "Hyperparameters", "Durations", "measured on"):
        assert words in first, words
    # The dataset by the name its author gave it, not by its number.
    assert "garden-flowers, version 2" in first and "#7" not in first
    # Each score says which split it was measured on and how many rows that was.
    assert "accuracy" in first and "0.9167" in first and "12 rows" in first and "48 rows" in first
    assert "Confusion matrix" in reader.pages[1].extract_text()
    assert "petal length (cm)" in reader.pages[2].extract_text()
    assert reader.metadata is not None and reader.metadata.title == f"mlmarket training report {REPORT['job_id']}"


def test_a_regression_report_has_no_confusion_page() -> None:
    report = {**REPORT, "task": "regression", "classes": None, "confusion_matrix": None, "metrics": {"test_r2": 0.5}}
    reader = PdfReader(io.BytesIO(render_pdf(report)))
    assert len(reader.pages) == 2
    assert "r2" in reader.pages[0].extract_text()


def test_a_report_without_the_datasets_name_names_it_by_number() -> None:
    report = {k: v for k, v in REPORT.items() if k != "dataset_name"}
    first = PdfReader(io.BytesIO(render_pdf(report))).pages[0].extract_text()
    assert "dataset 7, version 2" in first and "#" not in first
