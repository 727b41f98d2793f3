"""The model format: standardisation + logistic regression, stored as JSON parameters.

Loading a model parses numbers and names only; it never executes code (no pickle, no
joblib). Attacks and gradients work in the *standardised* feature space
`z = (x - mean) / scale`, where an L-inf epsilon of 0.2 means 0.2 training standard
deviations per feature.

    >>> import numpy as np
    >>> from mlseal.ml.model import LinearModel
    >>> m = LinearModel(features=("a",), label="y", classes=(0, 1), mean=np.zeros(1), scale=np.ones(1),
    ...                 weights=np.array([2.0]), bias=0.0)
    >>> LinearModel.from_json(m.to_json()).predict(np.array([[1.0], [-1.0]])).tolist()
    [1, 0]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlseal.ml.errors import DataError, ModelFormatError
from mlseal.ml.table import Table

__all__ = ["FORMAT", "KIND", "MAX_MODEL_BYTES", "MEDIA_TYPE", "LinearModel"]

FORMAT = "mlseal.model.v1"
KIND = "standardized-logistic"
MEDIA_TYPE = "application/vnd.mlseal.model.v1+json"
MAX_MODEL_BYTES = 16 * 1024 * 1024


def _sigmoid(t: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * t))  # overflow-free logistic
    return out


@dataclass(frozen=True, eq=False)
class LinearModel:
    """P(class = classes[1] | x) = sigmoid(w . z + b), z = (x - mean) / scale."""

    features: tuple[str, ...]
    label: str
    classes: tuple[int, int]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if n == 0:
            raise ModelFormatError("model has no features")
        for name in ("mean", "scale", "weights"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ModelFormatError(f"model {name} has shape {arr.shape}, expected ({n},)")
            if not np.all(np.isfinite(arr)):
                raise ModelFormatError(f"model {name} has non-finite values")
        if not np.all(self.scale > 0):
            raise ModelFormatError("model scale must be positive")
        if not math.isfinite(self.bias):
            raise ModelFormatError("model bias is not finite")
        if self.classes[0] == self.classes[1]:
            raise ModelFormatError(f"model classes must differ, got {list(self.classes)}")

    # -- inference in the standardised space ------------------------------------------
    def standardize(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise DataError(f"input has shape {x.shape}, model expects (n, {len(self.features)})")
        out: np.ndarray = (x - self.mean) / self.scale
        return out

    def logits_z(self, z: np.ndarray) -> np.ndarray:
        out: np.ndarray = z @ self.weights + self.bias
        return out

    def proba_z(self, z: np.ndarray) -> np.ndarray:
        return _sigmoid(self.logits_z(z))

    def loss_z(self, z: np.ndarray, y01: np.ndarray) -> np.ndarray:
        """Per-example log loss (natural log)."""
        t = self.logits_z(z)
        s = 2.0 * y01 - 1.0
        out: np.ndarray = np.logaddexp(0.0, -s * t)
        return out

    def input_gradient_z(self, z: np.ndarray, y01: np.ndarray) -> np.ndarray:
        """d(log loss)/dz, analytically: (p - y) * w."""
        out: np.ndarray = (self.proba_z(z) - y01)[:, None] * self.weights[None, :]
        return out

    # -- inference on raw features ----------------------------------------------------
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.proba_z(self.standardize(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        labels = np.array(self.classes, dtype=np.int64)
        out: np.ndarray = labels[(self.predict_proba(x) >= 0.5).astype(np.int64)]
        return out

    def features_of(self, table: Table) -> np.ndarray:
        return table.matrix(self.features)

    def labels01(self, table: Table) -> np.ndarray:
        y = table.column(self.label)
        unknown = sorted({int(v) for v in y} - set(self.classes))
        if unknown:
            raise DataError(f"label {self.label!r} has values {unknown[:5]} the model does not know")
        out: np.ndarray = (y == self.classes[1]).astype(np.float64)
        return out

    # -- storage ----------------------------------------------------------------------
    def to_obj(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": KIND, "features": list(self.features), "label": self.label,
                "classes": list(self.classes), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": float(self.bias), "training": dict(self.training)}

    def to_json(self) -> bytes:
        """Deterministic bytes: same parameters, same bytes, same digest."""
        return json.dumps(self.to_obj(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> LinearModel:
        if len(data) > MAX_MODEL_BYTES:
            raise ModelFormatError(f"model file is {len(data)} bytes, limit {MAX_MODEL_BYTES}")

        def no_constants(name: str) -> None:
            raise ModelFormatError(f"model file contains {name}, which is not a number")

        try:
            obj = json.loads(data, parse_constant=no_constants)
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"model file is not JSON: {e}") from None
        return cls.from_obj(obj)

    @classmethod
    def from_obj(cls, obj: object) -> LinearModel:
        if not isinstance(obj, dict):
            raise ModelFormatError("model file must hold a JSON object")
        if obj.get("format") != FORMAT or obj.get("kind") != KIND:
            raise ModelFormatError(f"unsupported model format {obj.get('format')!r} kind {obj.get('kind')!r}")
        try:
            features = obj["features"]
            classes = obj["classes"]
            if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
                raise ModelFormatError("model features must be a list of names")
            if not (isinstance(classes, list) and len(classes) == 2 and all(type(c) is int for c in classes)):
                raise ModelFormatError("model classes must be two integers")
            if not isinstance(obj["label"], str) or not isinstance(obj.get("training", {}), dict):
                raise ModelFormatError("model label must be a string and training an object")
            if type(obj["bias"]) not in (int, float):
                raise ModelFormatError("model bias must be a number")
            arrays = {}
            for name in ("mean", "scale", "weights"):
                vals = obj[name]
                if not (isinstance(vals, list) and all(type(v) in (int, float) for v in vals)):
                    raise ModelFormatError(f"model {name} must be a list of numbers")
                arrays[name] = np.array(vals, dtype=np.float64)
        except KeyError as e:
            raise ModelFormatError(f"model file lacks field {e.args[0]!r}") from None
        return cls(features=tuple(features), label=obj["label"], classes=(classes[0], classes[1]),
                   mean=arrays["mean"], scale=arrays["scale"], weights=arrays["weights"],
                   bias=float(obj["bias"]), training=dict(obj.get("training", {})))
