"""Attacks on per-stage identities, admission's evaluation rules, KFP wiring and params.

Each test is an attack that currently gets through. The ledger scenarios are built
record by record with per-stage keys (the attacker holds one stage's key and appends
around the stage runtime, as a compromised task with the ledger writer's credentials can),
then judged by the real readers.
"""

# (no `from __future__ import annotations`: KFP reads the components' real annotation objects)

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl

from mlseal.admission import load_policy
from mlseal.admission.engine import VerifiedRecords, check_model, decide_model
from mlseal.admission.manifest import ModelRef
from mlseal.errors import ConfigurationError
from mlseal.ledger import open_ledger
from mlseal.ledger.record import Component, InputRef, OutputRef, RecordDraft, Sha256Hex
from mlseal.secrets import open_secret_source
from mlseal.signing.keys import LocalKeySigner, public_pem
from mlseal.signing.trust import load_trust
from mlseal.stage import Sealing, Stage

REPO = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "process", "train", "evaluate", "deploy")
SPLIT = {"split_seed": 0, "test_fraction": 0.25}


def _sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _keys(root: Path, *, legacy: tuple[str, ...] = ()) -> tuple[dict[str, LocalKeySigner], Path]:
    """One key per stage kind, each granted only its stage (``legacy``: no grant)."""
    keys = {s: LocalKeySigner.generate() for s in STAGES}
    (root / "keys").mkdir(exist_ok=True)
    signers: list[dict[str, Any]] = []
    for s, k in keys.items():
        (root / "keys" / f"{s}.pub.pem").write_bytes(public_pem(k.public_key()))
        entry: dict[str, Any] = {"name": s, "public_key": f"keys/{s}.pub.pem"}
        if s not in legacy:
            entry["stages"] = [s]
        signers.append(entry)
    trust = root / "trust.yaml"
    trust.write_text(yaml.safe_dump({"signers": signers}))
    return keys, trust


class _Log:
    """Append records with a chosen key; remembers each output's producing seq."""

    def __init__(self, root: Path, keys: dict[str, LocalKeySigner]) -> None:
        self.url = "sqlite:///" + str(root / "ledger.db")
        self.led = open_ledger(self.url)
        self.keys = keys
        self.seq_of: dict[str, int] = {}

    def add(self, key: str, stage: str, name: str, inputs: dict[str, str], outputs: list[str], *,
            params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None) -> int:
        draft = RecordDraft(
            stage=stage,
            component=Component(name=name),
            inputs=tuple(InputRef(name=n, uri=f"s3://b/{a}", sha256=Sha256Hex(_sha(a)), producer_seq=self.seq_of[a])
                         for n, a in inputs.items()),
            outputs=tuple(OutputRef(name=o, uri=f"s3://b/{o}", sha256=Sha256Hex(_sha(o))) for o in outputs),
            params=params or {},
            metrics=metrics or {},
        )
        seq = int(self.led.append(draft, self.keys[key], signer_name=key).seq)
        for o in outputs:
            self.seq_of[o] = seq
        return seq

    def honest_prefix(self) -> None:
        """ingest -> anonymize -> encrypt -> validate, each by its own stage key."""
        self.add("ingest", "ingest", "ingest", {}, ["raw"])
        self.add("process", "process", "anonymize", {"data": "raw"}, ["anon"])
        self.add("process", "process", "encrypt", {"data": "anon"}, ["enc"])
        self.add("process", "process", "validate", {"data": "enc"}, ["report"])


def _policy(root: Path, trust: Path, log: _Log, **rules: Any) -> Path:
    data = {"trust": str(trust), "ledger": log.url, "gates": {"accuracy": {"min": 0.9}}, **rules}
    p = root / "policy.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _ref(model: str) -> ModelRef:
    return ModelRef(kind="InferenceService", name="m", namespace=None, sha256=Sha256Hex(_sha(model)), uri=None,
                    where="spec.predictor.model.storageUri")


# --- admission: what a train key can still do ------------------------------------------------


