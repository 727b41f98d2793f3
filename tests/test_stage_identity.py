"""Per-stage signing identities and fail-closed configuration (before any work).

Each test is an attack or a misconfiguration that used to get through: a key that may
sign `train` records writing an `evaluate` record, a pod without Vault silently using a
dev store and a fresh key, a pod-local ledger, a run id that is still a KFP placeholder.
In every case the stage stops before any work and the ledger stays valid.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ledger import Ledger, open_ledger
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.record import RecordDraft, RunInfo
from mlseal.ledger.verify import verify_ledger
from mlseal.secrets import open_secret_source
from mlseal.signing.keys import LocalKeySigner, public_pem
from mlseal.signing.trust import load_trust
from mlseal.stage import InputRefused, Sealing, Stage, signing_key_name, with_run
from tests.fixtures_pipeline import SealedEnv

STAGES = ("ingest", "process", "train", "evaluate", "deploy")


def _per_stage(root: Path, *, extra: dict[str, list[str]] | None = None) -> tuple[dict[str, LocalKeySigner], Path]:
    """One key per stage kind and a trust file granting each exactly its stage."""
    keys = {s: LocalKeySigner.generate() for s in STAGES}
    (root / "keys").mkdir(exist_ok=True)
    signers = []
    for s, k in keys.items():
        (root / "keys" / f"{s}.pub.pem").write_bytes(public_pem(k.public_key()))
        signers.append({"name": s, "public_key": f"keys/{s}.pub.pem", "stages": [s, *((extra or {}).get(s, []))]})
    trust = root / "trust.yaml"
    trust.write_text(yaml.safe_dump({"signers": signers}))
    return keys, trust


def _sealing(root: Path, key: LocalKeySigner, stage: str, trust: Path) -> Sealing:
    return Sealing(ledger=open_ledger("sqlite:///" + str(root / "ledger.db")), signer=key, trust=load_trust(trust),
                   signer_name=stage, secrets=open_secret_source(root / "secrets", env={}))


def _ledger(sealing: Sealing) -> Ledger:
    """The ledger `_sealing` opened (a Sealing types it as the narrower LedgerWriter)."""
    assert isinstance(sealing.ledger, Ledger)
    return sealing.ledger


def test_train_key_cannot_write_an_evaluation(tmp_path: Path) -> None:
    keys, trust = _per_stage(tmp_path)
    train = _sealing(tmp_path, keys["train"], "train", trust)
    # the honest path: the preflight refuses before any work, nothing appended
    with (
        pytest.raises(ConfigurationError, match=r"may sign \['train'\] records, not 'evaluate'"),
        Stage("evaluate", name="evaluate", sealing=train) as st,
    ):
        st.metric("accuracy", 1.0)
    assert train.ledger.size() == 0
    # the attacker bypasses the stage and appends with the train key directly
    train.ledger.append(RecordDraft(stage="evaluate", metrics={"accuracy": 1.0}), keys["train"], signer_name="train")
    with pytest.raises(VerificationError, match="not 'evaluate'"):
        parse_entry(train.ledger.entry(0), load_trust(trust))
    report = verify_ledger(_ledger(train), load_trust(trust))
    assert not report.ok and "signer train may sign ['train'] records, not 'evaluate'" in report.problems[0].detail
    # the hash-only path cannot judge signers, the signature path always does (both parse modes)
    assert verify_ledger(_ledger(train), load_trust(trust), digest_uri=lambda _u: "0" * 64).ok is False


def test_stage_input_from_a_record_outside_its_signers_grant_is_refused(tmp_path: Path) -> None:
    keys, trust = _per_stage(tmp_path)
    train = _sealing(tmp_path, keys["train"], "train", trust)
    raw = tmp_path / "raw.csv"
    raw.write_text("a\n1\n")
    # an ingest record signed by the train key (appended around the stage runtime)
    from mlseal.ledger.record import OutputRef, Sha256Hex
    from mlseal.signing.artifact import sign_path
    from mlseal.signing.digest import digest_path, file_sha256

    bundle = Path(sign_path(raw, keys["train"]))
    train.ledger.append(RecordDraft(stage="ingest", outputs=(OutputRef(
        name="raw", uri=raw.as_uri(), sha256=Sha256Hex(digest_path(raw)),
        bundle_sha256=Sha256Hex(file_sha256(bundle))),)), keys["train"], signer_name="train")
    process = replace(train, signer=keys["process"], signer_name="process")
    with pytest.raises(InputRefused, match="not 'ingest'"), Stage("process", name="p", sealing=process) as st:
        st.input("raw", raw)
    assert train.ledger.size() == 1


@pytest.mark.parametrize("bound", [True, False])
def test_stage_input_bundle_signed_outside_the_producers_grant_is_refused(tmp_path: Path, bound: bool) -> None:
    """The record is the ingest key's and holds; the artifact's bundle is the train key's.
    A bundle signs the bytes for whoever reads them: it must come from a key granted the
    stage that produced them, whether or not the record bound the bundle's digest (with a
    binding, the record names the train key's bundle; without, any bundle would do)."""
    keys, trust = _per_stage(tmp_path)
    ingest = _sealing(tmp_path, keys["ingest"], "ingest", trust)
    raw = tmp_path / "raw.csv"
    raw.write_text("a\n1\n")
    from mlseal.ledger.record import OutputRef, Sha256Hex
    from mlseal.signing.artifact import sign_path
    from mlseal.signing.digest import digest_path, file_sha256

    bundle = Path(sign_path(raw, keys["train"]))  # a key granted train, not ingest
    ingest.ledger.append(RecordDraft(stage="ingest", outputs=(OutputRef(
        name="raw", uri=raw.as_uri(), sha256=Sha256Hex(digest_path(raw)),
        bundle_sha256=Sha256Hex(file_sha256(bundle)) if bound else None),)), keys["ingest"], signer_name="ingest")
    process = replace(ingest, signer=keys["process"], signer_name="process")
    with (
        pytest.raises(InputRefused, match=r"bundle .* signed by a key not granted the producing stage .ingest."),
        Stage("process", name="p", sealing=process) as st,
    ):
        st.input("raw", raw)
    assert ingest.ledger.size() == 1
    if not bound:  # the same bytes with the ingest key's bundle are accepted
        sign_path(raw, keys["ingest"])
        with Stage("process", name="p", sealing=process) as st:
            st.input("raw", raw)
        assert ingest.ledger.size() == 2


