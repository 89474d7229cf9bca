"""skl2onnx converters for the estimators whose stock conversion is not exact enough: SimpleImputer in double,
scikit-learn's tree ensembles (leaf indices, leaf values summed in double) and CatBoost (its own ONNX export).

skl2onnx and onnx are imported when used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.runtime.compiled import MISSING_STRING

# Leaf numbers travel through the float32 output of TreeEnsembleRegressor: exact below 2**24 leaves per tree.
_MAX_LEAVES_PER_TREE = 2**24


def is_catboost(estimator: Any) -> bool:
    return type(estimator).__module__.split(".")[0] == "catboost"


def plain_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


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


def imputer_shape(operator: Any) -> None:
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = type(operator.inputs[0].type)([n, len(_imputed_columns(operator.raw_operator))])


def convert_imputer(scope: Any, operator: Any, container: Any) -> None:
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


def regressor_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType

    operator.outputs[0].type = DoubleTensorType([operator.inputs[0].get_first_dimension(), 1])


def classifier_shape(operator: Any) -> None:
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


def convert_trees(scope: Any, operator: Any, container: Any) -> None:
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


def parse_catboost(scope: Any, model: Any, inputs: Any, custom_parsers: Any = None) -> Any:
    from skl2onnx.common.data_types import DoubleTensorType, Int64TensorType

    operator = scope.declare_local_operator(f"CatBoost{type(model).__name__}", model)
    operator.inputs = inputs
    if hasattr(model, "predict_proba"):
        operator.outputs.append(scope.declare_local_variable("label", Int64TensorType()))
        operator.outputs.append(scope.declare_local_variable("probabilities", DoubleTensorType()))
    else:
        operator.outputs.append(scope.declare_local_variable("variable", DoubleTensorType()))
    return operator.outputs


def convert_catboost(scope: Any, operator: Any, container: Any) -> None:
    """CatBoost's own ONNX export of the model (its float32 leaf values), fed float32 features as CatBoost is."""
    from catboost.utils import convert_to_onnx_object
    from onnx import TensorProto
    from onnx.helper import get_attribute_value

    model = operator.raw_operator
    try:
        exported = convert_to_onnx_object(model)
    except Exception as exc:  # CatBoostError, e.g. for boolean class labels
        classes = getattr(model, "classes_", None)
        shown = f" (classes {[plain_value(c) for c in classes]!r})" if classes is not None else ""
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