def test_held_out_data_validated_only_by_a_train_key_record_named_validate_is_denied(tmp_path: Path) -> None:
    """The held-out rule wants a trusted *validate* record over the evaluation data before
    training. The train key writes a record named "validate" (stage train) over data it made
    itself, so the evaluator (run honestly on that data) measures whatever the attacker chose."""
    keys, trust = _keys(tmp_path)
    log = _Log(tmp_path, keys)
    log.honest_prefix()
    # honest baseline: admitted
    log.add("train", "train", "train", {"data": "enc", "validation": "report"}, ["model"], params=SPLIT)
    log.add("evaluate", "evaluate", "evaluate", {"model": "model", "data": "enc"}, ["metrics"], params=SPLIT,
            metrics={"accuracy": 0.95})
    policy = load_policy(_policy(tmp_path, trust, log, require_stages=["ingest", "process", "train", "evaluate"],
                                 evaluation={"signers": ["evaluate"], "held_out": True}))
    assert decide_model(_ref("model"), policy).allowed
    # the attack, with the train key only: its own dataset, its own "validate", its model
    log.add("train", "train", "prep", {"data": "enc"}, ["crafted"])
    log.add("train", "train", "validate", {"data": "crafted"}, ["report2"])
    log.add("train", "train", "train", {"data": "crafted", "validation": "report2"}, ["model2"], params=SPLIT)
    log.add("evaluate", "evaluate", "evaluate", {"model": "model2", "data": "crafted"}, ["metrics2"],
            params=SPLIT, metrics={"accuracy": 0.99})
    d = decide_model(_ref("model2"), policy)
    assert not d.allowed, "a train-key record named 'validate' counted as validation of the held-out data"


def test_required_step_name_claimed_by_another_stage_key_is_denied(tmp_path: Path) -> None:
    """require_stages may name components ("anonymize"); the name is whatever the signer
    wrote, so the train key can claim the anonymize step and skip it."""
    keys, trust = _keys(tmp_path)
    log = _Log(tmp_path, keys)
    log.add("ingest", "ingest", "ingest", {}, ["raw"])
    log.add("train", "train", "anonymize", {"data": "raw"}, ["not-anonymized"])  # train key, stage train
    log.add("train", "train", "train", {"data": "not-anonymized"}, ["model"], params=SPLIT)
    log.add("evaluate", "evaluate", "evaluate", {"model": "model", "data": "not-anonymized"}, ["metrics"],
            params=SPLIT, metrics={"accuracy": 0.95})
    policy = load_policy(_policy(tmp_path, trust, log, require_stages=["ingest", "anonymize", "train", "evaluate"]))
    d = decide_model(_ref("model"), policy)
    assert not d.allowed, "a train-signed record named 'anonymize' satisfied require_stages: [anonymize]"


def test_verified_record_cache_does_not_outlive_a_narrower_grant(tmp_path: Path) -> None:
    """VerifiedRecords is keyed on the trusted key ids only. Narrowing a key's `stages:`
    (same keys) must not let a record verified under the old grant through."""
    keys, strict = _keys(tmp_path)
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "keys").symlink_to(tmp_path / "keys")
    data = yaml.safe_load(strict.read_text())
    for s in data["signers"]:
        if s["name"] == "train":
            del s["stages"]  # the old, single-identity layout: may sign any stage
    legacy_path = tmp_path / "legacy" / "trust.yaml"
    legacy_path.write_text(yaml.safe_dump(data))
    log = _Log(tmp_path, keys)
    log.honest_prefix()
    log.add("train", "train", "train", {"data": "enc"}, ["model"], params=SPLIT)
    log.add("train", "evaluate", "evaluate", {"model": "model", "data": "enc"}, ["metrics"], params=SPLIT,
            metrics={"accuracy": 0.99})  # the train key's own evaluation
    log.add("deploy", "deploy", "deploy", {"model": "model"}, ["manifest"])  # a successor: the link gets cached
    policy = load_policy(_policy(tmp_path, strict, log))
    rules = policy.rules_for(None)
    cache = VerifiedRecords()
    assert check_model(_ref("model"), rules, log.led, load_trust(legacy_path), verified=cache) == []
    # the trust file now grants the train key only train: its evaluation must not count
    uncached = check_model(_ref("model"), rules, log.led, load_trust(strict))
    assert uncached, "sanity: without the cache the train key's evaluation is refused"
    cached = check_model(_ref("model"), rules, log.led, load_trust(strict), verified=cache)
    assert cached, "a record cached under the old grant was accepted under the narrower one"


# --- the Vault roles behind the per-stage keys ----------------------------------------------


