"""`mlseal fetch`, the verifying model loader, against real storage: a moto S3 server
through real s3fs, a local HTTP server, a mounted claim (pvc://) and file://.

Each attack an operator worries about is played for real: the artifact at the recorded
URI overwritten, the bundle tampered with or signed by a key the trust file does not
grant the producing stage, a failing gate, a file renamed inside the model directory,
a model copied elsewhere, no digest, credentials in the environment or the URI. Every
refusal must leave DEST empty and name what failed.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from mlseal.cli import main
from mlseal.ledger import open_ledger
from mlseal.ledger.record import Component, InputRef, OutputRef, RecordDraft, Sha256Hex
from mlseal.signing.artifact import sign_path
from mlseal.signing.digest import digest_path
from mlseal.signing.keys import LocalKeySigner

REPO = Path(__file__).resolve().parent.parent
SECRET = "fetch-test-secret-Zq8vP2x9"  # the S3 secret key: must never be printed
ACCESS = "AKIAFETCHTESTACCESS1"
GATES = {"accuracy": {"min": 0.9}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, s3: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    for k in ("MLSEAL_MODEL_SHA256", "MLSEAL_POLICY", "POD_NAME", "POD_NAMESPACE", "MLSEAL_WORKLOAD",
              "MLSEAL_SIGNING_KEY", "MLSEAL_LEDGER"):
        monkeypatch.delenv(k, raising=False)


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                        region_name="us-east-1")


def upload(endpoint: str, local: Path, bucket: str, key: str) -> None:
    c = client(endpoint)
    with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou):
        c.create_bucket(Bucket=bucket)
    if local.is_file():
        c.upload_file(str(local), bucket, key)
        return
    for p in sorted(local.rglob("*")):
        if p.is_file():
            c.upload_file(str(p), bucket, f"{key}/{p.relative_to(local).as_posix()}")


def make_model(d: Path, seed: int) -> Path:
    """A Triton-style ONNX model repository directory with random weights."""
    (d / "1").mkdir(parents=True)
    (d / "1" / "model.onnx").write_bytes(os.urandom(300_000 + seed))
    (d / "config.pbtxt").write_text(f'name: "m{seed}"\nplatform: "onnxruntime_onnx"\n')
    return d


@dataclass
class World:
    dir: Path
    ledger: str
    policy: Path
    keys: dict[str, LocalKeySigner]
    models: dict[str, tuple[str, str, Path]]  # name -> (sha256, recorded uri, local copy)


def _lineage(led: Any, keys: dict[str, LocalKeySigner], tag: str, model: Path, uri: str, *,
             accuracy: float = 0.95, bundle_signer: LocalKeySigner | None = None) -> str:
    """ingest -> anonymize -> train (outputs the signed model) -> evaluate, one key per stage."""
    def h(s: str) -> Sha256Hex:
        import hashlib

        return Sha256Hex(hashlib.sha256(f"{tag}/{s}".encode()).hexdigest())

    raw = OutputRef(name="raw", uri=f"s3://data/{tag}/raw.csv", sha256=h("raw"))
    s0 = led.append(RecordDraft(stage="ingest", component=Component(name="ingest"), outputs=(raw,)),
                    keys["ingest"], signer_name="ingest").seq
    clean = OutputRef(name="clean", uri=f"s3://data/{tag}/clean.csv", sha256=h("clean"))
    s1 = led.append(RecordDraft(stage="process", component=Component(name="anonymize"),
                                inputs=(InputRef(name="raw", uri=raw.uri, sha256=raw.sha256, producer_seq=s0),),
                                outputs=(clean,)), keys["process"], signer_name="process").seq
    bundle = sign_path(model, bundle_signer or keys["train"])
    sha = Sha256Hex(digest_path(model))
    import hashlib

    out = OutputRef(name="model", uri=uri, sha256=sha,
                    bundle_sha256=Sha256Hex(hashlib.sha256(bundle.read_bytes()).hexdigest()))
    s2 = led.append(RecordDraft(stage="train", component=Component(name="train"),
                                inputs=(InputRef(name="data", uri=clean.uri, sha256=clean.sha256, producer_seq=s1),),
                                outputs=(out,)), keys["train"], signer_name="train").seq
    led.append(RecordDraft(stage="evaluate", component=Component(name="evaluate"),
                           inputs=(InputRef(name="model", uri=uri, sha256=sha, producer_seq=s2),),
                           metrics={"accuracy": accuracy}), keys["evaluate"], signer_name="evaluate")
    return sha


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, s3: str) -> World:
    d = tmp_path_factory.mktemp("fetch")
    keys = {n: LocalKeySigner.generate() for n in ("ingest", "process", "train", "evaluate", "serve", "rogue")}
    signers = []
    for n, k in keys.items():
        k.save(d / "keys" / f"{n}.pem", d / "keys" / f"{n}.pub.pem")
        if n != "rogue":
            signers.append({"name": n, "public_key": f"keys/{n}.pub.pem", "stages": [n]})
    (d / "trust.yaml").write_text(yaml.safe_dump({"signers": signers}))
    ledger = "sqlite:///" + str(d / "ledger.db")
    policy = d / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "trust": "trust.yaml", "ledger": ledger, "require_stages": ["ingest", "anonymize", "train", "evaluate"],
        "gates": GATES, "mode": "enforce",
        "serving_uris": {"s3://recorded/": "s3://served/"},
    }))
    models: dict[str, tuple[str, str, Path]] = {}
    pvc_root = d / "pvc"
    with open_ledger(ledger) as led:
        def add(name: str, uri: str, local: Path, **kw: Any) -> None:
            models[name] = (_lineage(led, keys, name, local, uri, **kw), uri, local)

        for name in ("good", "overwritten", "renamed", "tamperedbundle", "copied"):
            add(name, f"s3://models/{name}/model", make_model(d / "src" / name / "model", len(models)))
        add("lowacc", "s3://models/lowacc/model", make_model(d / "src" / "lowacc" / "model", 90), accuracy=0.5)
        add("evalkey", "s3://models/evalkey/model", make_model(d / "src" / "evalkey" / "model", 91),
            bundle_signer=keys["evaluate"])
        add("roguekey", "s3://models/roguekey/model", make_model(d / "src" / "roguekey" / "model", 92),
            bundle_signer=keys["rogue"])
        add("mapped", "s3://recorded/mapped/model", make_model(d / "src" / "mapped" / "model", 93))
        add("local", f"file://{d}/src/local/model", make_model(d / "src" / "local" / "model", 94))
        add("pvc", "pvc://models-claim/team/model", make_model(pvc_root / "team" / "model", 95))
        single = d / "web" / "model.onnx"
        single.parent.mkdir(parents=True)
        single.write_bytes(os.urandom(200_000))
        add("web", "http://127.0.0.1:{port}/model.onnx", single)
        # every record has a successor (the prev-link check)
        led.append(RecordDraft(stage="ingest", component=Component(name="ingest")), keys["ingest"],
                   signer_name="ingest")
    for _, uri, local in models.values():
        if uri.startswith("s3://models/"):
            key = uri.removeprefix("s3://models/")
            upload(s3, local, "models", key)
            upload(s3, local.with_name(local.name + ".sig"), "models", key + ".sig")
    mapped = models["mapped"][2]
    upload(s3, mapped, "served", "mapped/model")
    upload(s3, mapped.with_name("model.sig"), "served", "mapped/model.sig")
    # attacks on what is stored
    c = client(s3)
    c.put_object(Bucket="models", Key="overwritten/model/1/model.onnx", Body=os.urandom(300_001))
    src = models["renamed"][2]
    c.delete_object(Bucket="models", Key="renamed/model/config.pbtxt")
    c.put_object(Bucket="models", Key="renamed/model/config2.pbtxt", Body=(src / "config.pbtxt").read_bytes())
    bundle = json.loads((models["tamperedbundle"][2].with_name("model.sig")).read_bytes())
    bundle["verificationMaterial"]["publicKey"]["hint"] = "00" * 32
    c.put_object(Bucket="models", Key="tamperedbundle/model.sig", Body=json.dumps(bundle).encode())
    upload(s3, models["copied"][2], "elsewhere", "copied/model")
    upload(s3, models["copied"][2].with_name("model.sig"), "elsewhere", "copied/model.sig")
    return World(d, ledger, policy, keys, models)


def run_fetch(world: World, src: str, dest: Path, *extra: str, sha: str | None = None,
              capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    args = ["fetch", src, str(dest), "--policy", str(world.policy), "--json", *extra]
    if sha is not None:
        args += ["--sha256", sha]
    code = main(args)
    out, err = capsys.readouterr()
    assert SECRET not in out + err and ACCESS not in out + err
    return code, json.loads(out) if out.strip() else {}, err


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "mnt" / "models"
    d.mkdir(parents=True)
    return d


# --- the happy paths -----------------------------------------------------------------------

def test_s3_directory_model_is_verified_and_published(world: World, dest: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    sha, uri, local = world.models["good"]
    code, out, err = run_fetch(world, uri, dest, sha=sha, capsys=capsys)
    assert code == 0, err
    assert tree(dest) == tree(local)
    assert out["ok"] is True and out["sha256"] == sha and out["files"] == 2
    assert digest_path(dest) == sha
    assert "published" in err


def test_digest_comes_from_the_environment_as_in_a_cluster_storage_container(
        world: World, dest: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sha, uri, local = world.models["good"]
    monkeypatch.setenv("MLSEAL_MODEL_SHA256", sha)
    monkeypatch.setenv("MLSEAL_POLICY", str(world.policy))
    assert main(["fetch", uri, str(dest)]) == 0
    assert tree(dest) == tree(local)


def test_serving_uri_mapping_of_the_policy_holds(world: World, dest: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    sha, _, local = world.models["mapped"]
    code, _, err = run_fetch(world, "s3://served/mapped/model", dest, sha=sha, capsys=capsys)
    assert code == 0, err
    assert tree(dest) == tree(local)


def test_file_uri(world: World, dest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sha, uri, local = world.models["local"]
    code, _, err = run_fetch(world, uri, dest, sha=sha, capsys=capsys)
    assert code == 0, err
    assert tree(dest) == tree(local)


def test_pvc_uri_reads_the_claim_where_kserve_mounts_it(world: World, dest: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sha, uri, local = world.models["pvc"]
    monkeypatch.setenv("MLSEAL_PVC_ROOT", str(world.dir / "pvc"))
    code, _, err = run_fetch(world, uri, dest, sha=sha, capsys=capsys)
    assert code == 0, err
    assert tree(dest) == tree(local)


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[int]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()


def _web_world(world: World, port: int, tmp: Path) -> tuple[Path, str, Path]:
    """The http model was recorded with a {port} placeholder: record it at this port."""
    sha, _, local = world.models["web"]
    policy = tmp / "policy.yaml"
    doc = yaml.safe_load(world.policy.read_text())
    doc["trust"] = str(world.dir / "trust.yaml")
    doc["serving_uris"] = {"http://127.0.0.1:{port}/": f"http://127.0.0.1:{port}/"}
    policy.write_text(yaml.safe_dump(doc))
    return policy, sha, local


def test_http_single_file_model(world: World, dest: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    with http_server(world.models["web"][2].parent) as port:
        policy, sha, local = _web_world(world, port, tmp_path)
        code = main(["fetch", f"http://127.0.0.1:{port}/model.onnx", str(dest), "--policy", str(policy),
                     "--sha256", sha])
        err = capsys.readouterr().err
        assert code == 0, err
        assert tree(dest) == {"model.onnx": local.read_bytes()}


def test_http_model_changed_on_the_server_is_refused(world: World, dest: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "www"
    root.mkdir()
    local = world.models["web"][2]
    shutil.copy(local.with_name("model.onnx.sig"), root / "model.onnx.sig")
    (root / "model.onnx").write_bytes(b"\x00" + local.read_bytes()[1:])
    with http_server(root) as port:
        policy, sha, _ = _web_world(world, port, tmp_path)
        code = main(["fetch", f"http://127.0.0.1:{port}/model.onnx", str(dest), "--policy", str(policy),
                     "--sha256", sha])
    assert code == 1
    assert "content differs" in capsys.readouterr().err
    assert list(dest.iterdir()) == []


# --- attacks: each refused, DEST untouched -------------------------------------------------

@pytest.mark.parametrize(("model", "src", "needle"), [
    ("overwritten", None, "1/model.onnx: content differs"),
    ("renamed", None, "signed file(s) missing: config.pbtxt; file(s) not covered by the signature: config2.pbtxt"),
    ("tamperedbundle", None, "is not the bundle record"),
    ("evalkey", None, "not granted the producing stage 'train'"),
    ("roguekey", None, "is not signed by a trusted key"),
    ("lowacc", None, "gate accuracy"),
    ("copied", "s3://elsewhere/copied/model", "not where the ledger recorded this model"),
])
def test_attacks_are_refused_and_dest_stays_empty(world: World, dest: Path, capsys: pytest.CaptureFixture[str],
                                                  model: str, src: str | None, needle: str) -> None:
    sha, uri, _ = world.models[model]
    code, out, err = run_fetch(world, src or uri, dest, sha=sha, capsys=capsys)
    assert code == 1, err
    assert out["ok"] is False
    assert needle in out["error"], out["error"]
    assert "nothing published" in err
    assert list(dest.iterdir()) == []


def test_another_models_digest_for_this_uri_is_refused(world: World, dest: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The annotation names a trusted model, the URI holds another: admission's URI check."""
    sha = world.models["good"][0]
    code, out, _ = run_fetch(world, world.models["local"][1], dest, sha=sha, capsys=capsys)
    assert code == 1
    assert "not where the ledger recorded this model" in out["error"]
    assert list(dest.iterdir()) == []


