"""Evaluate a model on held-out data and check metric gates.

Metrics: accuracy, F1 (positive class = the model's second class), ROC AUC; robust
accuracy under L-inf FGSM and PGD at `epsilon` (standardised feature units, the same as
`mlseal.ml.train`); `robust_accuracy` is the lower of the two. With the training rows
given, a membership-inference risk estimate: the advantage (max TPR - FPR over all
thresholds) of the loss-threshold attack that calls a row a training member when the
model's loss on it is low (Yeom et al., 2018). 0 means no measurable leak.

    >>> from mlseal.ml import data, train, evaluate
    >>> tr, te = data.split(data.make_demo_dataset(seed=0), seed=0)
    >>> model, _ = train.train(tr)
    >>> m = evaluate.evaluate(model, te, train=tr)
    >>> evaluate.check_gates(m, {"accuracy": {"min": 0.9}, "robust_accuracy": {"min": 0.7}})

Gates are `mlseal.gates` specs, explicit about their direction (``{min: x}``,
``{max: y}`` or both); admission reads the same specs with the same parser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlseal.errors import ConfigurationError
from mlseal.gates import Gate, parse_gates, unmet
from mlseal.ml import _report
from mlseal.ml.attacks import fgsm, pgd
from mlseal.ml.errors import DataError, GateError
from mlseal.ml.model import LinearModel
from mlseal.ml.table import Table
from mlseal.ml.train import DEFAULT_EPSILON

__all__ = ["DEFAULT_GATES", "Metrics", "check_gates", "evaluate", "membership_advantage"]

#: The example policy's gates (docs/design.md#admission-policy-file); the demo model meets them at DEFAULT_EPSILON.
DEFAULT_GATES: Mapping[str, Mapping[str, float]] = {"accuracy": {"min": 0.90}, "robust_accuracy": {"min": 0.70}}


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    f1: float
    roc_auc: float
    robust_accuracy_fgsm: float
    robust_accuracy_pgd: float
    epsilon: float
    pgd_steps: int
    n_test: int
    mia_advantage: float | None = None
    n_train: int | None = None

    @property
    def robust_accuracy(self) -> float:
        return min(self.robust_accuracy_fgsm, self.robust_accuracy_pgd)

    def values(self) -> dict[str, float]:
        """Numeric metrics by name, as gates see them."""
        out = {"accuracy": self.accuracy, "f1": self.f1, "roc_auc": self.roc_auc,
               "robust_accuracy": self.robust_accuracy, "robust_accuracy_fgsm": self.robust_accuracy_fgsm,
               "robust_accuracy_pgd": self.robust_accuracy_pgd}
        if self.mia_advantage is not None:
            out["mia_advantage"] = self.mia_advantage
        return out

    def to_obj(self) -> dict[str, Any]:
        return {**self.values(), "epsilon": self.epsilon, "epsilon_units": "standardized",
                "attacks": {"fgsm": {}, "pgd": {"steps": self.pgd_steps}}, "n_test": self.n_test,
                "n_train": self.n_train, "mia_method": "loss-threshold attack advantage"}

    def to_json(self) -> str:
        return _report.dumps(self.to_obj())


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = float(np.sum((pred == 1) & (y == 1)))
    fp = float(np.sum((pred == 1) & (y == 0)))
    fn = float(np.sum((pred == 0) & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return math.nan  # undefined with one class; reported as null and fails any gate on it
    return float(roc_auc_score(y, scores))


def membership_advantage(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> float:
    """Max over thresholds t of P(loss <= t | member) - P(loss <= t | non-member), floored at 0."""
    if len(member_loss) == 0 or len(nonmember_loss) == 0:
        raise DataError("membership inference needs both training and held-out rows")
    thresholds = np.unique(np.concatenate([member_loss, nonmember_loss]))
    m = np.sort(member_loss)
    n = np.sort(nonmember_loss)
    tpr = np.searchsorted(m, thresholds, side="right") / len(m)
    fpr = np.searchsorted(n, thresholds, side="right") / len(n)
    return float(max(0.0, np.max(tpr - fpr)))


def evaluate(model: LinearModel, test: Table, *, train: Table | None = None, epsilon: float = DEFAULT_EPSILON,
             pgd_steps: int = 20) -> Metrics:
    """Score `model` on `test` (and, with `train`, estimate membership-inference risk)."""
    if test.n_rows == 0:
        raise DataError("cannot evaluate on an empty table")
    z = model.standardize(model.features_of(test))
    y = model.labels01(test)
    scores = model.proba_z(z)
    pred = (scores >= 0.5).astype(np.float64)

    def robust(adv: np.ndarray) -> float:
        return float(np.mean((model.proba_z(adv) >= 0.5) == (y == 1.0)))

    mia = None
    if train is not None:
        zt = model.standardize(model.features_of(train))
        mia = membership_advantage(model.loss_z(zt, model.labels01(train)), model.loss_z(z, y))
    return Metrics(accuracy=float(np.mean(pred == y)), f1=_f1(pred, y), roc_auc=_auc(scores, y),
                   robust_accuracy_fgsm=robust(fgsm(model, z, y, epsilon)),
                   robust_accuracy_pgd=robust(pgd(model, z, y, epsilon, steps=pgd_steps)),
                   epsilon=epsilon, pgd_steps=pgd_steps, n_test=test.n_rows, mia_advantage=mia,
                   n_train=None if train is None else train.n_rows)


def check_gates(metrics: Metrics | Mapping[str, float | None],
                gates: Mapping[str, object] | Sequence[Gate]) -> None:
    """Raise GateError listing every unmet gate; return None when all are met.

    `gates` is a spec (``{"accuracy": {"min": 0.9}, "mia_advantage": {"max": 0.2}}``,
    parsed by `mlseal.gates.parse_gates`, which refuses a bare number) or parsed gates.
    A missing or non-finite metric fails its gate. An empty gate set is refused.
    """
    if not gates:
        raise ConfigurationError("no gates given: an empty gate set would admit any model")
    parsed = parse_gates(gates) if isinstance(gates, Mapping) else tuple(gates)
    values = metrics.values() if isinstance(metrics, Metrics) else dict(metrics)
    found = unmet(sorted(parsed, key=lambda g: g.metric), values)
    if found:
        raise GateError(found)
