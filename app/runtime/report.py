"""The PDF report of a training job, typeset: a summary page of tables, the confusion matrix, the feature importance."""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.backends.backend_pdf import PdfPages

MAX_FEATURES_CHARTED = 30
# pyplot keeps global state; draw one report at a time.
_lock = threading.Lock()


A4_PORTRAIT = (8.27, 11.69)
INK = "#1f2937"
MUTED = "#6b7280"
ACCENT = "#4f46e5"
HEADER_FILL = "#eef2ff"
STRIPE_FILL = "#f9fafb"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def _table(
    fig: Any, top: float, title: str, header: list[str] | None, rows: list[list[str]], widths: list[float]
) -> float:
    """Draws a titled table whose top edge is at ``top`` (figure fraction); returns where the next one may start."""
    fig.text(0.08, top, title, fontsize=12, fontweight="bold", color=INK, va="top")
    if not rows:
        fig.text(0.08, top - 0.03, "None.", fontsize=9, color=MUTED, va="top")
        return top - 0.07
    row_height = 0.024
    lines = len(rows) + (1 if header else 0)
    height = row_height * lines
    ax = fig.add_axes((0.08, top - 0.025 - height, 0.84, height))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, colWidths=widths, loc="upper left", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.25)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor("#e5e7eb")
        cell.set_height(1.0 / lines)
        if header and row == 0:
            cell.set_facecolor(HEADER_FILL)
            cell.get_text().set_fontweight("bold")
            cell.get_text().set_color(INK)
        elif row % 2 == (0 if header else 1):
            cell.set_facecolor(STRIPE_FILL)
    return top - 0.025 - height - 0.045


def _dataset(report: dict[str, Any]) -> str:
    """The dataset as its author knows it: its name and version (its number only when the name is not given)."""
    name = str(report.get("dataset_name") or "").strip()
    version = report.get("dataset_version")
    if name:
        return f"{name}, version {version}"
    return f"dataset {report.get('dataset_id')}, version {version}"


def _summary_page(pdf: PdfPages, report: dict[str, Any]) -> None:
    """The first page, typeset: a title, what was trained on what, the scores with the rows they were measured
    on, the hyperparameters and where the time went."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig = plt.figure(figsize=A4_PORTRAIT)
    fig.text(0.08, 0.95, "Training report", fontsize=22, fontweight="bold", color=INK, va="top")
    fig.text(
        0.08,
        0.915,
        f"{report['algorithm']} · {report['task']} on {report['target']!r} · job {report['job_id']}",
        fontsize=10,
        color=MUTED,
        va="top",
    )
    fig.add_artist(Line2D([0.08, 0.92], [0.895, 0.895], color=ACCENT, linewidth=2))
    rows = report.get("rows") or {}
    train, test = rows.get("train"), rows.get("test")
    top = _table(
        fig,
        0.87,
        "Summary",
        None,
        [
            ["Algorithm", str(report["algorithm"])],
            ["Task", str(report["task"])],
            ["Dataset", _dataset(report)],
            ["Column predicted", str(report["target"])],
            ["Rows", f"{_number(train)} to train on, {_number(test)} held out to test"],
        ],
        [0.3, 0.7],
    )
    metrics = report.get("metrics") or {}
    scores = []
    for name, value in sorted(metrics.items(), key=lambda kv: (not kv[0].startswith("test_"), kv[0])):
        split = "test" if name.startswith("test_") else "train" if name.startswith("train_") else ""
        measured_on = {"test": test, "train": train}.get(split)
        label = name.removeprefix("test_").removeprefix("train_").replace("_", " ")
        scores.append([label, split or "—", _number(value), f"{_number(measured_on)} rows" if measured_on else "—"])
    top = _table(fig, top, "Scores", ["metric", "split", "value", "measured on"], scores, [0.34, 0.16, 0.2, 0.3])
    hyper = [[str(k), repr(v)] for k, v in sorted((report.get("hyperparameters") or {}).items())]
    top = _table(fig, top, "Hyperparameters", ["name", "value"], hyper, [0.4, 0.6])
    durations = [[k.replace("_", " "), f"{float(v):.3f} s"] for k, v in sorted((report.get("durations") or {}).items())]
    _table(fig, top, "Durations", ["step", "time"], durations, [0.4, 0.6])
    fig.text(0.08, 0.03, "mlmarket", fontsize=8, color=MUTED)
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
    ax.set_title("Confusion matrix (held-out test rows)", fontsize=14, fontweight="bold", color=INK, loc="left")
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
    ax.barh(names, [v for _, v in ranked][::-1], color=ACCENT)
    ax.tick_params(axis="y", labelsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(
        f"Feature importance ({importance.get('method', '?')})", fontsize=14, fontweight="bold", color=INK, loc="left"
    )
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