def test_grant_can_pin_component_digests_and_images(tmp_path: Path) -> None:
    key = LocalKeySigner.generate()
    (tmp_path / "k.pub.pem").write_bytes(public_pem(key.public_key()))
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump({"signers": [{
        "name": "evaluate", "public_key": "k.pub.pem", "stages": ["evaluate"],
        "components": ["ab" * 32], "images": ["registry.example/mlseal@sha256:" + "cd" * 32]}]}))
    trust = load_trust(tmp_path / "trust.yaml")
    sealing = _sealing(tmp_path, key, "evaluate", tmp_path / "trust.yaml")
    with (
        pytest.raises(ConfigurationError, match="listed component digests"),
        Stage("evaluate", name="evaluate", sealing=sealing, source_digest="ef" * 32),
    ):
        pass
    ok = replace(sealing, image="registry.example/mlseal@sha256:" + "cd" * 32)
    with Stage("evaluate", name="evaluate", sealing=ok, source_digest="ab" * 32) as st:
        st.metric("accuracy", 0.9)
    assert verify_ledger(_ledger(ok), trust).ok
    # an appended record from another image is named by verify, in both read paths
    ok.ledger.append(RecordDraft(stage="evaluate"), key, signer_name="evaluate")
    report = verify_ledger(_ledger(ok), trust)
    assert not report.ok and "listed component digests" in report.problems[0].detail


@pytest.mark.parametrize("bad", [{"stages": "train"}, {"stages": []}, {"stages": ["Train!"]}, {"components": ["x"]}])
def test_trust_file_grants_are_checked(tmp_path: Path, bad: dict[str, object]) -> None:
    key = LocalKeySigner.generate()
    (tmp_path / "k.pub.pem").write_bytes(public_pem(key.public_key()))
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump({"signers": [{"name": "x", "public_key": "k.pub.pem", **bad}]}))
    with pytest.raises(ConfigurationError, match=r"signers\[0\] \(x\)"):
        load_trust(tmp_path / "trust.yaml")


