"""Gates mean one thing everywhere: the evaluate stage, the deploy stage and admission.

The attack: a bare ``mia_advantage: 0.3`` read as a *maximum* by the evaluate stage and as
a *minimum* by admission, and the demo wrote the same gates into both, so a model that
leaks membership at an advantage of 0.9 failed its evaluation yet was admitted. Every
test here feeds one gate spec to both readers and requires the same verdict.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlseal.admission import decide, load_policy, parse_policy
from mlseal.admission.engine import _check_gates
from mlseal.components import steps as s
from mlseal.errors import ConfigurationError, PolicyDenied
from mlseal.ledger import open_ledger
from mlseal.ledger.record import Component, Record, SignerRef
from mlseal.ml import evaluate
from mlseal.ml.errors import GateError
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from tests.fixtures_admission import build_lineage, isvc, write_policy
from tests.fixtures_pipeline import DemoRun, SealedEnv
from tests.test_components import _policy, _trained

LEAKY = {"accuracy": 0.95, "robust_accuracy": 0.81, "mia_advantage": 0.9}
#: the gates as the demo used to write them into the pipeline and the policy alike
BARE = {"accuracy": 0.9, "mia_advantage": 0.3}


def _stage_verdict(metrics: dict[str, float], gates: dict[str, Any]) -> str:
    """What the evaluate stage's gate check says about `metrics`."""
    try:
        evaluate.check_gates(metrics, gates)
    except ConfigurationError:
        return "refused"
    except GateError:
        return "deny"
    return "admit"


def _trust(d: Path) -> LocalKeySigner:
    signer = LocalKeySigner.generate()
    (d / "keys").mkdir()
    signer.save(d / "keys" / "pipeline.pem", d / "keys" / "pipeline.pub.pem")
    (d / "trust.yaml").write_text("signers:\n  - name: pipeline\n    public_key: keys/pipeline.pub.pem\n")
    return signer


def _webhook_verdict(d: Path, metrics: dict[str, float], gates: dict[str, Any]) -> str:
    """What admission's decide says about a real, signed lineage whose evaluation measured `metrics`."""
    signer = _trust(d)
    with open_ledger("sqlite:///" + str(d / "ledger.db")) as led:
        model = build_lineage(led, signer, "leaky", metrics=metrics)
        build_lineage(led, signer, "tail")
        try:
            policy = load_policy(write_policy(d, gates=gates))
        except ConfigurationError:
            return "refused"
        return "admit" if decide(isvc(model), policy, ledger=led).allowed else "deny"


def test_a_membership_leak_the_evaluate_stage_fails_is_not_admitted(tmp_path: Path) -> None:
    stage = _stage_verdict(LEAKY, BARE)
    webhook = _webhook_verdict(tmp_path, LEAKY, BARE)
    assert webhook != "admit", "a model leaking membership at 0.9 was admitted under mia_advantage 0.3"
    assert webhook == stage


def test_a_bare_number_is_refused_in_both_places_with_the_explicit_form(tmp_path: Path) -> None:
    gates = {"accuracy": {"min": 0.9}, "mia_advantage": 0.3}
    with pytest.raises(ConfigurationError) as at_stage:
        evaluate.check_gates(LEAKY, gates)
    _trust(tmp_path)
    with pytest.raises(ConfigurationError) as at_admission:
        load_policy(write_policy(tmp_path, gates=gates, namespaces={}))
    for exc in (at_stage.value, at_admission.value):
        msg = str(exc)
        assert "mia_advantage: {min: 0.3}" in msg and "mia_advantage: {max: 0.3}" in msg, msg
    assert str(at_admission.value).startswith(f"policy {tmp_path / 'policy.yaml'}: gates.mia_advantage")
    with pytest.raises(ConfigurationError, match=r"accuracy: \{min: 0\.9\}"):  # the first bare gate met
        evaluate.check_gates(LEAKY, BARE)


@pytest.mark.parametrize(
    ("gates", "verdict"),
    [
        ({"accuracy": {"min": 0.9}, "mia_advantage": {"max": 0.3}}, "deny"),
        ({"accuracy": {"min": 0.9}, "mia_advantage": {"max": 0.95}}, "admit"),
        ({"mia_advantage": {"min": 0.3}}, "admit"),  # odd, but explicit: both read it the same way
        ({"mia_advantage": {"min": 0.1, "max": 0.5}}, "deny"),
        ({"f1": {"min": 0.1}}, "deny"),  # a metric the evaluation did not measure fails its gate
    ],
)
def test_explicit_gates_give_one_verdict(tmp_path: Path, gates: dict[str, Any], verdict: str) -> None:
    assert _stage_verdict(LEAKY, gates) == verdict
    assert _webhook_verdict(tmp_path, LEAKY, gates) == verdict


# --- the real steps: evaluate, then deploy (which runs admission's decide) ------------------

