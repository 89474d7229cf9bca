"""Compiled models: a trained pipeline as an ONNX graph, shipped only with proof that it answers like its source.

:func:`compile_pipeline` converts a pipeline of :func:`app.runtime.training.build_pipeline` with skl2onnx, runs
the graph on the held-out rows and keeps it only when it agrees with ``pipeline.predict`` (and
``predict_proba``). :class:`CompiledModel` serves such a graph with ONNX Runtime and NumPy alone: importing
this module, loading and predicting never import scikit-learn, pandas, skl2onnx or onnx.

The graph has one input per feature, named as the feature, of shape ``[None, 1]``: ``tensor(double)`` for
numbers and integers (NaN: missing), ``tensor(string)`` for strings (``""``: missing; the API refuses empty
strings, so only the parity check feeds it). Its outputs are ``prediction`` (``[None, 1]`` double) for a
regressor, and ``label`` (``[None]`` int64, the index into the classes) and ``probabilities`` (``[None, k]``
double) for a classifier.

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import AppError
from app.runtime.schema import Feature

# How a missing string reaches the graph, which imputes it like the pipeline imputes NaN.
MISSING_STRING = ""
OPSET = 21  # string Equal needs 19
# ai.onnx.ml 3: double thresholds on the tree ensembles; CatBoost's TreeEnsemble* nodes stay valid (they are
# deprecated from ai.onnx.ml 5 on).
ML_OPSET = 3
DOUBLE_RTOL = 1e-9
FLOAT32_RTOL = 1e-5
PROBABILITY_ATOL = 1e-5
PREDICTION = "prediction"
LABEL = "label"
PROBABILITIES = "probabilities"
# Leaf numbers travel through the float32 output of TreeEnsembleRegressor: exact below 2**24 leaves per tree.
_MAX_LEAVES_PER_TREE = 2**24


class CompiledModelError(AppError):
    """The ONNX graph does not fit the model's features, task or classes."""

    status_code = 422


@dataclass(frozen=True)
class CompileResult:
    """The ONNX bytes when the graph matched the pipeline on ``checked_rows`` held-out rows, else why not."""

    onnx: bytes | None
    reason: str | None
    checked_rows: int
    # Regression: the largest |compiled - pipeline| prediction; classification: the largest probability gap.
    max_abs_error: float | None
    probabilities: bool


# -- runtime (numpy and onnxruntime only) -----------------------------------------------------------------


