"""KFP components: compiled YAML goldens, the secret-literal check, and each step in-process."""

# (no `from __future__ import annotations`: KFP reads the pipelines' real annotations)

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlseal.components import COMPONENTS
from mlseal.components import steps as s
from mlseal.components.compile import (
    YAML_DIR,
    SecretLiteralError,
    check_no_secret_literals,
    check_parameter,
    compile_checked,
    component_yaml,
)
from mlseal.errors import PolicyDenied
from mlseal.kfp import RUN_CONTEXT
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.record import Status
from mlseal.ml import data
from mlseal.ml.errors import DataValidationError, GateError
from mlseal.signing.digest import digest_path
from mlseal.stage import InputRefused
from tests.fixtures_pipeline import SealedEnv, ledger_plaintext, secret_values

GOLDEN = Path(__file__).parent / "golden" / "components"


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_component_yaml_matches_golden_and_shipped_copy(name: str) -> None:
    fresh = component_yaml(name)
    golden = (GOLDEN / f"{name}.yaml").read_text()
    assert fresh == golden, f"{name}: compiled YAML changed; regenerate with python -m mlseal.components.compile"
    assert (YAML_DIR / f"{name}.yaml").read_text() == golden
    spec = yaml.safe_load(golden)
    params = spec["root"]["inputDefinitions"]["parameters"]
    # the run context is required (no default the backend would leave unresolved): each call passes it
    for p in RUN_CONTEXT:
        assert params[p] == {"parameterType": "STRING"}, p
    container = spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]
    assert "pip install" not in " ".join(container["command"])  # the image provides mlseal; nothing fetched


def test_each_component_forwards_to_its_step_with_the_same_parameters() -> None:
    """KFP needs each component's signature spelled out; it must not drift from the step's."""
    import inspect

    assert list(COMPONENTS) == list(s.STEPS)
    empty = inspect.Parameter.empty
    for name, component in COMPONENTS.items():
        outer = inspect.signature(component.python_func).parameters
        inner = inspect.signature(s.STEPS[name]).parameters
        for p in outer.values():
            if p.name in RUN_CONTEXT:  # KFP placeholders passed by every call, recorded as RunInfo
                continue
            assert p.name in inner, f"{name}: step has no parameter {p.name}"
            q = inner[p.name]
            # KFP cannot default a list/dict parameter to None: [] / {} stand for the step's None
            want = None if p.default in ([], {}) else p.default
            assert want == q.default, (
                f"{name}.{p.name}: component default {p.default!r}, step default {q.default!r}")
        for q in inner.values():
            assert q.name in outer or q.name == "sealing" or q.default is not empty, (
                f"{name}: step parameter {q.name} is required but the component never passes it")


def test_secret_parameters_are_references_only() -> None:
    check_parameter("hmac_key_path", "mlseal/anonymize/hmac")
    check_parameter("data_key_name", "mlseal-data")
    check_parameter("db_password", "")  # no value: fine
    check_parameter("epochs", 60)
    for name, value in [("db_password", "hunter2"), ("api_token", "t0k3n"), ("hmac_key_path", "c2VjcmV0IGtleQ=="),
                        ("data_key_name", "not a key name!"), ("db_credentials_path", "user:pw@host")]:
        with pytest.raises(SecretLiteralError) as exc:
            check_parameter(name, value)
        assert value not in str(exc.value)  # the message never repeats the literal


def test_compilation_fails_on_a_secret_literal(tmp_path: Path) -> None:
    from kfp import dsl

    @dsl.pipeline(name="leaky")
    def leaky(source: str, db_password: str = "hunter2") -> None:
        COMPONENTS["ingest"](source=source)

    with pytest.raises(SecretLiteralError, match="db_password"):
        compile_checked(leaky, tmp_path / "leaky.yaml")
    assert not (tmp_path / "leaky.yaml").exists()

    # a constant argument of a sealed task is refused as the pipeline is defined, before any YAML
    with pytest.raises(SecretLiteralError, match="db_credentials_path"):

        @dsl.pipeline(name="literal-in-task")
        def literal(source: str) -> None:
            COMPONENTS["ingest"](source=source, db_credentials_path="postgres://u:pw@db/x")
    check_no_secret_literals(yaml.safe_load(compile_checked(COMPONENTS["anonymize"])))


def _demo_source(root: Path) -> Path:
    p = root / "raw.csv"
    data.write_csv(data.make_demo_dataset(rows=200, seed=1), p)
    return p


def _reference(env: SealedEnv, raw: Path) -> Path:
    from mlseal.ml import anonymize, validate
    from mlseal.stage import Stage

    ref = env.root / "reference.json"
    table = data.read_csv(raw).drop(anonymize.AnonymizeSpec.demo().drop)
    with Stage("ingest", name="reference", sealing=env.sealing) as st:
        st.output("reference", ref).write_text(validate.Reference.from_table(table).to_json())
    return ref