def test_unknown_digest_is_refused(world: World, dest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_fetch(world, world.models["good"][1], dest, sha="cd" * 32, capsys=capsys)
    assert code == 1 and "not in the ledger" in out["error"]
    assert list(dest.iterdir()) == []


# --- the expected shape, else a clear configuration error (exit 2) -------------------------

def test_missing_digest_is_a_configuration_error(world: World, dest: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_fetch(world, world.models["good"][1], dest, capsys=capsys)
    assert code == 2 and "MLSEAL_MODEL_SHA256" in out["error"]
    assert list(dest.iterdir()) == []


def test_malformed_digest_is_refused(world: World, dest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_fetch(world, world.models["good"][1], dest, sha="nothex", capsys=capsys)
    assert code == 2 and "64 lowercase hex" in out["error"]


def test_dest_must_be_an_existing_empty_directory(world: World, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sha, uri, _ = world.models["good"]
    code, out, _ = run_fetch(world, uri, tmp_path / "absent", sha=sha, capsys=capsys)
    assert code == 2 and "not an existing directory" in out["error"]
    full = tmp_path / "full"
    full.mkdir()
    (full / "model.onnx").write_bytes(b"attacker")
    code, out, _ = run_fetch(world, uri, full, sha=sha, capsys=capsys)
    assert code == 2 and "is not empty (model.onnx)" in out["error"]
    assert tree(full) == {"model.onnx": b"attacker"}


def test_a_stale_temporary_directory_of_a_killed_run_is_cleared(world: World, dest: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (dest / ".mlseal-fetch-0123456789ab" / "model").mkdir(parents=True)
    (dest / ".mlseal-fetch-0123456789ab" / "model" / "half").write_bytes(b"x")
    sha, uri, local = world.models["good"]
    code, _, err = run_fetch(world, uri, dest, sha=sha, capsys=capsys)
    assert code == 0, err
    assert tree(dest) == tree(local)


@pytest.mark.parametrize(("src", "needle"), [
    ("ftp://host/model", "not supported"),
    ("models/relative", "not supported"),
    ("s3://models/../good/model", "'..'"),
    (f"s3://{ACCESS}:{SECRET}@models/good/model", "credentials in its user info"),
    (f"https://user:{SECRET}@example.com/model.onnx", "credentials in its user info"),
])
def test_bad_uris_are_configuration_errors(world: World, dest: Path, capsys: pytest.CaptureFixture[str],
                                           src: str, needle: str) -> None:
    code, out, _ = run_fetch(world, src, dest, sha=world.models["good"][0], capsys=capsys)
    assert code == 2 and needle in out["error"], out
    assert list(dest.iterdir()) == []


def test_missing_objects_are_named_without_credentials(
        world: World, dest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sha, uri, _ = world.models["good"]
    assert uri.startswith("s3://models/")
    c = client(os.environ["AWS_ENDPOINT_URL"])
    c.create_bucket(Bucket="mirror")  # recorded nowhere: admission refuses before any download
    code, out, _ = run_fetch(world, "s3://mirror/good/model", dest, sha=sha, capsys=capsys)
    assert code == 1
    # the bundle is missing at the recorded place (deleted): a download failure, exit 1
    sha2, uri2 = sha, uri
    c.copy_object(Bucket="models", Key="good/model.sig.bak", CopySource={"Bucket": "models", "Key": "good/model.sig"})
    c.delete_object(Bucket="models", Key="good/model.sig")
    try:
        code, out, _ = run_fetch(world, uri2, dest, sha=sha2, capsys=capsys)
        assert code == 1 and "cannot read the signature bundle" in out["error"] and "not found" in out["error"]
    finally:
        c.copy_object(Bucket="models", Key="good/model.sig",
                      CopySource={"Bucket": "models", "Key": "good/model.sig.bak"})
        c.delete_object(Bucket="models", Key="good/model.sig.bak")
    assert list(dest.iterdir()) == []


def test_cli_subprocess_exit_codes_and_no_secret_in_output(world: World, tmp_path: Path) -> None:
    """The real command line, as a container runs it: argv carries no credential, the
    environment does, and nothing printed contains it."""
    sha, uri, _ = world.models["overwritten"]
    dest = tmp_path / "models"
    dest.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLSEAL_MODEL_SHA256": sha, "MLSEAL_POLICY": str(world.policy)}
    p = subprocess.run([sys.executable, "-m", "mlseal.cli", "-vv", "fetch", uri, str(dest)], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 1, p.stderr
    assert "content differs" in p.stderr
    assert SECRET not in p.stdout + p.stderr and ACCESS not in p.stdout + p.stderr
    assert list(dest.iterdir()) == []


# --- --record: what was served where, by the loader's own identity -------------------------

def test_record_appends_a_serve_record_signed_by_the_loader(world: World, dest: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from mlseal.ledger.trusted import TrustedReader
    from mlseal.signing.trust import load_trust

    sha, uri, _ = world.models["good"]
    monkeypatch.setenv("MLSEAL_SIGNING_KEY", str(world.dir / "keys" / "serve.pem"))
    monkeypatch.setenv("POD_NAMESPACE", "prod")
    monkeypatch.setenv("POD_NAME", "churn-predictor-7d9f-abcde")
    monkeypatch.setenv("MLSEAL_WORKLOAD", "churn")
    code, out, err = run_fetch(world, uri, dest, "--record", sha=sha, capsys=capsys)
    assert code == 0, err
    trust = load_trust(world.dir / "trust.yaml")
    with open_ledger(world.ledger, create=False) as led:
        rec = TrustedReader(led, trust).record(out["record_seq"])
    assert rec.stage == "serve" and rec.signer.name == "serve"
    assert rec.inputs[0].sha256 == sha and rec.inputs[0].producer_seq == out["producer_seq"]
    assert rec.params["served"] == {"namespace": "prod", "pod": "churn-predictor-7d9f-abcde", "workload": "churn"}


def test_record_with_a_key_not_granted_serve_is_refused_before_download(
        world: World, dest: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sha, uri, _ = world.models["good"]
    monkeypatch.setenv("POD_NAMESPACE", "prod")
    monkeypatch.setenv("POD_NAME", "p")
    monkeypatch.setenv("MLSEAL_SIGNING_KEY", str(world.dir / "keys" / "train.pem"))
    code, out, _ = run_fetch(world, uri, dest, "--record", sha=sha, capsys=capsys)
    assert code == 2 and "may sign ['train'] records, not 'serve'" in out["error"]
    monkeypatch.setenv("MLSEAL_SIGNING_KEY", str(world.dir / "keys" / "rogue.pem"))
    code, out, _ = run_fetch(world, uri, dest, "--record", sha=sha, capsys=capsys)
    assert code == 2 and "not in the trust file" in out["error"]
    assert list(dest.iterdir()) == []


def test_record_needs_the_downward_api_placement(world: World, dest: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSEAL_SIGNING_KEY", str(world.dir / "keys" / "serve.pem"))
    sha, uri, _ = world.models["good"]
    code, out, _ = run_fetch(world, uri, dest, "--record", sha=sha, capsys=capsys)
    assert code == 2 and "POD_NAMESPACE" in out["error"]


# --- large files: ranged reads, the next range in flight ------------------------------------

@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the 300 KB weights of the test models "large" (ranged reads of 64 KiB, an
    unaligned tail), so the ranged path runs on real S3 and local storage."""
    from mlseal.fetch import storage

    monkeypatch.setattr(storage, "RANGE", 64 * 1024)
    monkeypatch.setattr(storage, "SMALL", 100 * 1024)
    monkeypatch.setattr(storage, "BATCH_FILES", 1)


@pytest.mark.parametrize("model", ["good", "local", "mapped"])
def test_large_files_are_read_in_ranges_and_verified(world: World, dest: Path, small_ranges: None,
                                                     capsys: pytest.CaptureFixture[str], model: str) -> None:
    sha, uri, local = world.models[model]
    src = "s3://served/mapped/model" if model == "mapped" else uri
    code, _, err = run_fetch(world, src, dest, sha=sha, capsys=capsys)
    assert code == 0, err
    assert tree(dest) == tree(local)


def test_overwritten_large_file_is_refused_through_ranges(world: World, dest: Path, small_ranges: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    sha, uri, _ = world.models["overwritten"]
    code, out, _ = run_fetch(world, uri, dest, sha=sha, capsys=capsys)
    assert code == 1 and "1/model.onnx: content differs" in out["error"]
    assert list(dest.iterdir()) == []


def test_a_file_that_shrinks_during_the_download_is_refused(world: World, dest: Path, small_ranges: None,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The object is replaced by a shorter one between the listing and the reads."""
    from mlseal.fetch import storage

    sha, uri, _ = world.models["good"]
    real = storage.list_files

    def listing_then_swap(src: storage.Source) -> tuple[bool, list[storage.RemoteFile]]:
        out = real(src)
        c = client(os.environ["AWS_ENDPOINT_URL"])
        c.copy_object(Bucket="models", Key="good/model/1/model.onnx.bak",
                      CopySource={"Bucket": "models", "Key": "good/model/1/model.onnx"})
        c.put_object(Bucket="models", Key="good/model/1/model.onnx", Body=b"short")
        return out

    monkeypatch.setattr(storage, "list_files", listing_then_swap)
    monkeypatch.setattr("mlseal.fetch.loader.list_files", listing_then_swap)
    c = client(os.environ["AWS_ENDPOINT_URL"])
    try:
        code, out, _ = run_fetch(world, uri, dest, sha=sha, capsys=capsys)
    finally:
        c.copy_object(Bucket="models", Key="good/model/1/model.onnx",
                      CopySource={"Bucket": "models", "Key": "good/model/1/model.onnx.bak"})
        c.delete_object(Bucket="models", Key="good/model/1/model.onnx.bak")
    assert code == 1 and "changed while it was downloaded" in out["error"], out
    assert list(dest.iterdir()) == []


# --- names from the storage become paths before the signature is checked -------------------

class _ListingFS:
    """A filesystem whose listing holds the names an attacker-controlled store could."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def find(self, path: str, detail: bool = False, withdirs: bool = False) -> dict[str, dict[str, Any]]:
        return {f"{path}/{n}": {"type": "file", "size": 1} for n in self.names}

    def info(self, path: str) -> dict[str, Any]:
        return {"type": "directory"}


@pytest.mark.parametrize("name", ["../../escape", "a/../../b", "a//b", "./a", "a/./b"])
def test_a_listed_name_that_would_escape_the_staging_directory_is_refused(name: str) -> None:
    from mlseal.errors import VerificationError
    from mlseal.fetch import storage

    src = storage.Source("s3://b/m", "s3", _ListingFS(["ok.bin", name]), "b/m", "s3://b/m")
    with pytest.raises(VerificationError, match="not a plain relative path"):
        storage.list_files(src)


def test_an_escaping_object_key_on_s3_is_refused_and_nothing_is_written_outside(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sha, uri, _ = world.models["good"]
    c = client(os.environ["AWS_ENDPOINT_URL"])
    c.put_object(Bucket="models", Key="good/model/a//escape.bin", Body=b"x")
    dest = tmp_path / "mnt" / "models"
    dest.mkdir(parents=True)
    try:
        code, out, _ = run_fetch(world, uri, dest, sha=sha, capsys=capsys)
    finally:
        c.delete_object(Bucket="models", Key="good/model/a//escape.bin")
    assert code == 1 and "not a plain relative path" in out["error"], out
    assert list(dest.iterdir()) == [] and sorted(p.name for p in tmp_path.rglob("*")) == ["mnt", "models"]


def test_gs_and_s3_uris_open_their_fsspec_filesystems(monkeypatch: pytest.MonkeyPatch) -> None:
    """gs:// goes to gcsfs and s3:// to s3fs (KServe's S3_ENDPOINT honoured), no network."""
    from mlseal.fetch import storage

    seen: list[tuple[str, dict[str, Any]]] = []

    def filesystem(proto: str, **kw: Any) -> object:
        seen.append((proto, kw))
        return object()

    monkeypatch.setattr(storage, "_filesystem", filesystem)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("S3_ENDPOINT", "minio.kubeflow:9000")
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    g = storage.parse_source("gs://bucket/models/m")
    s = storage.parse_source("s3://bucket/models/m/")
    p = storage.parse_source("pvc://models-claim/team/m")
    assert (g.path, s.path, p.path) == ("bucket/models/m", "bucket/models/m", "/mnt/pvc/team/m")
    assert [proto for proto, _ in seen] == ["gcs", "s3", "file"]
    assert seen[1][1]["client_kwargs"]["endpoint_url"] == "http://minio.kubeflow:9000"


def test_help_names_the_contract() -> None:
    from mlseal.cli import build_parser

    args = build_parser().parse_args(["fetch", "s3://m/x", "/mnt/models", "--sha256", "ab" * 32, "--policy", "p",
                                      "--record", "--json"])
    assert (args.src, args.dest, args.sha256, args.policy, args.record, args.json) == (
        "s3://m/x", "/mnt/models", "ab" * 32, "p", True, True)


@pytest.mark.parametrize("model", ["good", "local", "renamed"])
def test_small_files_in_several_batches(world: World, dest: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    """One file per batch: each batch hashed while the next one downloads."""
    from mlseal.fetch import storage

    monkeypatch.setattr(storage, "BATCH_FILES", 1)
    sha, uri, local = world.models[model]
    code, out, err = run_fetch(world, uri, dest, sha=sha, capsys=capsys)
    if model == "renamed":
        assert code == 1 and "config2.pbtxt" in out["error"]
        assert list(dest.iterdir()) == []
    else:
        assert code == 0, err
        assert tree(dest) == tree(local)


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_symbolic_links_in_a_local_model_are_refused(world: World, dest: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """A claim's model directory holding a link (to a key file, another directory) is not a model."""
    sha, _, local = world.models["pvc"]
    root = tmp_path / "pvc"
    shutil.copytree(local.parent.parent, root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----")
    (root / "team" / "model" / "link").symlink_to(outside / "secret.pem" if kind == "file" else outside)
    os.environ["MLSEAL_PVC_ROOT"] = str(root)
    try:
        code, out, _ = run_fetch(world, world.models["pvc"][1], dest, sha=sha, capsys=capsys)
    finally:
        del os.environ["MLSEAL_PVC_ROOT"]
    assert code == 1 and "symbolic link" in out["error"], out
    assert list(dest.iterdir()) == []


def test_a_listing_that_is_not_the_signed_model_stops_the_download(world: World, dest: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Files added beside the signed ones (say 100 GB of them) are not downloaded to the end:
    once the bundle is verified, the listing is compared and the download is stopped."""
    from mlseal.fetch import loader
    from mlseal.fetch.storage import DownloadError

    started = threading.Event()
    real_provenance = loader._provenance

    def slow_download(src: Any, files: Any, target: Any, cancel: threading.Event | None = None) -> Any:
        started.set()
        assert cancel is not None
        cancel.wait(30)
        raise DownloadError("the download ran to its end")

    def provenance_after_listing(*args: Any, **kw: Any) -> Any:
        started.wait(30)
        return real_provenance(*args, **kw)

    monkeypatch.setattr(loader, "download", slow_download)
    monkeypatch.setattr(loader, "_provenance", provenance_after_listing)
    sha, uri, _ = world.models["renamed"]
    code, out, _ = run_fetch(world, uri, dest, sha=sha, capsys=capsys)
    assert code == 1 and "config2.pbtxt" in out["error"], out  # not "ran to its end"
    assert list(dest.iterdir()) == []