class CompiledModel:
    """An ONNX graph of a pipeline, served by ONNX Runtime on one core per call."""

    def __init__(
        self, session: Any, features: Sequence[Feature], task: str, classes: Sequence[Any] | None, nbytes: int
    ) -> None:
        self._session = session
        self.features = list(features)
        self.task = task
        self.classes = list(classes) if classes is not None else None
        self.nbytes = nbytes
        self._inputs = tuple((f.name, f.type == "string") for f in self.features)
        # The very objects given, so that labels come back as the pipeline's: ints stay ints, strings stay str.
        self._labels = None if self.classes is None else np.asarray(self.classes, dtype=object)
        names = [o.name for o in session.get_outputs()]
        self._first = names[:1]  # the prediction of a regressor, the class index of a classifier
        self._probabilities = names[1:2]

    @classmethod
    def load(
        cls, data: bytes | Path, features: Sequence[Feature], task: str, classes: Sequence[Any] | None
    ) -> CompiledModel:
        """A session for the graph, checked against the features, task and classes it must serve.

        The API serves many requests at once, each on its own thread, and a session may be shared by them (its
        ``run`` is thread-safe): one core per call (no intra-op or inter-op thread pool) keeps concurrent calls
        from oversubscribing the cores, and a single small batch gains nothing from fanning out.
        """
        import onnxruntime as ort

        raw = data if isinstance(data, bytes) else Path(data).read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = ort.InferenceSession(raw, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise CompiledModelError(f"the compiled model cannot be loaded: {exc}") from exc
        _check_signature(session, features, task, classes)
        return cls(session, features, task, classes, len(raw))

    def _feeds(self, columns: Mapping[str, np.ndarray[Any, Any]], n: int) -> dict[str, np.ndarray[Any, Any]]:
        feeds: dict[str, np.ndarray[Any, Any]] = {}
        for name, is_string in self._inputs:
            column = columns[name]
            if is_string:
                feeds[name] = (column if column.dtype == object else column.astype(object)).reshape(n, 1)
            else:
                feeds[name] = np.ascontiguousarray(column, dtype=np.float64).reshape(n, 1)
        return feeds

    def predict(self, columns: Mapping[str, np.ndarray[Any, Any]], n: int) -> np.ndarray[Any, Any]:
        """One prediction per row from one flat array per feature: float64 values or the class labels."""
        if self._labels is None:
            (prediction,) = self._session.run(self._first, self._feeds(columns, n))
            return np.asarray(prediction, dtype=np.float64).reshape(n)
        (index,) = self._session.run(self._first, self._feeds(columns, n))
        return self._labels.take(np.asarray(index).reshape(n))

    predict_columns = predict  # the serving path's name for it (app.services.billing.Predictor)

    def predict_proba(self, columns: Mapping[str, np.ndarray[Any, Any]], n: int) -> np.ndarray[Any, Any]:
        """For classifiers: each row's probability per class, in the order of ``classes``."""
        if not self._probabilities or self.classes is None:
            raise CompiledModelError("this model does not give class probabilities")
        (probabilities,) = self._session.run(self._probabilities, self._feeds(columns, n))
        return np.asarray(probabilities, dtype=np.float64).reshape(n, len(self.classes))


def _check_signature(session: Any, features: Sequence[Feature], task: str, classes: Sequence[Any] | None) -> None:
    inputs = {i.name: i.type for i in session.get_inputs()}
    expected = {f.name: "tensor(string)" if f.type == "string" else "tensor(double)" for f in features}
    if inputs != expected:
        raise CompiledModelError(f"the compiled model takes inputs {inputs}, the features need {expected}")
    outputs = [(o.name, o.type) for o in session.get_outputs()]
    if task == "classification":
        if not classes:
            raise CompiledModelError("a compiled classifier needs its classes")
        if [t for _, t in outputs] != ["tensor(int64)", "tensor(double)"]:
            raise CompiledModelError(f"a compiled classifier must output label and probabilities, got {outputs}")
        width = session.get_outputs()[1].shape[-1]
        if isinstance(width, int) and width != len(classes):
            raise CompiledModelError(f"the compiled classifier has {width} classes, expected {len(classes)}")
    elif task == "regression":
        if [t for _, t in outputs] != ["tensor(double)"]:
            raise CompiledModelError(f"a compiled regressor must output one double prediction, got {outputs}")
    else:
        raise CompiledModelError(f"unknown task {task!r}")


# -- compilation (scikit-learn, skl2onnx, onnx and pandas, imported when used) ----------------------------


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


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


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
    classes = [_plain(c) for c in pipeline.classes_] if task == "classification" else None
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
        tolerance = (FLOAT32_RTOL if _is_catboost(pipeline.steps[-1][1]) else DOUBLE_RTOL) * scale
        worst = int(np.argmax(gap))
        error = float(gap[worst])
        if error > tolerance:
            return fail(
                f"held-out row {index[worst]!r}: {got[worst]!r} against {expected[worst]!r} "
                f"(|difference| {error:.3g} > tolerance {tolerance:.3g})",
                error,
            )
        return CompileResult(data, None, n, error, probabilities)

    expected_labels = [_plain(v) for v in np.asarray(pipeline.predict(check_rows)).reshape(n)]
    got_labels = [_plain(v) for v in compiled.predict(columns, n)]
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


def _is_catboost(estimator: Any) -> bool:
    return type(estimator).__module__.split(".")[0] == "catboost"


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
        SimpleImputer: (_convert_imputer, _imputer_shape),
        RandomForestRegressor: (_convert_trees, _regressor_shape),
        GradientBoostingRegressor: (_convert_trees, _regressor_shape),
        RandomForestClassifier: (_convert_trees, _classifier_shape),
    }
    parsers: dict[type, Any] = {}
    options = {id(estimator): {"zipmap": False, "nocl": True}} if task == "classification" else {}
    if _is_catboost(estimator):
        shape = _classifier_shape if hasattr(estimator, "predict_proba") else _regressor_shape
        converters[type(estimator)] = (_convert_catboost, shape)
        parsers[type(estimator)] = _parse_catboost
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


