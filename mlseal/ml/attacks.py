"""L-inf evasion attacks on a `LinearModel`, in the standardised feature space.

Both use the model's analytic input gradient. For a linear model FGSM already finds
the exact worst case in the L-inf ball; PGD is kept so the same evaluation applies
unchanged to models where it does not.

    >>> import numpy as np
    >>> from mlseal.ml.model import LinearModel
    >>> from mlseal.ml.attacks import fgsm
    >>> m = LinearModel(features=("a", "b"), label="y", classes=(0, 1), mean=np.zeros(2), scale=np.ones(2),
    ...                 weights=np.array([1.0, -1.0]), bias=0.0)
    >>> fgsm(m, np.array([[1.0, 0.0]]), np.array([1.0]), 0.5).tolist()
    [[0.5, 0.5]]
"""

from __future__ import annotations

import numpy as np

from mlseal.errors import ConfigurationError
from mlseal.ml.model import LinearModel

__all__ = ["fgsm", "pgd"]


def _check_eps(epsilon: float) -> None:
    if not (epsilon >= 0.0 and np.isfinite(epsilon)):
        raise ConfigurationError(f"epsilon must be a finite number >= 0, got {epsilon}")


def fgsm(model: LinearModel, z: np.ndarray, y01: np.ndarray, epsilon: float) -> np.ndarray:
    """Fast gradient sign method: z + epsilon * sign(d loss / dz)."""
    _check_eps(epsilon)
    out: np.ndarray = z + epsilon * np.sign(model.input_gradient_z(z, y01))
    return out


def pgd(model: LinearModel, z: np.ndarray, y01: np.ndarray, epsilon: float, *, steps: int = 20,
        step_size: float | None = None) -> np.ndarray:
    """Projected gradient ascent on the loss within the L-inf ball, from the clean point."""
    _check_eps(epsilon)
    if steps < 1:
        raise ConfigurationError(f"PGD needs at least one step, got {steps}")
    alpha = 2.5 * epsilon / steps if step_size is None else step_size
    adv = z.copy()
    for _ in range(steps):
        adv = adv + alpha * np.sign(model.input_gradient_z(adv, y01))
        adv = np.clip(adv, z - epsilon, z + epsilon)
    return adv