def test_untrusted_signer_appends_nothing(sealed_env: SealedEnv) -> None:
    stranger = replace(sealed_env.sealing, signer=LocalKeySigner.generate(), signer_name="train")
    with (
        pytest.raises(ConfigurationError, match=r"not listed in the trust file .*stages: \[train\]"),
        Stage("train", name="train", sealing=stranger),
    ):
        raise AssertionError("the body must not run")
    assert sealed_env.ledger.size() == 0


def test_ledger_that_does_not_answer_stops_the_stage_before_work(sealed_env: SealedEnv) -> None:
    class Down:
        def size(self) -> int:
            from mlseal.errors import InfrastructureError

            raise InfrastructureError("connection refused")

    # a stand-in that answers only size(), the one call the stage makes before any work
    sealing = replace(sealed_env.sealing, ledger=Down())  # type: ignore[arg-type]
    with (
        pytest.raises(ConfigurationError, match=r"ledger does not answer .*connection refused"),
        Stage("ingest", name="ingest", sealing=sealing),
    ):
        raise AssertionError("the body must not run")


def _task_env(tmp_path: Path, trust: Path, **extra: str) -> dict[str, str]:
    return {"_KFP_RUNTIME": "true", "MLSEAL_TRUST": str(trust), **extra}


def test_kfp_task_without_vault_does_not_fall_back_to_a_dev_store(tmp_path: Path) -> None:
    _keys, trust = _per_stage(tmp_path)
    env = _task_env(tmp_path, trust, MLSEAL_LEDGER="sqlite:///" + str(tmp_path / "l.db"))
    with pytest.raises(ConfigurationError, match=r"VAULT_ADDR is not set in this KFP task.*MLSEAL_DEV_SECRETS"):
        Sealing.from_env(env, stage="train")
    assert not (tmp_path / ".mlseal").exists() and not (tmp_path / "l.db").exists()


def test_kfp_task_without_ledger_url_refuses_the_pod_local_default(tmp_path: Path) -> None:
    _keys, trust = _per_stage(tmp_path)
    env = _task_env(tmp_path, trust, MLSEAL_DEV_SECRETS=str(tmp_path / "s"))
    with pytest.raises(ConfigurationError, match="MLSEAL_LEDGER is not set in this KFP task"):
        Sealing.from_env(env, stage="train")


def test_dev_store_enabled_on_purpose_signs_per_stage_and_says_so(tmp_path: Path) -> None:
    env = _task_env(tmp_path, tmp_path / "trust.yaml", MLSEAL_LEDGER="sqlite:///" + str(tmp_path / "l.db"),
                    MLSEAL_DEV_SECRETS=str(tmp_path / "s"))
    src = open_secret_source(tmp_path / "s", env={})
    signer = src.transit_signer(signing_key_name("ingest"))
    (tmp_path / "ingest.pub.pem").write_bytes(public_pem(signer.public_key()))
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(
        {"signers": [{"name": "ingest", "public_key": "ingest.pub.pem", "stages": ["ingest"]}]}))
    sealing = Sealing.from_env(env, stage="ingest")
    assert sealing.signer.key_id == signer.key_id and sealing.signer_name == "ingest"
    with Stage("ingest", name="ingest", sealing=sealing) as st:
        st.output("raw", tmp_path / "raw.csv").write_text("a\n1\n")
    assert st.result is not None
    rec = parse_entry(sealing.ledger.entry(st.result.seq), sealing.trust)
    assert rec.component.secret_store == "dev"
    # the train stage's own key is another key: not trusted for anything here
    with (
        pytest.raises(ConfigurationError, match="not listed in the trust file"),
        Stage("train", name="train", sealing=Sealing.from_env(env, stage="train")),
    ):
        pass
    assert sealing.ledger.size() == 1


@pytest.mark.parametrize("field", ["run_id", "pipeline", "task"])
def test_unresolved_kfp_placeholder_is_never_recorded(sealed_env: SealedEnv, field: str) -> None:
    with pytest.raises(ConfigurationError, match="unresolved KFP placeholder"):
        with_run(sealed_env.sealing, **{field: "{{$.pipeline_job_uuid}}"})
    with pytest.raises(ConfigurationError, match="unresolved KFP placeholder"):
        Stage("ingest", name="ingest", sealing=replace(sealed_env.sealing, run=_unchecked_run(field)))
    assert sealed_env.ledger.size() == 0


