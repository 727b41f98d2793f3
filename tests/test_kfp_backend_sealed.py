"""Sealed KFP pipelines (mlseal.kfp) run the way the KFP v2 backend runs them.

Unlike kfp.local, the tasks get only what the compiled IR gives them (``wire()``'s
environment, Secret, ConfigMaps, pod label), their own filesystems, artifacts through S3,
metadata through (simulated) MLMD, the ledger on PostgreSQL with a writer role from the
Secret, and Vault through Kubernetes auth with the projected ``vault``-audience token.
"""

# no "from __future__ import annotations": the KFP SDK reads the component annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Model, Output

from mlseal.kfp import sealed_component, wire
from mlseal.ledger import open_ledger
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.verify import verify_ledger
from tests.kfp_backend import ObjectStore, RunResult, moto_object_store, run_pipeline
from tests.kfp_backend.mlseal_env import MlsealCluster, mlseal_cluster
from tests.vault_server import FakeVault


@sealed_component(stage="ingest", media_types={"rows": "text/csv"})
def collect(rows: Output[Dataset], n: int = 3) -> None:
    """My own ingest step."""
    with open(rows.path, "w") as f:
        f.write("x\n" + "".join(f"{i}\n" for i in range(n)))


@sealed_component(stage="train")
def fit(rows: Input[Dataset], model: Output[Model], mode: str = "mean") -> None:
    from mlseal.kfp import current_stage  # a KFP function body is self-contained

    with open(rows.path) as f:
        values = [int(v) for v in f.read().split()[1:]]
    with open(model.path, "w") as out:
        if mode == "fail":
            out.write("half a model")
            raise RuntimeError("training diverged")
        current_stage().metric("n", len(values))
        out.write(str(sum(values) / len(values)))


def users_own(services: Any) -> Any:
    @dsl.pipeline(name="users-own")
    def pipeline(mode: str = "mean") -> None:
        rows = wire(collect(n=4), services)
        wire(fit(rows=rows.outputs["rows"], mode=mode), services)

    return pipeline


@pytest.fixture(scope="module")
def object_store() -> Iterator[ObjectStore]:
    """moto's S3 server on 127.0.0.1 for this module's runs."""
    with moto_object_store() as store:
        yield store


@pytest.fixture
def mlseal(object_store: ObjectStore, pg_url: str) -> Iterator[MlsealCluster]:
    with FakeVault() as fake, mlseal_cluster(object_store, fake, pg_url) as m:
        yield m


@pytest.fixture
def mlseal_profile(object_store: ObjectStore, pg_url: str) -> Iterator[MlsealCluster]:
    """Multi-user KFP: runs in a profile namespace under default-editor."""
    with FakeVault() as fake, mlseal_cluster(object_store, fake, pg_url, service_account="default-editor",
                                             namespace="kubeflow-user-example-com") as m:
        yield m


def _run(m: MlsealCluster, tmp_path: Path, mode: str) -> RunResult:
    ir = tmp_path / f"{uuid.uuid4().hex}.yaml"
    compiler.Compiler().compile(users_own(m.services), str(ir))
    return run_pipeline(ir.read_text(), {"mode": mode}, m.cluster, run_display_name="my run")


def _stored_digest(m: MlsealCluster, uri: str, tmp_path: Path) -> str:
    """The digest of what the object store holds at `uri`: one object, or (a directory
    artifact, uploaded by the launcher as a prefix) mlseal's directory digest of them all."""
    from mlseal.signing.digest import digest_path

    store = m.cluster.object_store
    keys = store.keys(uri)
    bucket = uri[len("s3://"):].split("/", 1)[0]
    key = uri[len("s3://") + len(bucket) + 1:]
    target = tmp_path / "download" / uuid.uuid4().hex
    if key in keys:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.read(uri))
    else:
        inside = [k for k in keys if k.startswith(key + "/")]
        assert inside, f"nothing stored at {uri}"
        for k in inside:
            f = target / k[len(key) + 1:]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(store.read(f"s3://{bucket}/{k}"))
    return digest_path(target)


