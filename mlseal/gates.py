"""Metric gates: one spec, read one way, by the evaluate stage and by admission.

A gate bounds one metric of a model's evaluation, inclusively, and says which way::

    gates:
      accuracy: {min: 0.90}            # at least 0.90
      mia_advantage: {max: 0.20}       # at most 0.20
      loss: {min: 0.05, max: 0.35}     # both

A bare number (``accuracy: 0.90``) is refused with a `ConfigurationError` that shows the
explicit form: whether a number is a floor or a ceiling depends on the metric, and a
reader that guesses differently from the writer admits exactly the models the gate was
meant to stop (a bare ``mia_advantage: 0.3`` once meant "at most" to the evaluate stage
and "at least" to admission). The evaluate stage (`mlseal.ml.evaluate.check_gates`), the
deploy stage and the admission webhook (`mlseal.admission.policy`) all parse with
`parse_gates` and judge with `Gate.unmet`, so a gate set cannot mean two things.

A metric that is missing or not a finite number fails every gate on it.

    >>> from mlseal.gates import parse_gates, unmet
    >>> gates = parse_gates({"accuracy": {"min": 0.9}, "mia_advantage": {"max": 0.2}})
    >>> [g.describe() for g in gates]
    ['accuracy >= 0.9', 'mia_advantage <= 0.2']
    >>> [u.describe() for u in unmet(gates, {"accuracy": 0.95, "mia_advantage": 0.4})]
    ['mia_advantage: observed 0.4, required <= 0.2']
    >>> try:
    ...     parse_gates({"accuracy": 0.9})
    ... except ConfigurationError as exc:
    ...     print(str(exc).replace("; ", ";\\n"))
    gates.accuracy: a bare number (0.9) does not say whether it is a minimum or a maximum;
    write accuracy: {min: 0.9} (at least) or accuracy: {max: 0.9} (at most)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from mlseal.errors import ConfigurationError

__all__ = ["Bound", "Gate", "UnmetGate", "gates_to_obj", "parse_gates", "unmet"]


class Bound(StrEnum):
    MIN = "min"
    MAX = "max"


@dataclass(frozen=True)
class UnmetGate:
    """A bound a metric did not meet (`observed` is None when the metric is missing or not finite)."""

    metric: str
    observed: float | None
    bound: str  # "min" or "max"
    required: float

    def describe(self) -> str:
        if self.observed is None:
            return f"{self.metric}: missing (required {self.bound} {self.required:.4g})"
        rel = ">=" if self.bound == Bound.MIN else "<="
        return f"{self.metric}: observed {self.observed:.4g}, required {rel} {self.required:.4g}"


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Gate:
    """An inclusive bound on one metric: at least `minimum`, at most `maximum`, or both.

    Built by `parse_gates`; constructing one directly checks the same rules.
    """

    metric: str
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ConfigurationError(f"gate metric name {self.metric!r} must be a non-empty string")
        if self.minimum is None and self.maximum is None:
            raise ConfigurationError(f"gate {self.metric!r} needs a min, a max or both, e.g. {{min: 0.9}}")
        for name, v in ((Bound.MIN, self.minimum), (Bound.MAX, self.maximum)):
            if v is not None and _finite(v) is None:
                raise ConfigurationError(f"gate {self.metric!r} {name} must be a finite number, got {v!r}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ConfigurationError(f"gate {self.metric!r}: min {self.minimum:g} is above max "
                                     f"{self.maximum:g}; no model could pass")

    def bounds(self) -> str:
        """The bounds alone: ``>= 0.9``, ``<= 0.2``, ``>= 0.05 and <= 0.35``."""
        parts = []
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        return " and ".join(parts)

    def describe(self) -> str:
        return f"{self.metric} {self.bounds()}"

    def unmet(self, value: object) -> tuple[UnmetGate, ...]:
        """The bounds `value` breaks; a missing or non-finite value breaks every bound."""
        observed = _finite(value)
        out = []
        if self.minimum is not None and (observed is None or not observed >= self.minimum):
            out.append(UnmetGate(self.metric, observed, Bound.MIN.value, self.minimum))
        if self.maximum is not None and (observed is None or not observed <= self.maximum):
            out.append(UnmetGate(self.metric, observed, Bound.MAX.value, self.maximum))
        return tuple(out)

    def met_by(self, value: object) -> bool:
        return not self.unmet(value)

    def to_obj(self) -> dict[str, float]:
        """The explicit spec, as `parse_gates` reads it back."""
        out = {}
        if self.minimum is not None:
            out[Bound.MIN.value] = self.minimum
        if self.maximum is not None:
            out[Bound.MAX.value] = self.maximum
        return out


_EXAMPLE = "{accuracy: {min: 0.9}, mia_advantage: {max: 0.2}}"


def _bound(v: object, where: str) -> float:
    f = _finite(v)
    if f is None:
        raise ConfigurationError(f"{where} must be a finite number, got {v!r}")
    return f


def parse_gates(raw: object, *, where: str = "gates") -> tuple[Gate, ...]:
    """Parse a gate spec (metric -> {min: x} / {max: y} / both), in the spec's order.

    Raises ConfigurationError naming the metric, with the fix, for a bare number, an
    unknown key, a non-finite bound or a min above the max. `where` prefixes messages
    (e.g. ``namespaces.prod.gates``). An empty mapping gives no gates.
    """
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must map metric names to bounds, e.g. {_EXAMPLE}; "
                                 f"got {type(raw).__name__}")
    gates = []
    for metric, spec in raw.items():
        if not isinstance(metric, str) or not metric:
            raise ConfigurationError(f"{where}: metric name {metric!r} must be a non-empty string")
        here = f"{where}.{metric}"
        if _finite(spec) is not None:
            raise ConfigurationError(
                f"{here}: a bare number ({spec!r}) does not say whether it is a minimum or a maximum; "
                f"write {metric}: {{min: {spec!r}}} (at least) or {metric}: {{max: {spec!r}}} (at most)")
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{here} must be {{min: x}}, {{max: y}} or both, with finite numbers; "
                                     f"got {spec!r}")
        keys = {str(k) for k in spec}
        if not spec or keys - {Bound.MIN.value, Bound.MAX.value}:
            raise ConfigurationError(f"{here} takes min and/or max, got {sorted(keys)}")
        lo = _bound(spec[Bound.MIN.value], f"{here}.min") if Bound.MIN.value in spec else None
        hi = _bound(spec[Bound.MAX.value], f"{here}.max") if Bound.MAX.value in spec else None
        if lo is not None and hi is not None and lo > hi:
            raise ConfigurationError(f"{here}: min {lo:g} is above max {hi:g}; no model could pass")
        gates.append(Gate(metric, lo, hi))
    return tuple(gates)


def unmet(gates: Iterable[Gate], metrics: Mapping[str, object]) -> tuple[UnmetGate, ...]:
    """Every bound of `gates` that `metrics` does not meet, gate by gate; empty = all met."""
    return tuple(u for g in gates for u in g.unmet(metrics.get(g.metric)))


def gates_to_obj(gates: Iterable[Gate]) -> dict[str, dict[str, float]]:
    """The explicit spec for `gates` (what a policy file or pipeline parameter holds)."""
    return {g.metric: g.to_obj() for g in gates}