def _policy(env: SealedEnv, gates: dict[str, Any]) -> Path:
    p = env.root / "policy.yaml"
    p.write_text(yaml.safe_dump({"trust": str(env.trust_file), "ledger": env.ledger_url,
                                 "require_stages": ["ingest", "process", "train", "evaluate"], "gates": gates,
                                 "serving_uris": {env.root.as_uri() + "/": "s3://models/"},
                                 "evaluation": {"signers": ["pipeline"], "held_out": True}}))
    return p


def _upstream(env: SealedEnv) -> dict[str, Path]:
    a = env.root / "a"
    raw = _demo_source(env.root)
    ref = _reference(env, raw)
    s.ingest(env.sealing, dataset=s.ArtifactOut(a / "raw.csv"), source=str(raw))
    s.anonymize(env.sealing, data=s.ArtifactIn(a / "raw.csv"), anonymized=s.ArtifactOut(a / "anon.csv"))
    s.encrypt(env.sealing, data=s.ArtifactIn(a / "anon.csv"), encrypted=s.ArtifactOut(a / "enc.bin"))
    return {"raw": raw, "ref": ref, "anon": a / "anon.csv", "enc": a / "enc.bin"}


def _trained(env: SealedEnv, *, epochs: int) -> dict[str, Path]:
    """`_upstream`, then validate and train on the encrypted dataset; adds "model"."""
    p = _upstream(env)
    a = env.root / "a"
    s.validate(env.sealing, data=s.ArtifactIn(p["enc"]), report=s.ArtifactOut(a / "val.json"),
               reference_path=str(p["ref"]))
    s.train(env.sealing, data=s.ArtifactIn(p["enc"]), validation=s.ArtifactIn(a / "val.json"),
            model=s.ArtifactOut(a / "model"), epochs=epochs)
    return {**p, "model": a / "model"}


def test_steps_in_process_end_to_end(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=15)
    a = env.root / "a"
    ev = s.evaluate(env.sealing, model=s.ArtifactIn(a / "model"), data=s.ArtifactIn(p["enc"]),
                    metrics=s.ArtifactOut(a / "metrics.json"), gates={"accuracy": {"min": 0.8}})
    dep = s.deploy(env.sealing, model=s.ArtifactIn(a / "model"), evaluation=s.ArtifactIn(a / "metrics.json"),
                   manifest=s.ArtifactOut(a / "isvc.yaml"), policy_path=str(_policy(env, {"accuracy": {"min": 0.8}})))
    assert ev is not None and dep is not None
    records = [parse_entry(e, env.trust) for _, e in env.ledger.entries()]
    assert [(r.stage, r.component.name) for r in records] == [
        ("ingest", "reference"), ("ingest", "ingest"), ("process", "anonymize"), ("process", "encrypt"),
        ("process", "validate"), ("train", "train"), ("evaluate", "evaluate"), ("deploy", "deploy")]
    assert all(r.status is Status.OK for r in records)
    # the encrypted artifact holds no plaintext; the anonymized one no direct identifiers
    raw_table = data.read_csv(p["raw"])
    emails = [str(v) for v in raw_table.column("email")]
    assert not any(e.encode() in p["enc"].read_bytes() for e in emails[:20])
    assert not any(e in p["anon"].read_text() for e in emails)
    assert records[2].metrics["rows"] == 200 and "report" in records[2].params
    assert {x.path for x in records[2].secrets} == {"mlseal/anonymize/hmac"}
    assert {x.path for x in records[3].secrets} == {"transit/mlseal-data"}
    assert {x.path for x in records[4].secrets} == {"transit/mlseal-data"}  # decrypt-on-read
    assert ev.record is not None and ev.record.metrics["accuracy"] >= 0.8
    assert {"robust_accuracy", "mia_advantage", "roc_auc", "f1"} <= set(ev.record.metrics)
    assert dep.record is not None and dep.record.params["decision"] == {"allowed": True, "reasons": []}
    manifest = yaml.safe_load((a / "isvc.yaml").read_text())
    model_sha = digest_path(a / "model")  # a model repository directory: its OMS manifest digest
    assert manifest["metadata"]["annotations"]["mlseal.dev/model-sha256"] == model_sha
    # served by a stock KServe runtime, from where the policy maps the recorded artifact
    predictor = manifest["spec"]["predictor"]["model"]
    assert predictor["modelFormat"] == {"name": "onnx", "version": "1"}
    assert predictor["runtime"] == "kserve-tritonserver"
    assert predictor["storageUri"] == "s3://models/a/model/"
    # nothing secret in the ledger
    ledger_bytes = ledger_plaintext(env.ledger)
    assert b"mlseal/anonymize/hmac" in ledger_bytes  # the scan reads the decoded records
    for value in secret_values(env.root / "secrets"):
        assert value not in ledger_bytes