def _records(m: MlsealCluster, tmp_path: Path) -> list[Any]:
    """Every record, after checking the ledger and that each recorded output's bytes in the
    object store are the recorded ones (what `mlseal ledger verify --artifacts` does)."""
    trust = m.trust(tmp_path)
    with open_ledger(m.ledger_url) as led:
        assert verify_ledger(led, trust).ok
        records = [parse_entry(led.entry(s), trust) for s in range(led.size())]
    for r in records:
        for out in r.outputs:
            if out.uri and out.uri.startswith("s3://"):
                assert _stored_digest(m, out.uri, tmp_path) == out.sha256, (
                    f"record {r.seq} ({r.component.name}) output {out.name}: the bytes at {out.uri} differ")
    return records


def _assert_no_credentials(m: MlsealCluster, result: RunResult, ir: str = "") -> None:
    import json

    from tests.fixtures_pipeline import ledger_plaintext

    with open_ledger(m.ledger_url) as led:
        ledger = ledger_plaintext(led).decode(errors="replace")
    published = json.dumps([(t.executor_input, t.executor_output, t.outputs, t.artifacts, t.command)
                            for t in result.tasks.values()])
    creds = m.credentials()
    assert len(creds) > 3 and m.issued_jwts
    for text in (result.logs(), ledger, published, ir):
        leaked = [c[:6] for c in creds if c in text]
        assert not leaked, f"credentials leaked: {leaked}"


@pytest.mark.postgres
def test_users_own_sealed_steps_on_the_backend(mlseal: MlsealCluster, tmp_path: Path) -> None:
    result = _run(mlseal, tmp_path, "mean")
    assert result.state == "SUCCEEDED", result.logs()
    collect_rec, fit_rec = _records(mlseal, tmp_path)
    assert (collect_rec.stage, collect_rec.signer.name) == ("ingest", "ingest")
    assert (fit_rec.stage, fit_rec.signer.name) == ("train", "train")
    assert fit_rec.inputs[0].producer_seq == collect_rec.seq
    assert fit_rec.inputs[0].sha256 == collect_rec.outputs[0].sha256
    assert fit_rec.metrics == {"n": 4.0} and fit_rec.params == {"mode": "mean"}
    # each task logged in to Vault with its own stage role (the projected token)
    assert mlseal.vault.logins["auth/kubernetes/"] == 2
    # the run context is the backend's, resolved by the driver
    assert {r.run.run_id for r in (collect_rec, fit_rec)} == {result.run_id}
    assert (collect_rec.run.task, fit_rec.run.task) == ("collect", "fit")
    assert fit_rec.run.pipeline == "my run"
    # outputs are recorded at their S3 URIs and the bytes there are the recorded ones
    model = result.tasks["fit"].artifacts["model"][0]
    assert fit_rec.outputs[0].uri == model["uri"] and model["uri"].startswith("s3://")
    assert mlseal.cluster.object_store.read(model["uri"]) == b"1.5"
    # the metadata the next task got went through MLMD: digest and bundle intact
    fit_input = result.tasks["fit"].executor_input
    assert fit_input is not None
    got = fit_input["inputs"]["artifacts"]["rows"]["artifacts"][0]["metadata"]
    assert got["mlseal.sha256"] == collect_rec.outputs[0].sha256 and got["mlseal.bundle"].startswith("{")
    assert got["mlseal.seq"] == collect_rec.seq
    # no credential in any pod's log, the ledger, the executor inputs/outputs or the IR
    _assert_no_credentials(mlseal, result)


