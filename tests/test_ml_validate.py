"""mlseal.ml.validate: schema and poisoning checks with thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ml import data
from mlseal.ml.anonymize import AnonymizeSpec, anonymize
from mlseal.ml.errors import DataError, DataValidationError
from mlseal.ml.table import Table
from mlseal.ml.validate import Reference, Thresholds, assess, validate


@pytest.fixture(scope="module")
def clean() -> Table:
    return anonymize(data.make_demo_dataset(seed=0), b"k" * 32, AnonymizeSpec.demo())[0]


@pytest.fixture(scope="module")
def ref(clean: Table) -> Reference:
    return Reference.from_table(clean)


def test_clean_data_and_its_splits_pass(clean: Table, ref: Reference) -> None:
    rep = validate(clean, ref)
    assert rep.ok and [c.name for c in rep.checks] == ["schema", "label_shift", "duplicate_rows", "out_of_range"]
    tr, te = data.split(clean, seed=0)
    assert validate(tr, ref).ok and validate(te, ref).ok


def test_label_flipping_detected(clean: Table, ref: Reference) -> None:
    y = clean.column("label").copy()
    ones = np.flatnonzero(y == 1)
    y[ones[: len(ones) // 3]] = 0  # flip a third of the benign labels
    with pytest.raises(DataValidationError) as exc:
        validate(clean.with_column("label", "int", y), ref)
    assert exc.value.check == "label_shift"
    b = exc.value.breaches[0]
    assert b.observed > 0.15 and b.threshold == 0.15
    assert "label_shift: observed" in str(exc.value) and "exceeds threshold 0.15" in str(exc.value)
    assert isinstance(exc.value, VerificationError)


def test_duplicate_rows_detected_even_with_fresh_ids(clean: Table, ref: Reference) -> None:
    idx = np.concatenate([np.arange(clean.n_rows), np.arange(20)])
    poisoned = clean.take(idx)
    ids = poisoned.column("patient_id").copy()
    ids[-20:] = [f"fresh{i}" for i in range(20)]
    poisoned = poisoned.with_column("patient_id", "str", ids)
    rep = assess(poisoned, ref)
    dup = {c.name: c for c in rep.checks}["duplicate_rows"]
    assert not dup.passed and dup.observed == pytest.approx(20 / poisoned.n_rows)
    assert "20 duplicate" in dup.detail
    assert validate(poisoned, ref, Thresholds(max_duplicate_fraction=0.05)).ok


def test_out_of_range_detected_and_nan_counts(clean: Table, ref: Reference) -> None:
    col = clean.column("mean_area").copy()
    col[:10] = 1e6
    col[10] = np.nan
    with pytest.raises(DataValidationError) as exc:
        validate(clean.with_column("mean_area", "float", col), ref)
    b = {x.check: x for x in exc.value.breaches}["out_of_range"]
    assert b.observed == pytest.approx(11 / clean.n_rows)
    assert "mean_area" in b.detail


def test_given_ranges_override(clean: Table) -> None:
    tight = Reference.from_table(clean, ranges={"mean_radius": (0.0, 10.0)})
    with pytest.raises(DataValidationError, match="out_of_range"):
        validate(clean, tight)


def test_every_breach_listed(clean: Table, ref: Reference) -> None:
    y = np.zeros(clean.n_rows, dtype=np.int64)
    col = clean.column("mean_area") * 100
    bad = clean.with_column("label", "int", y).with_column("mean_area", "float", col)
    with pytest.raises(DataValidationError) as exc:
        validate(bad, ref)
    assert {b.check for b in exc.value.breaches} == {"label_shift", "out_of_range"}


def test_schema_mismatch(clean: Table, ref: Reference) -> None:
    with pytest.raises(DataValidationError) as exc:
        validate(clean.drop(["mean_radius"]).with_column("extra", "int", np.zeros(clean.n_rows, dtype=np.int64)), ref)
    assert exc.value.check == "schema"
    assert "missing ['mean_radius']" in str(exc.value) and "unexpected ['extra']" in str(exc.value)
    retyped = clean.with_column("mean_radius", "str", np.array(["x"] * clean.n_rows, dtype=object))
    with pytest.raises(DataValidationError, match="type changed"):
        validate(retyped, ref)


def test_empty_and_bad_config(clean: Table, ref: Reference) -> None:
    with pytest.raises(DataError, match="empty"):
        validate(clean.take([]), ref)
    with pytest.raises(DataError, match="empty"):
        Reference.from_table(clean.take([]))
    with pytest.raises(DataError, match="missing column"):
        Reference.from_table(clean, label="nope")
    with pytest.raises(ConfigurationError):
        Thresholds(max_label_shift=1.5)
    with pytest.raises(ConfigurationError):
        Reference.from_table(clean, margin=-1)


def test_reference_json_round_trip(ref: Reference, clean: Table) -> None:
    back = Reference.from_json(ref.to_json())
    assert back == ref
    assert validate(clean, back).ok
    with pytest.raises(DataError, match="malformed"):
        Reference.from_json('{"format": "mlseal.reference.v1"}')
    with pytest.raises(DataError, match="not a reference"):
        Reference.from_json('{"format": "x"}')


def test_report_json_has_no_values(clean: Table, ref: Reference) -> None:
    obj = json.loads(validate(clean, ref).to_json())
    assert obj["ok"] is True and obj["rows"] == clean.n_rows
    text = json.dumps(obj)
    for pid in clean.column("patient_id")[:50]:
        assert pid not in text
