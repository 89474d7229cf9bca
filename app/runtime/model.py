"""The model runtime: load a model artifact and predict, with no knowledge of HTTP or queues.

An artifact is one skops file holding a dict::

    {"format": "mlmarket-model/1", "estimator": <fitted sklearn estimator>,
     "features": [{"name": ..., "type": ..., "categories": ...}, ...], "task": "classification"}

The feature schema travels inside the artifact, so a file fetched by md5 is
self-describing; the catalog keeps a copy of the schema to validate requests
before a worker ever loads the model.

Loading never unpickles: skops rebuilds only the types it is told to trust, and
mlmarket trusts only scikit-learn, NumPy and SciPy classes (and NumPy ufuncs)
and the builtin classes. A function such as ``os.system`` or ``builtins.eval``,
or a class from any other package, makes the artifact refused.
"""

from __future__ import annotations

import builtins
import importlib
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.base import is_classifier

from app.core.errors import AppError, Unprocessable
from app.runtime.schema import Feature

ARTIFACT_FORMAT = "mlmarket-model/1"
TRUSTED_PACKAGES = frozenset({"sklearn", "numpy", "scipy"})
# Single classes trusted beyond those packages: CatBoost's estimators restore themselves from CatBoost's own
# binary model format (never pickle).
TRUSTED_CLASSES = frozenset({"catboost.core.CatBoostClassifier", "catboost.core.CatBoostRegressor"})

Prediction = float | int | str | bool | None
TaskKind = Literal["regression", "classification"]


class ModelLoadError(AppError):
    """The file is not a usable mlmarket model artifact."""

    status_code = 422


class UntrustedModelError(ModelLoadError):
    """The artifact would rebuild objects mlmarket does not trust."""


def _resolve(type_name: str) -> Any:
    """The object a dotted name refers to, importing only from the trusted packages."""
    module_name, _, attribute = type_name.rpartition(".")
    while module_name:
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            attribute = f"{head}.{attribute}"
            continue
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return obj
    raise AttributeError(type_name)


def is_trusted_type(type_name: str) -> bool:
    root = type_name.split(".", 1)[0]
    if type_name in TRUSTED_CLASSES:
        return True
    if root == "builtins":
        return isinstance(getattr(builtins, type_name.removeprefix("builtins."), None), type)
    if root not in TRUSTED_PACKAGES:
        return False
    try:
        obj = _resolve(type_name)
    except (AttributeError, ImportError):
        return False
    return isinstance(obj, type | np.ufunc)


def trusted_types(path: Path) -> list[str]:
    """The types skops asks about in ``path``, all of them trusted; otherwise :class:`UntrustedModelError`."""
    try:
        asked = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise ModelLoadError(f"{path.name} is not a skops model artifact: {exc}") from exc
    refused = sorted(t for t in asked if not is_trusted_type(t))
    if refused:
        raise UntrustedModelError(
            f"{path.name} was refused: it contains types mlmarket does not trust: {', '.join(refused)} "
            f"(only scikit-learn, NumPy, SciPy and builtin classes are loaded)",
            types=refused,
        )
    return list(asked)