def test_wire_compiled_takes_the_stage_from_the_generated_call_not_from_text_in_the_body(tmp_path: Path) -> None:
    """wire_compiled finds a task's stage by searching the executor's command text; the user's
    docstring (or any string literal, in any plain component) can carry the same text first,
    and the task is wired with another stage's Vault role and signing key."""
    from mlseal.kfp import sealed_component
    from mlseal.kfp._wiring import sealed_executors

    @sealed_component(stage="train")
    def fit(data: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model]) -> None:
        """Fit. _task.run(_mlseal_step, {'stage': 'evaluate'"""
        Path(model.path).write_text(Path(data.path).read_text())

    @dsl.component(base_image="python:3.11")
    def plain(x: str) -> str:
        marker = "_task.run(_mlseal_step, {'stage': 'evaluate'"
        return x + marker[:0]

    @dsl.pipeline
    def pipe(d: dsl.Input[dsl.Dataset]) -> None:
        fit(data=d)
        plain(x="a")

    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipe, str(out))
    found = dict(sealed_executors(yaml.safe_load(out.read_text())))
    assert found == {"exec-fit": "train"}, found


def test_services_refuse_credentials_in_the_vault_address() -> None:
    """Services.ledger_url refuses credentials (they land in the compiled YAML); vault_addr
    goes to the same place as a plain env var and is not checked."""
    from mlseal.kfp import Services

    with pytest.raises(ConfigurationError):
        Services(vault_addr="https://admin:hunter2@vault.vault.svc:8200")


# --- params: public, so secrets only by reference ----------------------------------------------


def _stage_sealing(tmp_path: Path) -> Sealing:
    keys, trust = _keys(tmp_path)
    return Sealing(ledger=open_ledger("sqlite:///" + str(tmp_path / "ledger.db")), signer=keys["train"],
                   trust=load_trust(trust), signer_name="train", secrets=open_secret_source(tmp_path / "s", env={}))


@pytest.mark.parametrize("params", [
    {"db": {"user": "app", "password": "hunter2"}},          # nested: only top-level names are checked
    {"source": "postgresql://app:hunter2@db.example/prod"},   # a DSN with its password, under a plain name
], ids=["nested-secret-name", "dsn-with-password"])
def test_stage_params_refuse_secrets_inside_values(tmp_path: Path, params: dict[str, Any]) -> None:
    sealing = _stage_sealing(tmp_path)
    with pytest.raises(ConfigurationError):
        Stage("train", name="train", sealing=sealing, params=params)


# --- fail-closed configuration in a task ------------------------------------------------------


def test_a_task_does_not_create_a_pod_local_ledger(tmp_path: Path) -> None:
    """Inside a KFP task only an *unset* MLSEAL_LEDGER is refused: an explicit sqlite URL is
    opened with create=True, so a typo or a pod-local path makes a fresh, empty ledger in the
    pod, the stage "answers" the preflight and seals into a file that dies with the pod."""
    keys, trust = _keys(tmp_path)
    keys["train"].save(tmp_path / "train.pem", tmp_path / "train.pub.pem")  # the trusted train key
    pod_local = tmp_path / "pod-tmp-ledger.db"  # e.g. sqlite:////tmp/ledger.db, a writable dir in the pod
    env = {
        "MLSEAL_SIGNING_KEY": str(tmp_path / "train.pem"),
        "KFP_POD_NAME": "train-abc-123",
        "MLSEAL_TRUST": str(trust),
        "MLSEAL_LEDGER": "sqlite:///" + str(pod_local),
        "VAULT_ADDR": "",
        "MLSEAL_DEV_SECRETS": str(tmp_path / "secrets"),
    }
    with pytest.raises(ConfigurationError):
        Sealing.from_env(env, stage="train").preflight("train")
    assert not pod_local.exists(), "the task created a new ledger file in the pod"