# -- skl2onnx converters ----------------------------------------------------------------------------------


def _node(
    scope: Any, container: Any, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any
) -> str:
    """Adds one node (``op_domain``/``op_version`` pass through to skl2onnx); returns its first output."""
    outputs = outputs or [scope.get_unique_variable_name(op.lower())]
    container.add_node(op, inputs, outputs, name=scope.get_unique_operator_name(op), **attrs)
    return outputs[0]


def _constant(scope: Any, container: Any, proto_type: int, shape: list[int], values: list[Any]) -> str:
    name: str = scope.get_unique_variable_name("constant")
    container.add_initializer(name, proto_type, shape, values)
    return name


def _concat(scope: Any, operator: Any, container: Any) -> str:
    """The operator's inputs side by side (a plain Concat: skl2onnx's FeatureVectorizer outputs float32)."""
    names = [str(v.full_name) for v in operator.inputs]
    return names[0] if len(names) == 1 else _node(scope, container, "Concat", names, axis=1)


def _imputed_columns(imputer: Any) -> list[int]:
    """The columns a fitted SimpleImputer keeps: it drops those it saw no value in, unless told to keep them."""
    stats = list(imputer.statistics_)
    if getattr(imputer, "keep_empty_features", False):
        return list(range(len(stats)))
    return [i for i, s in enumerate(stats) if not (s is None or (isinstance(s, float) and math.isnan(s)))]


def _imputer_shape(operator: Any) -> None:
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = type(operator.inputs[0].type)([n, len(_imputed_columns(operator.raw_operator))])


def _convert_imputer(scope: Any, operator: Any, container: Any) -> None:
    """SimpleImputer in double (skl2onnx's Imputer node holds float32 values and refuses NaN-missing strings)."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import StringTensorType

    imputer = operator.raw_operator
    if not (isinstance(imputer.missing_values, float) and math.isnan(imputer.missing_values)):
        raise NotImplementedError(f"SimpleImputer(missing_values={imputer.missing_values!r}) is not supported")
    x = _concat(scope, operator, container)
    kept = _imputed_columns(imputer)
    if len(kept) != len(imputer.statistics_):
        x = _node(
            scope, container, "Gather", [x, _constant(scope, container, TensorProto.INT64, [len(kept)], kept)], axis=1
        )
    if isinstance(operator.inputs[0].type, StringTensorType):
        values = [str(imputer.statistics_[i]) for i in kept]
        if MISSING_STRING in values:
            raise ValueError("the most frequent string is empty, which stands for a missing string")
        fill = _constant(scope, container, TensorProto.STRING, [1, len(kept)], [v.encode() for v in values])
        marker = _constant(scope, container, TensorProto.STRING, [], [MISSING_STRING.encode()])
        missing = _node(scope, container, "Equal", [x, marker])
    else:
        stats = np.asarray(imputer.statistics_, dtype=np.float64)[kept].tolist()
        fill = _constant(scope, container, TensorProto.DOUBLE, [1, len(kept)], stats)
        missing = _node(scope, container, "IsNaN", [x])
    _node(scope, container, "Where", [missing, fill, x], [operator.outputs[0].full_name])


def _regressor_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType

    operator.outputs[0].type = DoubleTensorType([operator.inputs[0].get_first_dimension(), 1])


def _classifier_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType, Int64TensorType

    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = Int64TensorType([n])
    operator.outputs[1].type = DoubleTensorType([n, len(operator.raw_operator.classes_)])


def _trees(estimator: Any) -> tuple[list[Any], list[np.ndarray[Any, Any]], float, float]:
    """The fitted trees, each one's value per node (nodes x outputs), what their sum is divided by, and added to."""
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor

    if getattr(estimator, "n_outputs_", 1) != 1:
        raise NotImplementedError("multi-output trees are not supported")
    if isinstance(estimator, GradientBoostingRegressor):
        trees = [t.tree_ for t in estimator.estimators_[:, 0]]
        init = estimator.init_
        # Every regression loss has the identity link: the raw prediction starts at what init predicts.
        start = (
            0.0 if isinstance(init, str) else float(np.ravel(init.predict(np.zeros((1, estimator.n_features_in_))))[0])
        )
        # As scikit-learn's predict_stages: learning_rate * leaf value, added up.
        return trees, [estimator.learning_rate * t.value[:, 0, :1] for t in trees], 1.0, start
    if isinstance(estimator, RandomForestRegressor | RandomForestClassifier):
        trees = [t.tree_ for t in estimator.estimators_]
        width = len(estimator.classes_) if hasattr(estimator, "classes_") else 1
        # A classifier tree's value is its leaf's class fractions, which is what it predicts.
        return trees, [t.value[:, 0, :width] for t in trees], float(len(trees)), 0.0
    raise NotImplementedError(f"no tree converter for {type(estimator).__name__}")