def save_artifact(estimator: Any, path: Path, features: list[Feature]) -> None:
    """Writes a fitted estimator and its input schema as one skops file."""
    task: TaskKind = "classification" if is_classifier(estimator) else "regression"
    payload = {
        "format": ARTIFACT_FORMAT,
        "estimator": estimator,
        "features": [f.model_dump() for f in features],
        "task": task,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(payload, path)


def _plain(value: Any) -> Prediction:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def flat(output: Any) -> np.ndarray[Any, Any]:
    """Predictions as one value per row (CatBoost's multiclass ``predict`` answers a column of shape (n, 1))."""
    array = np.asarray(output)
    return array.reshape(-1) if array.ndim == 2 and array.shape[1] == 1 else array


class ModelRuntime:
    """A loaded model: ``predict`` takes rows already checked against ``features`` (see app.runtime.schema)."""

    def __init__(self, estimator: Any, features: list[Feature], task: TaskKind) -> None:
        self.estimator = estimator
        self.features = features
        self.task = task
        classes = getattr(estimator, "classes_", None) if task == "classification" else None
        self.classes: list[Prediction] | None = None if classes is None else [_plain(c) for c in classes]

    @classmethod
    def load(cls, path: Path) -> ModelRuntime:
        trusted = trusted_types(path)
        try:
            payload = sio.load(path, trusted=trusted)
        except Exception as exc:
            raise ModelLoadError(f"{path.name} could not be loaded: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
            raise ModelLoadError(f"{path.name} is not an mlmarket model artifact (format {ARTIFACT_FORMAT})")
        try:
            features = [Feature.model_validate(f) for f in payload["features"]]
            estimator = payload["estimator"]
            task = payload["task"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path.name} has an invalid model description: {exc}") from exc
        if task not in ("regression", "classification") or not hasattr(estimator, "predict") or not features:
            raise ModelLoadError(f"{path.name} has an invalid model description")
        return cls(estimator, features, task)

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        names = [f.name for f in self.features]
        frame = pd.DataFrame([[row[n] for n in names] for row in rows], columns=names)
        for f in self.features:
            frame[f.name] = frame[f.name].astype(object if f.type == "string" else float)
        return frame

    def predict(self, rows: list[dict[str, Any]]) -> list[Prediction]:
        """One prediction per row: a number for regression, the class label for classification."""
        if not rows:
            return []
        try:
            output = self.estimator.predict(self._frame(rows))
        except (KeyError, TypeError, ValueError) as exc:
            raise Unprocessable(f"the model could not predict these rows: {exc}") from exc
        return [_plain(v) for v in flat(output).tolist()]

    def _columns_frame(self, columns: dict[str, np.ndarray[Any, Any]], n: int) -> pd.DataFrame:
        return pd.DataFrame(
            {f.name: columns[f.name].astype(object if f.type == "string" else float) for f in self.features},
            index=pd.RangeIndex(n),
        )

    def predict_columns(self, columns: dict[str, np.ndarray[Any, Any]], n: int) -> np.ndarray[Any, Any]:
        """Predictions for ``n`` rows given as one checked array per feature (app.services.oip_columns.to_columns)."""
        frame = self._columns_frame(columns, n)
        try:
            return flat(self.estimator.predict(frame))
        except (KeyError, TypeError, ValueError) as exc:
            raise Unprocessable(f"the model could not predict these rows: {exc}") from exc

    @property
    def gives_probabilities(self) -> bool:
        return self.task == "classification" and self.classes is not None and hasattr(self.estimator, "predict_proba")

    def predict_with_probabilities(
        self, columns: dict[str, np.ndarray[Any, Any]], n: int
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``predict_columns`` and each row's probability per class (in the order of ``classes``); a pipeline's
        steps before its estimator transform the rows once for both."""
        if not self.gives_probabilities or self.classes is None:
            raise Unprocessable("this model does not give class probabilities")
        frame = self._columns_frame(columns, n)
        estimator = self.estimator
        try:
            steps = getattr(estimator, "steps", None)
            if steps and len(steps) > 1 and hasattr(estimator, "__getitem__"):
                frame = estimator[:-1].transform(frame)
                estimator = estimator[-1]
            predictions = flat(estimator.predict(frame))
            probabilities = np.asarray(estimator.predict_proba(frame), dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise Unprocessable(f"the model could not predict these rows: {exc}") from exc
        return predictions, probabilities.reshape(n, len(self.classes))

    def predict_proba(self, rows: list[dict[str, Any]]) -> list[dict[str, float]]:
        """For classifiers: each row's probability per class label."""
        if self.task != "classification" or not hasattr(self.estimator, "predict_proba") or self.classes is None:
            raise Unprocessable("this model does not give class probabilities")
        if not rows:
            return []
        try:
            output = self.estimator.predict_proba(self._frame(rows))
        except (KeyError, TypeError, ValueError) as exc:
            raise Unprocessable(f"the model could not predict these rows: {exc}") from exc
        labels = [str(c) for c in self.classes]
        return [dict(zip(labels, map(float, row), strict=True)) for row in np.asarray(output)]