@pytest.mark.postgres
def test_in_a_profile_namespace_and_under_an_unbound_service_account(mlseal_profile: MlsealCluster,
                                                                     tmp_path: Path) -> None:
    m = mlseal_profile
    result = _run(m, tmp_path, "mean")
    assert result.state == "SUCCEEDED", result.logs()
    assert [r.signer.name for r in _records(m, tmp_path)] == ["ingest", "train"]
    # the same pipeline under a service account no mlseal role is bound to cannot log in
    m.cluster.service_account = "pipeline-runner"
    refused = _run(m, tmp_path, "mean")
    assert refused.state == "FAILED" and refused.tasks["fit"].state == "NOT_RUN"
    assert "service account name not authorized" in refused.tasks["collect"].logs
    assert len(_records(m, tmp_path)) == 2  # nothing sealed without the stage's identity
    _assert_no_credentials(m, refused)


@pytest.mark.postgres
def test_a_failing_sealed_step_is_recorded_and_uploads_nothing(mlseal: MlsealCluster, tmp_path: Path) -> None:
    result = _run(mlseal, tmp_path, "fail")
    assert result.state == "FAILED"
    _assert_no_credentials(mlseal, result)
    assert "training diverged" in result.tasks["fit"].logs
    *_, last = _records(mlseal, tmp_path)
    assert last.stage == "train" and last.status.value == "failed" and last.outputs == ()
    fit_input = result.tasks["fit"].executor_input
    assert fit_input is not None
    uri = fit_input["outputs"]["artifacts"]["model"]["artifacts"][0]["uri"]
    assert mlseal.cluster.object_store.keys(uri) == []


# -- a container step sealed with `mlseal record` ----------------------------------------------


