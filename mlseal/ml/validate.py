"""Schema and basic poisoning checks of a dataset against a trusted reference.

Checks, in order (each with a threshold; the report carries observed vs threshold):

1. `schema`: the column names and types equal the reference's (observed = number of
   differing columns, threshold 0). If this fails the other checks are not run: they
   need the columns.
2. `label_shift`: total variation distance between the label distribution and the
   reference's (0 = same, 1 = disjoint). Label flipping moves it.
3. `duplicate_rows`: fraction of rows repeating an earlier row on the numeric columns
   (features + label). Identifier text columns are ignored: a copied record with a
   fresh id is still a copy.
4. `out_of_range`: fraction of rows with any numeric feature outside the reference
   range (learned min/max widened by `margin` of the span, or given), NaN included.

`assess` returns the report; `validate` also raises `DataValidationError` naming every
breached check.

    >>> from mlseal.ml import data
    >>> from mlseal.ml.validate import Reference, validate
    >>> table = data.make_demo_dataset(seed=0)
    >>> ref = Reference.from_table(table)
    >>> validate(table, ref).ok
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlseal.errors import ConfigurationError
from mlseal.ml import _report
from mlseal.ml.errors import Breach, DataError, DataValidationError
from mlseal.ml.table import ColumnType, Schema, Table

__all__ = [
    "REFERENCE_FORMAT",
    "CheckResult",
    "Reference",
    "Thresholds",
    "ValidationReport",
    "assess",
    "validate",
]

REFERENCE_FORMAT = "mlseal.reference.v1"


@dataclass(frozen=True)
class Thresholds:
    max_label_shift: float = 0.15
    max_duplicate_fraction: float = 0.01
    max_out_of_range_fraction: float = 0.01

    def __post_init__(self) -> None:
        for name in ("max_label_shift", "max_duplicate_fraction", "max_out_of_range_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
                raise ConfigurationError(f"threshold {name} must be a number in [0, 1], got {v!r}")

    def to_obj(self) -> dict[str, float]:
        return {"max_label_shift": self.max_label_shift, "max_duplicate_fraction": self.max_duplicate_fraction,
                "max_out_of_range_fraction": self.max_out_of_range_fraction}


@dataclass(frozen=True)
class Reference:
    """What a good dataset looks like: schema, label distribution, feature ranges."""

    schema: Schema
    label: str
    label_distribution: tuple[tuple[int, float], ...]
    ranges: tuple[tuple[str, float, float], ...]
    rows: int = 0

    def __post_init__(self) -> None:
        if self.schema.type_of(self.label) is not ColumnType.INT:
            raise ConfigurationError(f"reference label {self.label!r} must be an int column")
        for name, lo, hi in self.ranges:
            if not self.schema.type_of(name).numeric:
                raise ConfigurationError(f"range given for non-numeric column {name!r}")
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ConfigurationError(f"range for {name!r} must be finite with low <= high")
        total = sum(p for _, p in self.label_distribution)
        if not self.label_distribution or abs(total - 1.0) > 1e-6:
            raise ConfigurationError(f"label distribution must sum to 1, sums to {total:.4g}")

    @classmethod
    def from_table(cls, table: Table, *, label: str = "label", margin: float = 0.1,
                   ranges: Mapping[str, tuple[float, float]] | None = None) -> Reference:
        """Learn the reference from trusted data; `ranges` overrides learned ones per column."""
        if table.n_rows == 0:
            raise DataError("cannot learn a reference from an empty table")
        if margin < 0:
            raise ConfigurationError(f"margin must be >= 0, got {margin}")
        y = table.column(label)
        if table.schema.type_of(label) is not ColumnType.INT:
            raise DataError(f"label column {label!r} must be int")
        classes, counts = np.unique(y, return_counts=True)
        dist = tuple((int(c), float(n) / len(y)) for c, n in zip(classes, counts, strict=True))
        given = dict(ranges or {})
        table.require(given)
        learned = []
        for name in table.numeric_columns(exclude=(label,)):
            if name in given:
                lo, hi = given[name]
            else:
                col = table.column(name).astype(np.float64)
                col = col[np.isfinite(col)]
                if len(col) == 0:
                    raise DataError(f"column {name!r} has no finite values to learn a range from")
                span = float(col.max() - col.min())
                lo, hi = float(col.min()) - margin * span, float(col.max()) + margin * span
            learned.append((name, float(lo), float(hi)))
        return cls(table.schema, label, dist, tuple(learned), table.n_rows)

    def to_obj(self) -> dict[str, Any]:
        return {"format": REFERENCE_FORMAT, "schema": self.schema.to_obj(), "label": self.label,
                "label_distribution": {str(c): p for c, p in self.label_distribution},
                "ranges": [{"column": n, "low": lo, "high": hi} for n, lo, hi in self.ranges], "rows": self.rows}

    def to_json(self) -> str:
        return _report.dumps(self.to_obj())

    @classmethod
    def from_json(cls, text: str | bytes) -> Reference:
        try:
            obj = json.loads(text)
            if obj.get("format") != REFERENCE_FORMAT:
                raise DataError(f"not a reference file (format {obj.get('format')!r})")
            dist = tuple((int(c), float(p)) for c, p in obj["label_distribution"].items())
            ranges = tuple((str(r["column"]), float(r["low"]), float(r["high"])) for r in obj["ranges"])
            return cls(Schema.from_obj(obj["schema"]), str(obj["label"]), dist, ranges, int(obj.get("rows", 0)))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise DataError(f"malformed reference file: {type(e).__name__}") from None


@dataclass(frozen=True)
class CheckResult:
    name: str
    observed: float
    threshold: float
    passed: bool
    detail: str = ""

    def to_obj(self) -> dict[str, Any]:
        return {"check": self.name, "observed": self.observed, "threshold": self.threshold, "passed": self.passed,
                "detail": self.detail}


@dataclass(frozen=True)
class ValidationReport:
    rows: int
    checks: tuple[CheckResult, ...]
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def breaches(self) -> tuple[Breach, ...]:
        return tuple(Breach(c.name, c.observed, c.threshold, c.detail) for c in self.checks if not c.passed)

    def to_obj(self) -> dict[str, Any]:
        return {"rows": self.rows, "ok": self.ok, "checks": [c.to_obj() for c in self.checks],
                "thresholds": self.thresholds.to_obj()}

    def to_json(self) -> str:
        return _report.dumps(self.to_obj())


def _schema_check(table: Table, ref: Reference) -> CheckResult:
    have = {c.name: c.type for c in table.schema.columns}
    want = {c.name: c.type for c in ref.schema.columns}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    retyped = sorted(n for n in set(want) & set(have) if want[n] != have[n])
    bad = len(missing) + len(extra) + len(retyped)
    parts = [f"{k} {v}" for k, v in (("missing", missing), ("unexpected", extra), ("type changed", retyped)) if v]
    return CheckResult("schema", float(bad), 0.0, bad == 0, "; ".join(parts))


def _label_shift(table: Table, ref: Reference, limit: float) -> CheckResult:
    y = table.column(ref.label)
    classes, counts = np.unique(y, return_counts=True)
    observed = {int(c): float(n) / len(y) for c, n in zip(classes, counts, strict=True)}
    expected = dict(ref.label_distribution)
    tv = 0.5 * sum(abs(observed.get(c, 0.0) - expected.get(c, 0.0)) for c in set(observed) | set(expected))
    new = sorted(set(observed) - set(expected))
    return CheckResult("label_shift", tv, limit, tv <= limit, f"{len(new)} unseen label value(s)" if new else "")


def _duplicates(table: Table, limit: float) -> CheckResult:
    numeric = table.numeric_columns()
    m = table.matrix(numeric)
    _, first = np.unique(m, axis=0, return_index=True)
    dup = table.n_rows - len(first)
    frac = dup / table.n_rows
    return CheckResult("duplicate_rows", frac, limit, frac <= limit, f"{dup} duplicate row(s)")


def _out_of_range(table: Table, ref: Reference, limit: float) -> CheckResult:
    names = [n for n, _, _ in ref.ranges]
    if not names:
        return CheckResult("out_of_range", 0.0, limit, True, "no ranges")
    m = table.matrix(names)
    lo = np.array([r[1] for r in ref.ranges])
    hi = np.array([r[2] for r in ref.ranges])
    outside = ~((m >= lo) & (m <= hi))  # NaN compares False: counted as outside
    rows = int(outside.any(axis=1).sum())
    frac = rows / table.n_rows
    worst = [names[j] for j in np.argsort(-outside.sum(axis=0), kind="stable")[:3] if outside[:, j].any()]
    detail = f"{rows} row(s) out of range" + (f"; most often {', '.join(worst)}" if worst else "")
    return CheckResult("out_of_range", frac, limit, frac <= limit, detail)


def assess(table: Table, reference: Reference, thresholds: Thresholds | None = None) -> ValidationReport:
    """Run every check and return the report (does not raise on a breach)."""
    th = thresholds or Thresholds()
    if table.n_rows == 0:
        raise DataError("cannot validate an empty table")
    schema = _schema_check(table, reference)
    if not schema.passed:
        return ValidationReport(table.n_rows, (schema,), th)
    checks = (schema, _label_shift(table, reference, th.max_label_shift),
              _duplicates(table, th.max_duplicate_fraction),
              _out_of_range(table, reference, th.max_out_of_range_fraction))
    return ValidationReport(table.n_rows, checks, th)


def validate(table: Table, reference: Reference, thresholds: Thresholds | None = None) -> ValidationReport:
    """Like `assess`, but raise `DataValidationError` listing every breached check."""
    report = assess(table, reference, thresholds)
    if not report.ok:
        raise DataValidationError(report.breaches)
    return report