def test_altered_artifact_between_steps_is_refused(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _upstream(env)
    before = env.ledger.size()
    blob = bytearray(p["enc"].read_bytes())
    blob[-1] ^= 0x01
    p["enc"].write_bytes(bytes(blob))
    with pytest.raises(InputRefused):
        s.validate(env.sealing, data=s.ArtifactIn(p["enc"]), report=s.ArtifactOut(env.root / "val.json"),
                   reference_path=str(p["ref"]))
    assert env.ledger.size() == before and not (env.root / "val.json").exists()


def test_validation_breach_fails_the_stage(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _upstream(env)
    poisoned = data.read_csv(p["raw"])
    labels = poisoned.column("label")
    poisoned = poisoned.with_column("label", "int", [0] * len(labels))  # label flipping
    bad = env.root / "poisoned.csv"
    data.write_csv(poisoned, bad)
    s.ingest(env.sealing, dataset=s.ArtifactOut(env.root / "b" / "raw.csv"), source=str(bad))
    s.anonymize(env.sealing, data=s.ArtifactIn(env.root / "b" / "raw.csv"),
                anonymized=s.ArtifactOut(env.root / "b" / "anon.csv"))
    with pytest.raises(DataValidationError, match="label_shift"):
        s.validate(env.sealing, data=s.ArtifactIn(env.root / "b" / "anon.csv"),
                   report=s.ArtifactOut(env.root / "b" / "val.json"), reference_path=str(p["ref"]))
    rec = parse_entry(env.ledger.entry(env.ledger.size() - 1), env.trust)
    assert rec.status is Status.FAILED and rec.component.name == "validate" and rec.outputs == ()
    assert rec.metrics["label_shift"] > 0.15
    assert not (env.root / "b" / "val.json").exists()


def test_unmet_gate_and_denied_deploy_fail_their_stages(sealed_env: SealedEnv) -> None:
    env = sealed_env
    p = _trained(env, epochs=5)
    a = env.root / "a"
    with pytest.raises(GateError):
        s.evaluate(env.sealing, model=s.ArtifactIn(a / "model"), data=s.ArtifactIn(p["enc"]),
                   metrics=s.ArtifactOut(a / "m1.json"), gates={"accuracy": {"min": 1.01}})
    failed = parse_entry(env.ledger.entry(env.ledger.size() - 1), env.trust)
    assert failed.status is Status.FAILED and "accuracy" in failed.metrics
    s.evaluate(env.sealing, model=s.ArtifactIn(a / "model"), data=s.ArtifactIn(p["enc"]),
               metrics=s.ArtifactOut(a / "m2.json"))
    policy = _policy(env, {"accuracy": {"min": 0.999}})
    with pytest.raises(PolicyDenied, match="accuracy"):
        s.deploy(env.sealing, model=s.ArtifactIn(a / "model"), evaluation=s.ArtifactIn(a / "m2.json"),
                 manifest=s.ArtifactOut(a / "isvc.yaml"), policy_path=str(policy))
    denied = parse_entry(env.ledger.entry(env.ledger.size() - 1), env.trust)
    assert denied.stage == "deploy" and denied.status is Status.FAILED
    assert denied.params["decision"]["allowed"] is False
    assert not (a / "isvc.yaml").exists()
    json.dumps(denied.to_obj())


@pytest.mark.postgres
def test_ingest_from_postgres_with_credentials_from_the_secret_store(sealed_env: SealedEnv, pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE TABLE patients (id text, age integer, label bigint)")
        c.execute("INSERT INTO patients VALUES ('p1', 40, 0), ('p2', 51, 1), ('p3', 33, 1)")
    password = "pw-" + hashlib.sha256(pg_url.encode()).hexdigest()[:12]
    dsn = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    assert password in dsn
    sealed_env.secrets.put("mlseal/ingest/db", {"dsn": dsn})
    out = sealed_env.root / "a" / "raw.csv"
    r = s.ingest(sealed_env.sealing, dataset=s.ArtifactOut(out), source="pgtable:patients")
    assert r is not None
    assert r.record is not None and r.record.metrics["rows"] == 3
    assert [(x.path, x.version) for x in r.record.secrets] == [("mlseal/ingest/db", 1)]
    assert r.record.params["source_kind"] == "postgresql"
    recorded = parse_entry(sealed_env.ledger.entry(r.seq), sealed_env.trust).canonical()
    assert password.encode() not in recorded and b"patients" in recorded
    assert data.read_csv(out).n_rows == 3