def test_evaluate_and_deploy_stages_read_one_gate_set_alike(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=10)
    a = env.root / "a"
    ev = s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["enc"]),
                    metrics=s.ArtifactOut(a / "m.json"))
    assert ev is not None and ev.record is not None
    leak = ev.record.metrics["mia_advantage"]
    assert leak > 0  # the measured model leaks a little; a gate below that must stop it
    limit = round(leak / 2, 6)

    def stage(gates: dict[str, Any]) -> str:
        try:
            s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["enc"]),
                       metrics=s.ArtifactOut(a / "gated.json"), gates=gates)
        except ConfigurationError:
            return "refused"
        except GateError:
            return "deny"
        return "admit"

    def deploy(gates: dict[str, Any]) -> str:
        try:
            s.deploy(env.sealing, model=s.ArtifactIn(p["model"]), evaluation=s.ArtifactIn(a / "m.json"),
                     manifest=s.ArtifactOut(a / "isvc.yaml"), policy_path=str(_policy(env, gates)))
        except ConfigurationError:
            return "refused"
        except PolicyDenied:
            return "deny"
        return "admit"

    bare = {"accuracy": 0.5, "mia_advantage": limit}
    assert deploy(bare) == stage(bare) != "admit"
    assert not (a / "isvc.yaml").exists()
    explicit = {"accuracy": {"min": 0.5}, "mia_advantage": {"max": limit}}
    assert deploy(explicit) == stage(explicit) == "deny"
    assert not (a / "isvc.yaml").exists()
    loose = {"accuracy": {"min": 0.5}, "mia_advantage": {"max": min(1.0, leak + 0.1)}}
    assert stage(loose) == "admit"
    assert deploy(loose) == "admit" and (a / "isvc.yaml").exists()


def test_a_gate_spec_the_evaluate_stage_refuses_writes_no_record(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=3)
    before = env.ledger.size()
    with pytest.raises(ConfigurationError, match="accuracy"):
        s.evaluate(env.sealing, model=s.ArtifactIn(p["model"]), data=s.ArtifactIn(p["enc"]),
                   metrics=s.ArtifactOut(env.root / "m.json"), gates={"accuracy": 0.5})
    assert env.ledger.size() == before and not (env.root / "m.json").exists()


# --- property: any gate spec means the same to both readers ------------------------------

_METRICS = ("accuracy", "robust_accuracy", "mia_advantage", "f1")
_number = st.one_of(
    st.floats(min_value=-0.5, max_value=1.5, allow_nan=False),
    st.sampled_from([0, 1, 0.3, 0.9, math.nan, math.inf, -math.inf]),
)
_bound = st.one_of(
    _number,  # a bare number
    st.fixed_dictionaries({"min": _number}),
    st.fixed_dictionaries({"max": _number}),
    st.fixed_dictionaries({"min": _number, "max": _number}),
    st.sampled_from([{}, {"minimum": 0.9}, "0.9", None, True, [0.9]]),
)
_specs = st.dictionaries(st.sampled_from(_METRICS), _bound, min_size=1, max_size=4)
_observed = st.dictionaries(st.sampled_from(_METRICS), st.floats(min_value=0, max_value=1), max_size=4)


def _record(metrics: dict[str, float]) -> Record:
    return Record(stage="evaluate", component=Component(name="evaluate"), metrics=metrics, seq=7,
                  prev="0" * 64, time="2026-01-01T00:00:00Z", signer=SignerRef("pipeline", "k"))


def _admission_gate_verdict(metrics: dict[str, float], gates: dict[str, Any]) -> str:
    doc = yaml.safe_load(yaml.safe_dump({"ledger": "sqlite:///l.db", "gates": gates}))  # as a file would read
    try:
        policy = parse_policy(doc, base=Path("."), trust=TrustRoot())
    except ConfigurationError:
        return "refused"
    return "deny" if _check_gates(policy.default, _record(metrics)) else "admit"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gates=_specs, metrics=_observed)
def test_any_gate_spec_gives_the_evaluate_stage_and_admission_one_verdict(
    gates: dict[str, Any], metrics: dict[str, float]
) -> None:
    assert _stage_verdict(metrics, gates) == _admission_gate_verdict(metrics, gates)


# --- every writer of gates: the reference pipeline, the demo, the shipped policy ----------

def test_the_reference_pipeline_default_gates_are_explicit_and_bound_the_leak() -> None:
    from mlseal.gates import Gate, parse_gates
    from mlseal.pipelines import DEFAULT_GATES, compile_reference

    ir = yaml.safe_load(compile_reference())
    compiled = ir["root"]["inputDefinitions"]["parameters"]["gates"]["defaultValue"]
    assert set(parse_gates(compiled)) == set(parse_gates(DEFAULT_GATES))
    assert Gate("mia_advantage", maximum=0.2) in parse_gates(DEFAULT_GATES)


def test_the_shipped_cluster_policy_gates_are_explicit() -> None:
    from mlseal.gates import Gate, parse_gates
    from mlseal.pipelines import DEFAULT_GATES

    doc = yaml.safe_load((Path(__file__).parent.parent / "infra/k8s/base/config/policy.yaml").read_text())
    assert set(parse_gates(doc["gates"])) == set(parse_gates(DEFAULT_GATES))
    assert Gate("mia_advantage", maximum=0.2) in parse_gates(doc["gates"])


def test_the_demo_refuses_a_bare_gate_before_writing_anything(tmp_path: Path) -> None:
    from mlseal.demo import run_demo

    with pytest.raises(ConfigurationError, match=r"mia_advantage: \{max: 0\.3\}"):
        run_demo(tmp_path / "wd", progress=lambda _: None, env={}, gates={"mia_advantage": 0.3})
    assert not (tmp_path / "wd").exists()


@pytest.mark.slow
def test_the_demo_policy_and_its_evaluate_stage_hold_one_gate_set(demo_run: DemoRun) -> None:
    from mlseal.gates import parse_gates
    from mlseal.pipelines import DEFAULT_GATES

    result, _ = demo_run
    policy = yaml.safe_load((result.workdir / "policy.yaml").read_text())
    evaluated = next(r for r in result.run_records if r.stage == "evaluate")
    assert policy["gates"] == evaluated.params["gates"]  # the explicit form, in both places
    assert set(parse_gates(policy["gates"])) == set(parse_gates(DEFAULT_GATES))
    assert set(load_policy(result.workdir / "policy.yaml").default.gates) == set(parse_gates(DEFAULT_GATES))
