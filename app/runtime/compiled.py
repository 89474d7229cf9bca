"""Compiled models: a trained pipeline's ONNX graph, served with ONNX Runtime and NumPy alone.

Importing this module, loading and predicting never import scikit-learn, pandas, skl2onnx or onnx; the graph
is made, and checked against its pipeline, by :func:`app.runtime.onnx_export.compile_pipeline`.

The graph has one input per feature, named as the feature, of shape ``[None, 1]``: ``tensor(double)`` for
numbers and integers (NaN: missing), ``tensor(string)`` for strings (``""``: missing; the API refuses empty
strings, so only the parity check feeds it). Its outputs are ``prediction`` (``[None, 1]`` double) for a
regressor, and ``label`` (``[None]`` int64, the index into the classes) and ``probabilities`` (``[None, k]``
double) for a classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import AppError
from app.runtime.schema import Feature

# How a missing string reaches the graph, which imputes it like the pipeline imputes NaN.
MISSING_STRING = ""
PREDICTION = "prediction"
LABEL = "label"
PROBABILITIES = "probabilities"


class CompiledModelError(AppError):
    """The ONNX graph does not fit the model's features, task or classes."""

    status_code = 422


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
        self._both = names[:2]

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

    @property
    def gives_probabilities(self) -> bool:
        return bool(self._probabilities) and self._labels is not None

    def predict_with_probabilities(
        self, columns: Mapping[str, np.ndarray[Any, Any]], n: int
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """The labels and each row's probability per class (in the order of ``classes``), from one run."""
        if self._labels is None or not self._probabilities:
            raise CompiledModelError("this model does not give class probabilities")
        index, probabilities = self._session.run(self._both, self._feeds(columns, n))
        labels = self._labels.take(np.asarray(index).reshape(n))
        return labels, np.asarray(probabilities, dtype=np.float64).reshape(n, len(self._labels))


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
