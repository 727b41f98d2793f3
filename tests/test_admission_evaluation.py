"""Policy evaluation rules and serving URIs, attacked through the real steps.

The gates are only as good as the record behind them: who signed it, and which rows it
measured. Each test makes an evaluation the gates would accept but the rules must not.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from mlseal.admission import decide, load_policy
from mlseal.components import steps as s
from mlseal.ml import serving
from mlseal.signing.digest import digest_path
from tests.fixtures_pipeline import SealedEnv
from tests.test_components import _policy, _trained


def _isvc(env: SealedEnv, model: Path, storage: str) -> dict[str, Any]:
    return serving.inference_service(name="m", namespace="models", storage_uri=storage,
                                     model_sha256=digest_path(model))


def _decide(env: SealedEnv, obj: dict[str, Any], **rules: object) -> tuple[bool, list[str]]:
    path = _policy(env, {"accuracy": {"min": 0.5}})
    data = yaml.safe_load(path.read_text())
    data.update(rules)
    path.write_text(yaml.safe_dump(data))
    d = decide(obj, load_policy(path), ledger=env.ledger)
    return d.allowed, list(d.reasons)


def test_held_out_evaluation_by_the_evaluator_is_admitted(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=10)
    s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["enc"]),
               metrics=s.ArtifactOut(env.root / "m.json"))
    allowed, reasons = _decide(env, _isvc(env, p["model"], "s3://models/a/model/"))
    assert allowed, reasons


def test_evaluation_on_other_data_does_not_count(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=10)
    # measured on the anonymized (pre-encryption) data: a recorded, trusted dataset, but
    # not the one the model was split from, so its rows may include training rows
    s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["anon"]),
               metrics=s.ArtifactOut(env.root / "m.json"))
    allowed, reasons = _decide(env, _isvc(env, p["model"], "s3://models/a/model/"))
    assert not allowed and any("not the dataset the model's train record split" in r for r in reasons)


def test_evaluation_with_another_split_does_not_count(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=10)
    s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["enc"]), seed=7,
               metrics=s.ArtifactOut(env.root / "m.json"))
    allowed, reasons = _decide(env, _isvc(env, p["model"], "s3://models/a/model/"))
    assert not allowed and any("split the data differently" in r for r in reasons)


def test_evaluation_by_another_identity_does_not_count(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=10)
    s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["enc"]),
               metrics=s.ArtifactOut(env.root / "m.json"))
    # the policy names the evaluator; this ledger's single key is called "pipeline"
    allowed, reasons = _decide(env, _isvc(env, p["model"], "s3://models/a/model/"),
                               evaluation={"signers": ["evaluate"], "held_out": True})
    assert not allowed and any("accepts evaluations only from ['evaluate']" in r for r in reasons)
    # and the name the record claims for itself does not matter: the trust file's name does
    claimed = replace(env.sealing, signer_name="evaluate")
    s.evaluate(claimed, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["enc"]),
               metrics=s.ArtifactOut(env.root / "m2.json"))
    allowed, reasons = _decide(env, _isvc(env, p["model"], "s3://models/a/model/"),
                               evaluation={"signers": ["evaluate"]})
    assert not allowed and any("signed by pipeline" in r for r in reasons)


def test_serving_uri_must_be_the_mapped_recorded_location(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=10)
    s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["enc"]),
               metrics=s.ArtifactOut(env.root / "m.json"))
    allowed, reasons = _decide(env, _isvc(env, p["model"], "s3://attacker-bucket/a/model/"))
    assert not allowed and any("is not where the ledger recorded this model" in r for r in reasons)
    allowed, _ = _decide(env, _isvc(env, p["model"], "s3://models/a/model/"))
    assert allowed


def test_evaluation_with_another_test_fraction_does_not_count(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=10)
    s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["enc"]), test_fraction=0.5,
               metrics=s.ArtifactOut(env.root / "m.json"))
    allowed, reasons = _decide(env, _isvc(env, p["model"], "s3://models/a/model/"))
    assert not allowed and any("split the data differently" in r and "test_fraction" in r for r in reasons)


def test_evaluation_findings_carry_their_reason_codes(sealed_env: SealedEnv) -> None:
    """The machine codes (metrics labels, audit lines) say what kind of check failed."""
    from mlseal.admission.decision import Reason
    from mlseal.admission.engine import check_model
    from mlseal.admission.manifest import model_ref

    env = sealed_env
    p = _trained(env, epochs=10)
    s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["anon"]),
               metrics=s.ArtifactOut(env.root / "m.json"))
    path = _policy(env, {"accuracy": {"min": 0.5}})
    data = yaml.safe_load(path.read_text())
    data["evaluation"] = {"signers": ["evaluate"], "held_out": True}
    path.write_text(yaml.safe_dump(data))
    policy = load_policy(path)
    ref = model_ref(_isvc(env, p["model"], "s3://models/a/model/"))
    assert ref is not None
    codes = {f.code for f in check_model(ref, policy.rules_for("models"), env.ledger, policy.trust)}
    assert {Reason.UNTRUSTED_SIGNER, Reason.BROKEN_LINEAGE} <= codes