def _convert_trees(scope: Any, operator: Any, container: Any) -> None:
    """A forest or boosted ensemble of scikit-learn trees, in double as scikit-learn computes it.

    scikit-learn compares float32 features with float64 thresholds. A TreeEnsembleRegressor does the same on
    features rounded to float32 and puts out, per tree, the number of the leaf each row reaches (exact in its
    float32 output); the float64 leaf values are gathered by those numbers and summed in double.
    """
    from onnx import TensorProto
    from onnx.numpy_helper import from_array

    estimator = operator.raw_operator
    trees, values, divisor, start = _trees(estimator)
    nodes: dict[str, list[Any]] = {k: [] for k in ("tree", "id", "feature", "threshold", "true", "false", "mode")}
    targets: dict[str, list[Any]] = {k: [] for k in ("tree", "node", "number")}
    tables: list[np.ndarray[Any, Any]] = []
    first_leaf: list[int] = []
    total = 0
    for t, (tree, value) in enumerate(zip(trees, values, strict=True)):
        is_leaf = np.asarray(tree.children_left) < 0
        leaves = np.flatnonzero(is_leaf)
        if len(leaves) >= _MAX_LEAVES_PER_TREE:
            raise NotImplementedError(f"a tree has {len(leaves)} leaves, more than {_MAX_LEAVES_PER_TREE}")
        nodes["tree"].append(np.full(tree.node_count, t))
        nodes["id"].append(np.arange(tree.node_count))
        nodes["feature"].append(np.where(is_leaf, 0, tree.feature))
        nodes["threshold"].append(np.where(is_leaf, 0.0, tree.threshold))
        nodes["true"].append(np.where(is_leaf, 0, tree.children_left))
        nodes["false"].append(np.where(is_leaf, 0, tree.children_right))
        nodes["mode"].append(np.where(is_leaf, "LEAF", "BRANCH_LEQ"))
        targets["tree"].append(np.full(len(leaves), t))
        targets["node"].append(leaves)
        targets["number"].append(np.arange(len(leaves)))
        tables.append(np.asarray(value, dtype=np.float64)[leaves])
        first_leaf.append(total)
        total += len(leaves)
    flat = {k: np.concatenate(v).tolist() for k, v in nodes.items() if k != "threshold"}
    flat.update({f"leaf_{k}": np.concatenate(v).tolist() for k, v in targets.items()})

    x = _concat(scope, operator, container)
    x = _node(
        scope, container, "Cast", [_node(scope, container, "Cast", [x], to=TensorProto.FLOAT)], to=TensorProto.DOUBLE
    )
    leaf_numbers = _node(
        scope,
        container,
        "TreeEnsembleRegressor",
        [x],
        op_domain="ai.onnx.ml",
        op_version=3,
        n_targets=len(trees),
        aggregate_function="SUM",
        post_transform="NONE",
        nodes_treeids=flat["tree"],
        nodes_nodeids=flat["id"],
        nodes_featureids=flat["feature"],
        nodes_modes=flat["mode"],
        nodes_values_as_tensor=from_array(np.concatenate(nodes["threshold"]).astype(np.float64)),
        nodes_truenodeids=flat["true"],
        nodes_falsenodeids=flat["false"],
        target_treeids=flat["leaf_tree"],
        target_nodeids=flat["leaf_node"],
        target_ids=flat["leaf_tree"],
        target_weights=[float(v) for v in flat["leaf_number"]],
    )
    offsets = _constant(scope, container, TensorProto.INT64, [1, len(trees)], first_leaf)
    leaf_ids = _node(
        scope, container, "Add", [_node(scope, container, "Cast", [leaf_numbers], to=TensorProto.INT64), offsets]
    )
    table = np.concatenate(tables)
    table_name = _constant(scope, container, TensorProto.DOUBLE, list(table.shape), table.ravel().tolist())
    per_tree = _node(scope, container, "Gather", [table_name, leaf_ids], axis=0)
    tree_axis = _constant(scope, container, TensorProto.INT64, [1], [1])
    summed = _node(scope, container, "ReduceSum", [per_tree, tree_axis], keepdims=0)
    if hasattr(estimator, "classes_"):
        count = _constant(scope, container, TensorProto.DOUBLE, [], [divisor])
        probabilities = _node(scope, container, "Div", [summed, count], [operator.outputs[1].full_name])
        _node(scope, container, "ArgMax", [probabilities], [operator.outputs[0].full_name], axis=1, keepdims=0)
    elif divisor != 1.0:
        count = _constant(scope, container, TensorProto.DOUBLE, [], [divisor])
        _node(scope, container, "Div", [summed, count], [operator.outputs[0].full_name])
    else:
        offset = _constant(scope, container, TensorProto.DOUBLE, [], [start])
        _node(scope, container, "Add", [summed, offset], [operator.outputs[0].full_name])