def _unchecked_run(field: str) -> RunInfo:
    run = RunInfo()
    object.__setattr__(run, field, "{{$.pipeline_task_name}}")  # as a caller building it by hand might
    return run


def test_owned_output_is_removed_when_the_stage_fails(sealed_env: SealedEnv) -> None:
    out = sealed_env.root / "model"
    with pytest.raises(RuntimeError), Stage("ingest", name="i", sealing=sealed_env.sealing) as st:
        out.write_text("half")
        st.adopt_output("model", out)
        raise RuntimeError("vault went away")
    assert not out.exists()
    assert st.result is not None and st.result.status.value == "failed"


def test_kfp_task_with_vault_uses_vault_and_the_given_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VAULT_ADDR in the task's environment (the mapping given, not the process's) selects
    Vault: no dev-store refusal; the stage then needs Vault (here unreachable) for its key."""
    from mlseal.errors import VaultError

    monkeypatch.delenv("VAULT_ADDR", raising=False)
    _keys, trust = _per_stage(tmp_path)
    env = _task_env(tmp_path, trust, MLSEAL_LEDGER="sqlite:///" + str(tmp_path / "l.db"),
                    VAULT_ADDR="http://127.0.0.1:9", VAULT_TOKEN="t")
    with pytest.raises(VaultError, match=r"cannot reach Vault at http://127\.0\.0\.1:9"):
        Sealing.from_env(env, stage="train")
    assert not (tmp_path / ".mlseal").exists()


def test_signing_key_file_in_the_environment_is_the_stage_signer(tmp_path: Path) -> None:
    keys, trust = _per_stage(tmp_path)
    keys["train"].save(tmp_path / "train.pem", tmp_path / "train2.pub.pem")
    env = {"MLSEAL_TRUST": str(trust), "MLSEAL_LEDGER": "sqlite:///" + str(tmp_path / "l.db"),
           "MLSEAL_SIGNING_KEY": str(tmp_path / "train.pem"), "MLSEAL_DEV_SECRETS": str(tmp_path / "s")}
    sealing = Sealing.from_env(env, stage="train")
    assert sealing.signer.key_id == keys["train"].key_id and sealing.signer_name == "train"
    sealing.preflight("train")
    with pytest.raises(ConfigurationError, match="not 'evaluate'"):
        sealing.preflight("evaluate")


def test_parse_entry_enforces_pinned_components_and_images(tmp_path: Path) -> None:
    key = LocalKeySigner.generate()
    (tmp_path / "k.pub.pem").write_bytes(public_pem(key.public_key()))
    image = "registry.example/mlseal@sha256:" + "cd" * 32
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump({"signers": [{
        "name": "evaluate", "public_key": "k.pub.pem", "stages": ["evaluate"],
        "components": ["ab" * 32], "images": [image]}]}))
    trust = load_trust(tmp_path / "trust.yaml")
    led = open_ledger("sqlite:///" + str(tmp_path / "l.db"))
    from mlseal.ledger.record import Component, Sha256Hex

    for component, img, ok in [("ab" * 32, image, True), ("ef" * 32, image, False), ("ab" * 32, "other", False)]:
        led.append(RecordDraft(stage="evaluate", component=Component(name="e", source_sha256=Sha256Hex(component),
                                                                      image=img)), key, signer_name="evaluate")
        entry = led.entry(led.size() - 1)
        if ok:
            parse_entry(entry, trust)
        else:
            with pytest.raises(VerificationError, match="may record only its listed"):
                parse_entry(entry, trust)


def test_transit_key_named_in_the_environment_is_used(tmp_path: Path) -> None:
    src = open_secret_source(tmp_path / "s", env={})
    custom = src.transit_signer("team-a-train")
    env = {"MLSEAL_DEV_SECRETS": str(tmp_path / "s"), "MLSEAL_VAULT_TRANSIT_KEY": "team-a-train"}
    from mlseal.stage import stage_signer

    assert stage_signer(env, "train")[1].key_id == custom.key_id
    assert stage_signer({"MLSEAL_DEV_SECRETS": str(tmp_path / "s")}, "train")[1].key_id != custom.key_id
