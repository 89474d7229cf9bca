"""ONNX export: a trained pipeline as an ONNX graph, shipped only with proof that it answers like its source.

:func:`compile_pipeline` converts a pipeline of :func:`app.runtime.pipelines.build_pipeline` with skl2onnx, runs
the graph on the held-out rows with :class:`app.runtime.compiled.CompiledModel` and keeps it only when it agrees
with ``pipeline.predict`` (and ``predict_proba``). scikit-learn, skl2onnx, onnx and pandas are imported when used.

Precision. Everything runs in double, as scikit-learn does, except where scikit-learn itself uses float32:
its trees compare float32 features with float64 thresholds, so the graph rounds the features to float32 in
front of the trees and compares in double. The trees give the index of the leaf each row lands in, and the
leaf values (float64) are summed in double, so a forest or boosted ensemble agrees with scikit-learn to the
last few bits; ``DOUBLE_RTOL`` (1e-9 of the prediction scale) is a bound that a single float32 step anywhere
(~1e-7) would break. CatBoost's own ONNX export stores its leaf values and sums them in float32 (CatBoost
sums float64 leaves), so CatBoost regressors are held to ``FLOAT32_RTOL`` (1e-5 of the scale) instead.
Class labels must be identical and probabilities within ``PROBABILITY_ATOL``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.runtime.compiled import LABEL, MISSING_STRING, PREDICTION, PROBABILITIES, CompiledModel
from app.runtime.onnx_converters import (
    classifier_shape,
    convert_catboost,
    convert_imputer,
    convert_trees,
    imputer_shape,
    is_catboost,
    parse_catboost,
    plain_value,
    regressor_shape,
)
from app.runtime.schema import Feature

OPSET = 21  # string Equal needs 19
# ai.onnx.ml 3: double thresholds on the tree ensembles; CatBoost's TreeEnsemble* nodes stay valid (they are
# deprecated from ai.onnx.ml 5 on).
ML_OPSET = 3
DOUBLE_RTOL = 1e-9
FLOAT32_RTOL = 1e-5
PROBABILITY_ATOL = 1e-5


@dataclass(frozen=True)
class CompileResult:
    """The ONNX bytes when the graph matched the pipeline on ``checked_rows`` held-out rows, else why not."""

    onnx: bytes | None
    reason: str | None
    checked_rows: int
    # Regression: the largest |compiled - pipeline| prediction; classification: the largest probability gap.
    max_abs_error: float | None
    probabilities: bool


def compile_pipeline(pipeline: Any, features: Sequence[Feature], task: str, check_rows: Any) -> CompileResult:
    """The pipeline as ONNX bytes, checked on ``check_rows`` (held-out rows); on any failure, ``onnx`` is None.

    Never raises: a model that cannot be compiled or does not match is served by its pipeline.
    """
    probabilities = task == "classification" and hasattr(pipeline, "predict_proba")
    try:
        data = _convert(pipeline, features, task)
    except Exception as exc:  # any converter failure means "serve the pipeline", never a failed job
        return CompileResult(None, f"cannot be compiled to ONNX: {_describe(exc)}", 0, None, probabilities)
    try:
        return _parity(data, pipeline, features, task, check_rows, probabilities)
    except Exception as exc:  # the graph, or the pipeline, failed on the held-out rows
        return CompileResult(None, f"the parity check failed to run: {_describe(exc)}", 0, None, probabilities)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def _columns(frame: Any, features: Sequence[Feature]) -> dict[str, np.ndarray[Any, Any]]:
    """The flat columns the API builds from validated rows; missing strings become ``MISSING_STRING``."""
    import pandas as pd

    columns: dict[str, np.ndarray[Any, Any]] = {}
    for f in features:
        column = frame[f.name]
        if f.type == "string":
            columns[f.name] = np.array([MISSING_STRING if pd.isna(v) else str(v) for v in column], dtype=object)
        else:
            columns[f.name] = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return columns


def _parity(
    data: bytes, pipeline: Any, features: Sequence[Feature], task: str, check_rows: Any, probabilities: bool
) -> CompileResult:
    n = len(check_rows)
    if n == 0:
        return CompileResult(None, "no held-out rows to check the compiled model on", 0, None, probabilities)
    classes = [plain_value(c) for c in pipeline.classes_] if task == "classification" else None
    compiled = CompiledModel.load(data, features, task, classes)
    columns = _columns(check_rows, features)
    index = list(check_rows.index)

    def fail(reason: str, error: float | None) -> CompileResult:
        return CompileResult(None, f"the compiled model differs from the pipeline: {reason}", n, error, probabilities)

    if task == "regression":
        expected = np.asarray(pipeline.predict(check_rows), dtype=np.float64).reshape(n)
        got = compiled.predict(columns, n)
        gap = np.abs(got - expected)
        gap[np.isnan(gap)] = math.inf
        scale = max(1.0, float(np.max(np.abs(expected))))
        tolerance = (FLOAT32_RTOL if is_catboost(pipeline.steps[-1][1]) else DOUBLE_RTOL) * scale
        worst = int(np.argmax(gap))
        error = float(gap[worst])
        if error > tolerance:
            return fail(
                f"held-out row {index[worst]!r}: {got[worst]!r} against {expected[worst]!r} "
                f"(|difference| {error:.3g} > tolerance {tolerance:.3g})",
                error,
            )
        return CompileResult(data, None, n, error, probabilities)

    expected_labels = [plain_value(v) for v in np.asarray(pipeline.predict(check_rows)).reshape(n)]
    got_labels = [plain_value(v) for v in compiled.predict(columns, n)]
    error = 0.0
    if probabilities:
        expected_p = np.asarray(pipeline.predict_proba(check_rows), dtype=np.float64)
        got_p = compiled.predict_proba(columns, n)
        gap = np.abs(got_p - expected_p)
        gap[np.isnan(gap)] = math.inf
        row, column = np.unravel_index(int(np.argmax(gap)), gap.shape)
        error = float(gap[row, column])
        if error > PROBABILITY_ATOL:
            return fail(
                f"held-out row {index[row]!r}: probability of {(classes or [])[column]!r} "
                f"{got_p[row, column]:.6g} against {expected_p[row, column]:.6g} "
                f"(|difference| {error:.3g} > tolerance {PROBABILITY_ATOL:g})",
                error,
            )
    wrong = [i for i, (a, b) in enumerate(zip(got_labels, expected_labels, strict=True)) if a != b]
    if wrong:
        i = wrong[0]
        return fail(
            f"{len(wrong)} of {n} held-out labels differ, e.g. row {index[i]!r}: "
            f"{got_labels[i]!r} against {expected_labels[i]!r}",
            error,
        )
    return CompileResult(data, None, n, error, probabilities)


def _walk(obj: Any) -> Iterator[Any]:
    """Every fitted step of a pipeline, column transformer included."""
    yield obj
    if hasattr(obj, "transformers_"):
        for _, transformer, _ in obj.transformers_:
            if not isinstance(transformer, str):
                yield from _walk(transformer)
    elif hasattr(obj, "steps"):
        for _, step in obj.steps:
            yield from _walk(step)


def _convert(pipeline: Any, features: Sequence[Feature], task: str) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    for step in _walk(pipeline):
        for categories in getattr(step, "categories_", []):
            if MISSING_STRING in list(categories):
                raise ValueError("the empty string is a trained category, but in the graph it stands for missing")
    estimator = pipeline.steps[-1][1]
    if type(getattr(estimator, "intercept_", None)) is float:
        # A merged linear model holds a Python float where skl2onnx expects NumPy's; convert a copy.
        estimator = copy.copy(estimator)
        estimator.intercept_ = np.float64(estimator.intercept_)
        pipeline = Pipeline([*pipeline.steps[:-1], (pipeline.steps[-1][0], estimator)])
    initial_types = [
        (f.name, StringTensorType([None, 1]) if f.type == "string" else DoubleTensorType([None, 1])) for f in features
    ]
    converters: dict[type, Any] = {
        SimpleImputer: (convert_imputer, imputer_shape),
        RandomForestRegressor: (convert_trees, regressor_shape),
        GradientBoostingRegressor: (convert_trees, regressor_shape),
        RandomForestClassifier: (convert_trees, classifier_shape),
    }
    parsers: dict[type, Any] = {}
    options = {id(estimator): {"zipmap": False, "nocl": True}} if task == "classification" else {}
    if is_catboost(estimator):
        shape = classifier_shape if hasattr(estimator, "predict_proba") else regressor_shape
        converters[type(estimator)] = (convert_catboost, shape)
        parsers[type(estimator)] = parse_catboost
        options = {}  # the CatBoost parser takes none
    model = convert_sklearn(
        pipeline,
        initial_types=initial_types,
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        options=options or None,
        custom_conversion_functions={k: convert for k, (convert, _) in converters.items()},
        custom_shape_calculators={k: shape for k, (_, shape) in converters.items()},
        custom_parsers=parsers or None,
    )
    outputs = [LABEL, PROBABILITIES] if task == "classification" else [PREDICTION]
    _rename(model.graph, [f.name for f in features], outputs)
    data: bytes = model.SerializeToString()
    return data


def _rename(graph: Any, inputs: list[str], outputs: list[str]) -> None:
    """Inputs named exactly as the features (skl2onnx mangles names such as ``"b x.1"``), outputs by position.

    Every other name, in subgraphs too, becomes a fresh one no feature can take; an output whose name a feature
    has gets underscores appended.
    """
    if len(graph.input) != len(inputs) or len(graph.output) != len(outputs):
        raise ValueError(f"the graph has {len(graph.input)} inputs and {len(graph.output)} outputs")
    taken = set(inputs)
    final: list[str] = []
    for name in outputs:
        while name in taken:
            name += "_"
        taken.add(name)
        final.append(name)
    mapping: dict[str, str] = {"": ""}  # "" marks an omitted optional input
    mapping.update({v.name: new for v, new in zip(graph.input, inputs, strict=True)})
    mapping.update({v.name: new for v, new in zip(graph.output, final, strict=True)})
    counter = iter(range(1 << 62))

    def fresh(name: str) -> str:
        if name not in mapping:
            candidate = f"t{next(counter)}"
            while candidate in taken:
                candidate = f"t{next(counter)}"
            mapping[name] = candidate
        return mapping[name]

    def visit(g: Any) -> None:
        for value in (*g.input, *g.output, *g.value_info, *g.initializer):
            value.name = fresh(value.name)
        for sparse in g.sparse_initializer:
            sparse.values.name = fresh(sparse.values.name)
        for node in g.node:
            node.input[:] = [fresh(n) for n in node.input]
            node.output[:] = [fresh(n) for n in node.output]
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    visit(attribute.g)
                for sub in attribute.graphs:
                    visit(sub)

    visit(graph)