def _parse_catboost(scope: Any, model: Any, inputs: Any, custom_parsers: Any = None) -> Any:
    from skl2onnx.common.data_types import DoubleTensorType, Int64TensorType

    operator = scope.declare_local_operator(f"CatBoost{type(model).__name__}", model)
    operator.inputs = inputs
    if hasattr(model, "predict_proba"):
        operator.outputs.append(scope.declare_local_variable("label", Int64TensorType()))
        operator.outputs.append(scope.declare_local_variable("probabilities", DoubleTensorType()))
    else:
        operator.outputs.append(scope.declare_local_variable("variable", DoubleTensorType()))
    return operator.outputs


def _convert_catboost(scope: Any, operator: Any, container: Any) -> None:
    """CatBoost's own ONNX export of the model (its float32 leaf values), fed float32 features as CatBoost is."""
    from catboost.utils import convert_to_onnx_object
    from onnx import TensorProto
    from onnx.helper import get_attribute_value

    model = operator.raw_operator
    try:
        exported = convert_to_onnx_object(model)
    except Exception as exc:  # CatBoostError, e.g. for boolean class labels
        classes = getattr(model, "classes_", None)
        shown = f" (classes {[_plain(c) for c in classes]!r})" if classes is not None else ""
        raise NotImplementedError(f"CatBoost's ONNX export refused the model{shown}: {exc}") from exc
    trees = [n for n in exported.graph.node if n.op_type.startswith("TreeEnsemble")]
    if len(trees) != 1 or len(exported.graph.initializer) or len(exported.graph.node) > 2:
        raise NotImplementedError("CatBoost's ONNX export is not a single tree ensemble")
    node = trees[0]
    attributes = {a.name: get_attribute_value(a) for a in node.attribute}
    version = {d.domain: d.version for d in exported.opset_import}.get(node.domain)
    x = _node(scope, container, "Cast", [_concat(scope, operator, container)], to=TensorProto.FLOAT)
    if node.op_type == "TreeEnsembleRegressor":
        raw = _node(scope, container, node.op_type, [x], op_domain=node.domain, op_version=version, **attributes)
        column = _constant(scope, container, TensorProto.INT64, [2], [-1, 1])
        as_double = _node(scope, container, "Cast", [raw], to=TensorProto.DOUBLE)
        _node(scope, container, "Reshape", [as_double, column], [operator.outputs[0].full_name])
        return
    # CatBoost's label output is the class name; the index is taken from the probabilities instead.
    attributes.pop("classlabels_strings", None)
    attributes["classlabels_int64s"] = list(range(len(model.classes_)))
    outputs = [scope.get_unique_variable_name("catboost_label"), scope.get_unique_variable_name("catboost_proba")]
    _node(scope, container, node.op_type, [x], outputs, op_domain=node.domain, op_version=version, **attributes)
    probabilities = _node(
        scope, container, "Cast", [outputs[1]], [operator.outputs[1].full_name], to=TensorProto.DOUBLE
    )
    _node(scope, container, "ArgMax", [probabilities], [operator.outputs[0].full_name], axis=1, keepdims=0)