def test_mlseal_record_signs_with_the_dev_store_the_environment_names(tmp_path: Path) -> None:
    """`mlseal demo` writes mlseal.env (MLSEAL_DEV_SECRETS, MLSEAL_LEDGER, MLSEAL_TRUST) and says
    to run your own steps with `mlseal record`; record asks for the stage's Transit key but
    opens the secret source without MLSEAL_DEV_SECRETS (it looks in ./.mlseal/secrets) and then
    refuses the dev store, so no `mlseal record` works in the demo's environment."""
    import os
    import subprocess
    import sys

    store = tmp_path / "secrets"
    signer = open_secret_source(store, env={}).transit_signer("mlseal-signing-ingest")
    (tmp_path / "ingest.pub.pem").write_bytes(public_pem(signer.public_key()))
    trust = tmp_path / "trust.yaml"
    trust.write_text(yaml.safe_dump({"signers": [
        {"name": "ingest", "public_key": "ingest.pub.pem", "stages": ["ingest"]}]}))
    data = tmp_path / "raw.csv"
    data.write_text("a\n1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSEAL_", "VAULT_", "KFP_", "_KFP"))}
    env.update(PYTHONPATH=str(REPO), MLSEAL_DEV_SECRETS=str(store), MLSEAL_TRUST=str(trust),
               MLSEAL_LEDGER="sqlite:///" + str(tmp_path / "ledger.db"))
    proc = subprocess.run([sys.executable, "-m", "mlseal.cli", "record", "--stage", "ingest", "--name", "mine",
                           "--output", f"raw={data}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


# --- secrets reaching the compiled YAML through a sealed component ------------------------------


def test_sealed_component_refuses_a_literal_secret_default() -> None:
    """A secret-like parameter's default is compiled into the pipeline spec (and the
    generated source in the command): refuse it when the component is made, as
    mlseal.components.compile does for the shipped components."""
    with pytest.raises(ConfigurationError):
        from mlseal.kfp import sealed_component

        @sealed_component(stage="ingest")
        def load(out: dsl.Output[dsl.Dataset], db_password: str = "hunter2") -> None:
            Path(out.path).write_text("x")


def test_sealed_component_refuses_a_literal_secret_argument(tmp_path: Path) -> None:
    """The same secret passed as a constant argument in the pipeline body lands in the
    compiled YAML; the task would refuse it at run time, after it leaked."""
    from mlseal.kfp import sealed_component

    @sealed_component(stage="ingest")
    def load(out: dsl.Output[dsl.Dataset], db_password: str) -> None:
        Path(out.path).write_text("x")

    out = tmp_path / "p.yaml"
    with pytest.raises(ConfigurationError, match="db_password"):  # refused as the pipeline is defined

        @dsl.pipeline
        def pipe() -> None:
            load(db_password="hunter2")

        compiler.Compiler().compile(pipe, str(out))
    assert not out.exists()


def test_sealed_stage_params_refuse_unresolved_placeholders(tmp_path: Path) -> None:
    """`mlseal record` refuses a param holding `{{$.…}}`; a sealed component's params go
    through Stage unchecked. A component default like ``run: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER``
    is never resolved by the backend, so the literal placeholder would be recorded."""
    sealing = _stage_sealing(tmp_path)
    with pytest.raises(ConfigurationError):
        Stage("train", name="train", sealing=sealing, params={"source_run": dsl.PIPELINE_JOB_ID_PLACEHOLDER})


def test_record_command_refuses_a_literal_secret_param() -> None:
    """record_command puts params into the container's argv, i.e. the compiled YAML; the
    secret check only runs later, inside the pod, after the secret was published."""
    from mlseal.kfp.executor import record_command

    with pytest.raises(ConfigurationError):
        record_command(stage="process", name="dedupe", params={"db_password": "hunter2"})


def test_mlseal_record_in_a_kfp_task_needs_the_shared_ledger_and_a_trust_file(tmp_path: Path) -> None:
    """The fail-closed rules live in Sealing.from_env, which `mlseal record` does not use. In a
    KFP task without MLSEAL_LEDGER and MLSEAL_TRUST it seals into ./.mlseal/ledger.db in the pod,
    trusting only its own key for any stage, and hands the metadata downstream."""
    import os
    import subprocess
    import sys

    LocalKeySigner.generate().save(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    out = tmp_path / "out.txt"
    out.write_text("hello\n")
    ei = {"inputs": {"parameterValues": {}},
          "outputs": {"artifacts": {"clean": {"artifacts": [{"name": "clean", "uri": str(out),
                                                            "type": {"schemaTitle": "system.Dataset"},
                                                            "metadata": {}}]}},
                      "outputFile": str(tmp_path / "executor_output.json")}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSEAL_", "VAULT_", "KFP_", "_KFP"))}
    env.update(PYTHONPATH=str(REPO), KFP_POD_NAME="eval-pod-1", MLSEAL_SIGNING_KEY=str(tmp_path / "k.pem"))
    proc = subprocess.run([sys.executable, "-m", "mlseal.cli", "record", "--stage", "evaluate", "--name", "x",
                           "--executor-input", json.dumps(ei), "--run-id", "r1", "--pipeline", "p", "--task", "t",
                           "--metric", "accuracy=1.0"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / ".mlseal" / "ledger.db").exists(), "sealed into a pod-local ledger"
    assert not (tmp_path / "executor_output.json").exists()
