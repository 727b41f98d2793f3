"""Train the reference model: standardisation + logistic regression, seeded, optionally adversarial.

The classifier is scikit-learn's `SGDClassifier` (log loss, L2), trained one epoch at a
time with `partial_fit`. With adversarial training on, every epoch after the first
trains on the clean rows plus their FGSM perturbations at `epsilon`, recomputed against
the current weights (Goodfellow et al., 2015) — so the model learns the worst case of
its own current decision boundary, not of a stale one.

`epsilon` is in standardised feature units: 0.2 lets an attacker move every feature by
up to 0.2 of its training-set standard deviation.

    >>> from mlseal.ml import data, train
    >>> tr, te = data.split(data.make_demo_dataset(seed=0), seed=0)
    >>> model, report = train.train(tr, train.TrainConfig(epochs=5))
    >>> report.adversarial, len(model.features)
    (True, 30)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlseal._files import write_atomic
from mlseal.errors import ConfigurationError
from mlseal.ml import _report
from mlseal.ml.attacks import fgsm
from mlseal.ml.errors import DataError
from mlseal.ml.model import LinearModel
from mlseal.ml.table import ColumnType, Table

__all__ = [
    "DEFAULT_EPSILON",
    "TrainConfig",
    "TrainReport",
    "feature_columns",
    "load_model",
    "save_model",
    "train",
]

#: Default L-inf budget, in standardised feature units (see module docstring).
DEFAULT_EPSILON = 0.2


@dataclass(frozen=True)
class TrainConfig:
    label: str = "label"
    features: tuple[str, ...] | None = None  # None: every numeric column except the label
    adversarial: bool = True
    epsilon: float = DEFAULT_EPSILON
    epochs: int = 60
    alpha: float = 1e-3  # L2 regularisation strength
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigurationError(f"epochs must be >= 1, got {self.epochs}")
        if not (self.epsilon >= 0 and np.isfinite(self.epsilon)):
            raise ConfigurationError(f"epsilon must be a finite number >= 0, got {self.epsilon}")
        if not self.alpha > 0:
            raise ConfigurationError(f"alpha must be > 0, got {self.alpha}")

    def to_obj(self) -> dict[str, Any]:
        return {"label": self.label, "adversarial": self.adversarial, "epsilon": self.epsilon,
                "epsilon_units": "standardized", "epochs": self.epochs, "alpha": self.alpha, "seed": self.seed,
                "estimator": "sklearn.linear_model.SGDClassifier(loss=log_loss)"}


@dataclass(frozen=True)
class TrainReport:
    rows: int
    features: tuple[str, ...]
    class_counts: tuple[tuple[int, int], ...]
    adversarial: bool
    epsilon: float
    epochs: int
    seed: int
    train_accuracy: float

    def to_obj(self) -> dict[str, Any]:
        return {"rows": self.rows, "features": list(self.features), "n_features": len(self.features),
                "class_counts": {str(k): v for k, v in self.class_counts}, "adversarial": self.adversarial,
                "epsilon": self.epsilon, "epsilon_units": "standardized", "epochs": self.epochs, "seed": self.seed,
                "train_accuracy": self.train_accuracy, "method": "standardize + logistic regression (SGD)"}

    def to_json(self) -> str:
        return _report.dumps(self.to_obj())


def feature_columns(table: Table, label: str, features: Sequence[str] | None = None) -> tuple[str, ...]:
    if features is not None:
        table.require(features)
        return tuple(features)
    cols = table.numeric_columns(exclude=(label,))
    if not cols:
        raise DataError("no numeric feature columns to train on")
    return cols


def train(table: Table, config: TrainConfig | None = None) -> tuple[LinearModel, TrainReport]:
    """Fit on `table`; deterministic for a given table and config."""
    from sklearn.linear_model import SGDClassifier

    cfg = config or TrainConfig()
    if table.n_rows == 0:
        raise DataError("cannot train on an empty table")
    if table.schema.type_of(cfg.label) is not ColumnType.INT:
        raise DataError(f"label column {cfg.label!r} must be int, is {table.schema.type_of(cfg.label).value}")
    names = feature_columns(table, cfg.label, cfg.features)
    x = table.matrix(names)
    if not np.all(np.isfinite(x)):
        raise DataError("feature columns contain missing or non-finite values")
    y_raw = table.column(cfg.label)
    classes = sorted({int(v) for v in y_raw})
    if len(classes) != 2:
        raise DataError(f"label {cfg.label!r} must have exactly 2 classes, found {len(classes)}")
    y = (y_raw == classes[1]).astype(np.float64)

    mean = x.mean(axis=0)
    std = x.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    z = (x - mean) / scale

    clf = SGDClassifier(loss="log_loss", alpha=cfg.alpha, random_state=cfg.seed, learning_rate="optimal")
    current: LinearModel | None = None
    for _ in range(cfg.epochs):
        if cfg.adversarial and current is not None and cfg.epsilon > 0:
            batch_z, batch_y = np.vstack([z, fgsm(current, z, y, cfg.epsilon)]), np.concatenate([y, y])
        else:
            batch_z, batch_y = z, y
        clf.partial_fit(batch_z, batch_y, classes=np.array([0.0, 1.0]))
        current = LinearModel(features=names, label=cfg.label, classes=(classes[0], classes[1]), mean=mean,
                              scale=scale, weights=np.asarray(clf.coef_[0], dtype=np.float64).copy(),
                              bias=float(clf.intercept_[0]), training=cfg.to_obj())
    assert current is not None  # epochs >= 1
    acc = float(np.mean((current.proba_z(z) >= 0.5) == (y == 1.0)))
    counts = tuple((c, int(np.sum(y_raw == c))) for c in classes)
    report = TrainReport(rows=table.n_rows, features=names, class_counts=counts, adversarial=cfg.adversarial,
                         epsilon=cfg.epsilon, epochs=cfg.epochs, seed=cfg.seed, train_accuracy=acc)
    return current, report


def save_model(model: LinearModel, path: str | os.PathLike[str]) -> str:
    """Write the model JSON atomically; returns its sha256 hex."""
    payload = model.to_json()
    write_atomic(path, payload)
    return hashlib.sha256(payload).hexdigest()


def load_model(path: str | os.PathLike[str]) -> LinearModel:
    """Parse a model file (JSON numbers and names only; never executes code)."""
    return LinearModel.from_json(Path(path).read_bytes())
