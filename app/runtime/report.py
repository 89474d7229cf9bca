"""The PDF report of a training job: a summary page, the confusion matrix and the feature importance chart."""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.backends.backend_pdf import PdfPages

MAX_FEATURES_CHARTED = 30
# pyplot keeps global state; draw one report at a time.
_lock = threading.Lock()


def _summary_page(pdf: PdfPages, report: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8.27, 11.69))
    lines = [
        f"Training report — job {report['job_id']}",
        "",
        f"Algorithm: {report['algorithm']} ({report['task']})",
        f"Dataset: {report.get('dataset_id')} version {report['dataset_version']}, target {report['target']!r}",
        f"Rows: {report.get('rows', {}).get('train', '?')} train, {report.get('rows', {}).get('test', '?')} test",
        "",
        "Hyperparameters:",
        *[f"    {k} = {v!r}" for k, v in sorted(report.get("hyperparameters", {}).items())],
        "",
        "Metrics:",
        *[f"    {k:<20} {v:.6g}" for k, v in sorted(report.get("metrics", {}).items())],
        "",
        "Durations:",
        *[f"    {k:<20} {v:.3f}" for k, v in sorted(report.get("durations", {}).items())],
    ]
    fig.text(0.08, 0.95, "\n".join(lines), va="top", family="monospace", fontsize=9)
    pdf.savefig(fig)  # type: ignore[no-untyped-call]
    plt.close(fig)


def _confusion_page(pdf: PdfPages, classes: list[Any], matrix: list[list[int]]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.27, 8.27))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    labels = [str(c) for c in classes]
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test split)")
    peak = max((max(row) for row in matrix if row), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    fig.tight_layout()
    pdf.savefig(fig)  # type: ignore[no-untyped-call]
    plt.close(fig)


def _importance_page(pdf: PdfPages, importance: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    values: dict[str, float] = importance.get("values", {})
    ranked = sorted(values.items(), key=lambda kv: kv[1], reverse=True)[:MAX_FEATURES_CHARTED]
    fig, ax = plt.subplots(figsize=(8.27, max(4.0, 0.3 * len(ranked) + 2)))
    names = [k for k, _ in ranked][::-1]
    ax.barh(names, [v for _, v in ranked][::-1], color="#4472c4")
    ax.set_title(f"Feature importance ({importance.get('method', '?')})")
    ax.set_xlabel("importance")
    fig.tight_layout()
    pdf.savefig(fig)  # type: ignore[no-untyped-call]
    plt.close(fig)


def render_pdf(report: dict[str, Any]) -> bytes:
    """The report as PDF bytes: summary, then the confusion matrix (classification), then feature importance.

    matplotlib is imported on the first report, not with this module: the API process serving models never
    draws one.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: draw to files only
    from matplotlib.backends.backend_pdf import PdfPages

    out = io.BytesIO()
    with _lock, PdfPages(out) as pdf:
        _summary_page(pdf, report)
        if report.get("confusion_matrix") and report.get("classes"):
            _confusion_page(pdf, report["classes"], report["confusion_matrix"])
        if report.get("feature_importance", {}).get("values"):
            _importance_page(pdf, report["feature_importance"])
        info = pdf.infodict()
        info["Title"] = f"mlmarket training report {report['job_id']}"
    return out.getvalue()