def container_pipeline(services: Any, *, identity_env: bool) -> Any:
    from mlseal.kfp.executor import shell_command

    @dsl.container_component
    def dedupe(raw: dsl.Input[dsl.Dataset], clean: dsl.Output[dsl.Dataset], run_id: str, pipeline: str,
               task: str) -> dsl.ContainerSpec:
        return dsl.ContainerSpec(
            image="registry.example.org/coreutils@sha256:" + "0" * 64,
            command=shell_command(f"cat '{raw.path}' '{raw.path}' | awk '!seen[$0]++' > '{clean.path}'",
                                  stage="process", name="dedupe", run_id=run_id, pipeline=pipeline, task=task,
                                  program=["python3", "-m", "mlseal.cli"]),
        )

    @dsl.pipeline(name="container-step")
    def pipeline() -> None:
        rows = wire(collect(n=3), services)
        d = wire(dedupe(raw=rows.outputs["rows"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                        pipeline=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, task=dsl.PIPELINE_TASK_NAME_PLACEHOLDER),
                 services, stage="process")
        d.set_caching_options(False)
        if identity_env:  # the stage identity the cluster contract says wire() sets
            d.set_env_variable("MLSEAL_VAULT_TRANSIT_KEY", "mlseal-signing-process")
            d.set_env_variable("MLSEAL_SIGNER_NAME", "process")
        wire(fit(rows=d.outputs["clean"]), services)

    return pipeline


@pytest.mark.postgres
@pytest.mark.parametrize(("identity_env", "publish_logs"), [
    pytest.param(True, False, id="identity-on-the-task"),
    # the launcher's executor-logs (PUBLISH_LOGS, on by default) is written while the step
    # runs and uploaded after it: `mlseal record` must not seal it
    pytest.param(True, True, id="publish-logs"),
    # wire() alone gives a container step its stage's signing identity
    pytest.param(False, False, id="wire-only"),
])
def test_a_container_step_sealed_with_mlseal_record_on_the_backend(mlseal: MlsealCluster, tmp_path: Path,
                                                                   identity_env: bool, publish_logs: bool) -> None:
    mlseal.cluster.publish_logs = publish_logs
    ir = tmp_path / "container.yaml"
    compiler.Compiler().compile(container_pipeline(mlseal.services, identity_env=identity_env), str(ir))
    result = run_pipeline(ir.read_text(), {}, mlseal.cluster)
    assert result.state == "SUCCEEDED", result.logs()
    collect_rec, dedupe_rec, fit_rec = _records(mlseal, tmp_path)
    assert (dedupe_rec.stage, dedupe_rec.signer.name, dedupe_rec.run.task) == ("process", "process", "dedupe")
    assert dedupe_rec.run.run_id == result.run_id and dedupe_rec.inputs[0].producer_seq == collect_rec.seq
    assert fit_rec.inputs[0].producer_seq == dedupe_rec.seq and fit_rec.metrics == {"n": 3.0}
    clean = result.tasks["dedupe"].artifacts["clean"][0]
    assert mlseal.cluster.object_store.read(clean["uri"]) == b"x\n0\n1\n2\n"
    assert not [k for k in mlseal.cluster.object_store.keys(result.pipeline_root) if k.endswith(".sig")]
    _assert_no_credentials(mlseal, result, ir.read_text())


# -- mlseal's reference pipeline -------------------------------------------------------------

DATA_DIR = "/opt/mlseal-data"  # files the component image ships in this test (Cluster.image_files)


def _reference_inputs(m: MlsealCluster, tmp_path: Path) -> dict[str, str]:
    """The demo's source data and policy as image files; the validation reference sealed
    into the ledger as an ``ingest`` record, as `mlseal demo` does; the HMAC key in Vault."""
    import base64
    import os

    import hvac
    import yaml

    from mlseal.ml import anonymize, data, validate
    from mlseal.secrets import open_secret_source
    from mlseal.stage import MEDIA_JSON, Sealing, Stage

    fake = m.vault
    hvac.Client(url=fake.addr, token=fake.root_token).secrets.kv.v2.create_or_update_secret(
        path="mlseal/anonymize/hmac", secret={"key": base64.b64encode(os.urandom(32)).decode()}, mount_point="secret")
    source = tmp_path / "source.csv"
    data.write_csv(data.make_demo_dataset(seed=0), source)
    table = data.read_csv(source).drop(anonymize.AnonymizeSpec.demo().drop)
    reference = tmp_path / "validation-reference.json"
    src = open_secret_source(None, env={"VAULT_ADDR": fake.addr, "VAULT_TOKEN": fake.root_token})
    with open_ledger(m.ledger_url) as led:
        sealing = Sealing(ledger=led, signer=src.transit_signer("mlseal-signing-ingest"), trust=m.trust(tmp_path),
                          signer_name="ingest", secrets=src)
        with Stage("ingest", name="reference", sealing=sealing, params={"label": data.DEMO_LABEL}) as st:
            st.output("reference", reference, media_type=MEDIA_JSON).write_text(
                validate.Reference.from_table(table, label=data.DEMO_LABEL).to_json())
    policy = yaml.safe_dump({"trust": "/etc/mlseal/trust/trust.yaml", "ledger": m.services.ledger_url,
                             "require_stages": ["ingest", "process", "train", "evaluate"],
                             "gates": {"accuracy": {"min": 0.9}, "mia_advantage": {"max": 0.2}},
                             "evaluation": {"signers": ["evaluate"], "held_out": True}, "mode": "enforce"})
    m.cluster.image_files.update({f"{DATA_DIR}/source.csv": source.read_text(),
                                  f"{DATA_DIR}/policy.yaml": policy})
    for f in tmp_path.glob(reference.name + "*"):  # the reference and its signature bundle
        m.cluster.image_files[f"{DATA_DIR}/{f.name}"] = f.read_text()
    return {"source": f"{DATA_DIR}/source.csv", "reference_path": f"{DATA_DIR}/validation-reference.json",
            "policy_path": f"{DATA_DIR}/policy.yaml"}


@pytest.mark.postgres
@pytest.mark.slow
def test_reference_pipeline_on_the_backend(mlseal: MlsealCluster, tmp_path: Path) -> None:
    from mlseal.kfp import wire_compiled
    from mlseal.pipelines import compile_reference

    arguments = _reference_inputs(mlseal, tmp_path)
    ir = wire_compiled(compile_reference(), mlseal.services)
    result = run_pipeline(ir, {**arguments, "epochs": 20}, mlseal.cluster, run_display_name="reference run")
    assert result.state == "SUCCEEDED", result.logs()[-6000:]
    records = _records(mlseal, tmp_path)
    run_records = [r for r in records if r.run is not None and r.run.run_id == result.run_id]
    assert [r.stage for r in run_records] == ["ingest", "process", "process", "process", "train", "evaluate",
                                              "deploy"]
    assert all(r.signer.name == r.stage for r in run_records)
    assert {r.run.task for r in run_records} == set(result.tasks)
    assert mlseal.vault.logins["auth/kubernetes/"] == len(result.tasks)
    _assert_no_credentials(mlseal, result, ir)


# -- a misconfigured pod appends nothing ------------------------------------------------------


def _without_env(ir: str, name: str) -> str:
    """The compiled IR with one wired environment variable removed from every task."""
    docs = list(yaml.safe_load_all(ir))
    for ex in docs[0]["deploymentSpec"]["executors"].values():
        env = ex.get("container", {}).get("env")
        if env:
            ex["container"]["env"] = [e for e in env if e["name"] != name]
    return yaml.safe_dump_all(docs)


@pytest.mark.postgres
@pytest.mark.parametrize(("mistake", "message"), [
    ("no-vault", "VAULT_ADDR is not set in this KFP task, and the dev secret store is not enabled"),
    ("no-ledger", "MLSEAL_LEDGER is not set in this KFP task"),
    ("ledger-down", "the ledger does not answer"),
    ("untrusted-stage-key", "is not listed in the trust file"),
    ("wrong-grant", "signer ingest may sign ['train'] records, not 'ingest'"),
])
def test_each_misconfiguration_fails_closed_and_appends_nothing(mlseal: MlsealCluster, tmp_path: Path,
                                                               mistake: str, message: str) -> None:
    m = mlseal
    ir = tmp_path / "p.yaml"
    compiler.Compiler().compile(users_own(m.services), str(ir))
    text = ir.read_text()
    if mistake == "no-vault":
        text = _without_env(text, "VAULT_ADDR")
    elif mistake == "no-ledger":
        text = _without_env(text, "MLSEAL_LEDGER")
    elif mistake == "ledger-down":
        text = text.replace(m.services.ledger_url.split("//", 1)[1].split("/", 1)[0], "127.0.0.1:9")
    else:
        signers = yaml.safe_load(m.trust_text)["signers"]
        if mistake == "untrusted-stage-key":  # the trust ConfigMap lacks the ingest key
            signers = [s for s in signers if s["name"] != "ingest"]
        else:  # the ingest key is listed only for another stage
            for s in signers:
                s["stages"] = {"ingest": ["train"], "train": ["ingest"]}.get(s["name"], s["stages"])
        m.cluster.config_maps[m.cluster.namespace]["mlseal-trust"]["trust.yaml"] = yaml.safe_dump(
            {"signers": signers})
    before = len(_records(m, tmp_path))
    result = run_pipeline(text, {"mode": "mean"}, m.cluster, run_display_name="misconfigured")
    assert result.state == "FAILED" and result.tasks["fit"].state == "NOT_RUN"
    assert message in result.tasks["collect"].logs, result.tasks["collect"].logs[-3000:]
    m.cluster.config_maps[m.cluster.namespace]["mlseal-trust"]["trust.yaml"] = m.trust_text
    assert len(_records(m, tmp_path)) == before  # the ledger still verifies and holds nothing new
    collect_input = result.tasks["collect"].executor_input
    assert collect_input is not None
    uri = collect_input["outputs"]["artifacts"]["rows"]["artifacts"][0]["uri"]
    assert m.cluster.object_store.keys(uri) == []  # nothing uploaded
    _assert_no_credentials(m, result)
