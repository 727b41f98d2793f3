"""mlseal.ml.train, model, attacks, evaluate: determinism, JSON models, robustness, gates."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ml import data, evaluate, train
from mlseal.ml.anonymize import AnonymizeSpec, anonymize
from mlseal.ml.attacks import fgsm, pgd
from mlseal.ml.errors import DataError, GateError, ModelFormatError
from mlseal.ml.model import LinearModel
from mlseal.ml.table import Table

DESIGN_GATES = {"accuracy": {"min": 0.90}, "robust_accuracy": {"min": 0.70}}


def test_default_gates_are_the_design_gates() -> None:
    assert dict(evaluate.DEFAULT_GATES) == DESIGN_GATES


@pytest.fixture(scope="module")
def splits() -> tuple[Table, Table]:
    table, _ = anonymize(data.make_demo_dataset(seed=0), b"k" * 32, AnonymizeSpec.demo())
    return data.split(table, seed=0)


@pytest.fixture(scope="module")
def adv_model(splits: tuple[Table, Table]) -> LinearModel:
    return train.train(splits[0], train.TrainConfig(adversarial=True))[0]


@pytest.fixture(scope="module")
def plain_model(splits: tuple[Table, Table]) -> LinearModel:
    return train.train(splits[0], train.TrainConfig(adversarial=False))[0]


# -- training ------------------------------------------------------------------------------

def test_train_deterministic_with_seed(splits: tuple[Table, Table], adv_model: LinearModel) -> None:
    again, _ = train.train(splits[0], train.TrainConfig(adversarial=True))
    assert again.to_json() == adv_model.to_json()
    other, _ = train.train(splits[0], train.TrainConfig(adversarial=True, seed=7))
    assert other.to_json() != adv_model.to_json()


def test_train_uses_numeric_features_only(adv_model: LinearModel) -> None:
    assert len(adv_model.features) == 30
    assert "patient_id" not in adv_model.features and "label" not in adv_model.features
    assert adv_model.training["adversarial"] is True and adv_model.training["epsilon"] == train.DEFAULT_EPSILON


def test_train_report(splits: tuple[Table, Table]) -> None:
    _, rep = train.train(splits[0], train.TrainConfig(epochs=3))
    obj = json.loads(rep.to_json())
    assert obj["rows"] == splits[0].n_rows and obj["n_features"] == 30 and obj["epochs"] == 3
    assert sum(obj["class_counts"].values()) == splits[0].n_rows


def test_train_bad_input(splits: tuple[Table, Table]) -> None:
    tr = splits[0]
    with pytest.raises(DataError, match="empty"):
        train.train(tr.take([]))
    with pytest.raises(DataError, match="missing column"):
        train.train(tr, train.TrainConfig(label="nope"))
    with pytest.raises(DataError, match="exactly 2 classes"):
        train.train(tr.take(np.flatnonzero(tr.column("label") == 1)))
    with pytest.raises(DataError, match="must be int"):
        train.train(tr, train.TrainConfig(label="mean_radius"))
    with pytest.raises(DataError, match="not numeric"):
        train.train(tr, train.TrainConfig(features=("patient_id",)))
    nan = tr.with_column("mean_radius", "float", np.where(np.arange(tr.n_rows) == 3, np.nan, tr.column("mean_radius")))
    with pytest.raises(DataError, match="non-finite"):
        train.train(nan)
    with pytest.raises(ConfigurationError):
        train.TrainConfig(epsilon=-0.1)
    with pytest.raises(ConfigurationError):
        train.TrainConfig(epochs=0)


# -- model files ---------------------------------------------------------------------------

def test_model_json_round_trip(tmp_path: Path, adv_model: LinearModel, splits: tuple[Table, Table]) -> None:
    p = tmp_path / "model.json"
    digest = train.save_model(adv_model, p)
    loaded = train.load_model(p)
    assert loaded.to_json() == adv_model.to_json() == p.read_bytes()
    assert len(digest) == 64
    x = adv_model.features_of(splits[1])
    assert np.array_equal(loaded.predict(x), adv_model.predict(x))
    assert set(np.unique(loaded.predict(x))) <= {0, 1}


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda o: o.update(format="pickle"), "unsupported model format"),
    (lambda o: o.pop("weights"), "lacks field 'weights'"),
    (lambda o: o.update(weights=o["weights"][:-1]), "shape"),
    (lambda o: o.update(scale=[0.0] * len(o["scale"])), "scale must be positive"),
    (lambda o: o.update(weights=["1"] * len(o["weights"])), "list of numbers"),
    (lambda o: o.update(classes=[1, 1]), "must differ"),
    (lambda o: o.update(classes=[0]), "two integers"),
    (lambda o: o.update(bias="0"), "bias must be a number"),
])
def test_model_malformed(adv_model: LinearModel, mutate: Callable[[dict[str, Any]], object], match: str) -> None:
    obj = json.loads(adv_model.to_json())
    mutate(obj)
    with pytest.raises(ModelFormatError, match=match):
        LinearModel.from_json(json.dumps(obj))


def test_model_rejects_nan_and_non_json(adv_model: LinearModel) -> None:
    text = adv_model.to_json().decode().replace('"bias":', '"bias":NaN,"x":', 1)
    with pytest.raises(ModelFormatError, match="NaN"):
        LinearModel.from_json(text)
    with pytest.raises(ModelFormatError, match="not JSON"):
        LinearModel.from_json(b"\x80\x04\x95pickle")
    assert issubclass(ModelFormatError, VerificationError)


def test_predict_wrong_shape(adv_model: LinearModel) -> None:
    with pytest.raises(DataError, match="expects"):
        adv_model.predict(np.zeros((2, 3)))


# -- attacks -------------------------------------------------------------------------------

def test_gradient_matches_finite_differences(adv_model: LinearModel, splits: tuple[Table, Table]) -> None:
    z = adv_model.standardize(adv_model.features_of(splits[1]))[:5]
    y = adv_model.labels01(splits[1])[:5]
    g = adv_model.input_gradient_z(z, y)
    h = 1e-6
    for j in (0, 7, 29):
        e = np.zeros_like(z)
        e[:, j] = h
        num = (adv_model.loss_z(z + e, y) - adv_model.loss_z(z - e, y)) / (2 * h)
        assert np.allclose(num, g[:, j], atol=1e-6)


def test_attacks_stay_in_ball_and_raise_loss(adv_model: LinearModel, splits: tuple[Table, Table]) -> None:
    z = adv_model.standardize(adv_model.features_of(splits[1]))
    y = adv_model.labels01(splits[1])
    for adv in (fgsm(adv_model, z, y, 0.2), pgd(adv_model, z, y, 0.2, steps=10)):
        assert np.max(np.abs(adv - z)) <= 0.2 + 1e-12
        assert np.all(adv_model.loss_z(adv, y) >= adv_model.loss_z(z, y) - 1e-12)
    with pytest.raises(ConfigurationError):
        fgsm(adv_model, z, y, float("nan"))
    with pytest.raises(ConfigurationError):
        pgd(adv_model, z, y, 0.1, steps=0)


# -- evaluate ------------------------------------------------------------------------------

def test_demo_defaults_meet_design_gates(adv_model: LinearModel, splits: tuple[Table, Table]) -> None:
    m = evaluate.evaluate(adv_model, splits[1], train=splits[0])
    assert m.accuracy >= 0.90 and m.robust_accuracy >= 0.70
    assert 0.9 <= m.roc_auc <= 1.0 and 0.9 <= m.f1 <= 1.0
    assert m.robust_accuracy <= m.accuracy
    assert m.mia_advantage is not None and 0.0 <= m.mia_advantage < 0.3
    evaluate.check_gates(m, DESIGN_GATES)


def test_adversarial_training_raises_robust_accuracy(plain_model: LinearModel, adv_model: LinearModel,
                                                      splits: tuple[Table, Table]) -> None:
    plain = evaluate.evaluate(plain_model, splits[1])
    adv = evaluate.evaluate(adv_model, splits[1])
    assert adv.robust_accuracy > plain.robust_accuracy + 0.05
    # and at epsilon 0 robust accuracy is plain accuracy
    zero = evaluate.evaluate(adv_model, splits[1], epsilon=0.0)
    assert zero.robust_accuracy == zero.accuracy


def test_membership_advantage() -> None:
    assert evaluate.membership_advantage(np.array([0.1, 0.2]), np.array([0.9, 1.0])) == 1.0
    assert evaluate.membership_advantage(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    assert evaluate.membership_advantage(np.array([0.1, 0.9]), np.array([0.5, 0.6])) == pytest.approx(0.5)
    with pytest.raises(DataError):
        evaluate.membership_advantage(np.array([]), np.array([1.0]))


def test_evaluate_bad_input(adv_model: LinearModel, splits: tuple[Table, Table]) -> None:
    with pytest.raises(DataError, match="empty"):
        evaluate.evaluate(adv_model, splits[1].take([]))
    with pytest.raises(DataError, match="missing"):
        evaluate.evaluate(adv_model, splits[1].drop(["mean_radius"]))
    relabeled = splits[1].with_column("label", "int", splits[1].column("label") + 5)
    with pytest.raises(DataError, match="does not know"):
        evaluate.evaluate(adv_model, relabeled)
    one_class = splits[1].take(np.flatnonzero(splits[1].column("label") == 1))
    m = evaluate.evaluate(adv_model, one_class)
    assert json.loads(m.to_json())["roc_auc"] is None
    with pytest.raises(GateError, match="roc_auc: missing"):
        evaluate.check_gates(m, {"roc_auc": {"min": 0.5}})


# -- gates ---------------------------------------------------------------------------------

def test_check_gates_lists_every_unmet_gate() -> None:
    metrics = {"accuracy": 0.85, "robust_accuracy": 0.60, "f1": 0.95, "mia_advantage": 0.4}
    with pytest.raises(GateError) as exc:
        evaluate.check_gates(metrics, {"accuracy": {"min": 0.9}, "robust_accuracy": {"min": 0.7},
                                       "f1": {"min": 0.9}, "mia_advantage": {"max": 0.2},
                                       "roc_auc": {"min": 0.9}})
    unmet = {u.metric: u for u in exc.value.unmet}
    assert set(unmet) == {"accuracy", "robust_accuracy", "mia_advantage", "roc_auc"}
    assert unmet["accuracy"].observed == 0.85 and unmet["accuracy"].required == 0.9
    assert unmet["mia_advantage"].bound == "max"
    msg = str(exc.value)
    assert "accuracy: observed 0.85, required >= 0.9" in msg
    assert "mia_advantage: observed 0.4, required <= 0.2" in msg
    assert "roc_auc: missing" in msg


def test_check_gates_min_max_and_config_errors() -> None:
    evaluate.check_gates({"accuracy": 0.95}, {"accuracy": {"min": 0.9, "max": 1.0}})
    with pytest.raises(GateError, match=r"required <= 0\.94"):
        evaluate.check_gates({"accuracy": 0.95}, {"accuracy": {"max": 0.94}})
    with pytest.raises(GateError):
        evaluate.check_gates({"accuracy": float("nan")}, {"accuracy": {"min": 0.1}})
    with pytest.raises(ConfigurationError, match="empty gate set"):
        evaluate.check_gates({"accuracy": 1.0}, {})
    with pytest.raises(ConfigurationError, match="finite number"):
        evaluate.check_gates({"accuracy": 1.0}, {"accuracy": "0.9"})
    with pytest.raises(ConfigurationError, match=r"accuracy\.max must be a finite number"):
        evaluate.check_gates({"accuracy": 1.0}, {"accuracy": {"max": float("inf")}})
    with pytest.raises(ConfigurationError, match="no model could pass"):
        evaluate.check_gates({"accuracy": 1.0}, {"accuracy": {"min": 1.0, "max": 0.9}})
    with pytest.raises(ConfigurationError, match=r"bare number.*accuracy: \{min: 0\.9\}"):
        evaluate.check_gates({"accuracy": 1.0}, {"accuracy": 0.9})
    with pytest.raises(ConfigurationError, match=r"takes min and/or max, got \[.minimum.\]"):
        evaluate.check_gates({"accuracy": 1.0}, {"accuracy": {"minimum": 0.9}})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_defaults_hold_across_seeds(seed: int) -> None:
    # not one lucky split: other split + training seeds also meet the gates, and
    # adversarial training still raises robust accuracy
    tr, te = data.split(data.make_demo_dataset(seed=0), seed=seed)
    plain, _ = train.train(tr, train.TrainConfig(adversarial=False, seed=seed))
    adv, _ = train.train(tr, train.TrainConfig(adversarial=True, seed=seed))
    m_plain, m_adv = evaluate.evaluate(plain, te), evaluate.evaluate(adv, te)
    evaluate.check_gates(m_adv, DESIGN_GATES)
    assert m_adv.robust_accuracy > m_plain.robust_accuracy
