"""Typed errors raised by `mlseal.ml`; all derive from `mlseal.errors`.

Messages name columns, checks, counts and thresholds, never a data value or key byte.

    >>> from mlseal.ml.errors import DataError
    >>> from mlseal.errors import VerificationError
    >>> issubclass(DataError, VerificationError)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from mlseal.errors import VerificationError
from mlseal.gates import UnmetGate

__all__ = ["Breach", "DataError", "DataValidationError", "GateError", "ModelFormatError"]


class DataError(VerificationError):
    """A dataset is malformed: empty, a missing column, a value of the wrong type."""


class ModelFormatError(VerificationError):
    """A model file is not a well-formed mlseal model (loading never executes code)."""


@dataclass(frozen=True)
class Breach:
    """One failed check: its name, what was observed, and the limit it broke."""

    check: str
    observed: float
    threshold: float
    detail: str = ""

    def describe(self) -> str:
        text = f"{self.check}: observed {self.observed:.4g} exceeds threshold {self.threshold:.4g}"
        return f"{text} ({self.detail})" if self.detail else text


class DataValidationError(DataError):
    """A dataset failed one or more validation checks (schema or poisoning)."""

    def __init__(self, breaches: tuple[Breach, ...]) -> None:
        self.breaches = breaches
        super().__init__("data validation failed: " + "; ".join(b.describe() for b in breaches))

    @property
    def check(self) -> str:
        """Name of the first failed check."""
        return self.breaches[0].check


class GateError(VerificationError):
    """Model metrics did not meet every gate (`mlseal.gates`); lists each unmet bound."""

    def __init__(self, unmet: tuple[UnmetGate, ...]) -> None:
        self.unmet = unmet
        super().__init__("metric gates not met: " + "; ".join(u.describe() for u in unmet))
