"""`mlseal record`: the CLI face of the sealed-stage runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlseal.cli import main
from mlseal.ledger import open_ledger
from mlseal.ledger.entry import parse_entry
from mlseal.signing.keys import LocalKeySigner, PublicKeyVerifier
from mlseal.signing.trust import TrustRoot


@pytest.fixture
def key(tmp_path: Path) -> Path:
    signer = LocalKeySigner.generate()
    signer.save(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    return tmp_path / "k.pem"


LAST_ERR: list[str] = []


def _record(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any] | None]:
    code = main(["record", "--json", *argv])
    captured = capsys.readouterr()
    LAST_ERR[:] = [captured.err]
    return code, (json.loads(captured.out) if captured.out.strip() else None)


def test_record_chain_and_fail_closed(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSEAL_TRUST", raising=False)
    url = "sqlite:///" + str(tmp_path / "ledger.db")
    raw = tmp_path / "raw.txt"
    raw.write_text("b\na\nb\n")
    code, first = _record(capsys, "--stage", "ingest", "--output", f"raw={raw}", "--param", "source=shell",
                          "--ledger", url, "--key", str(key))
    assert code == 0 and first is not None and first["seq"] == 0
    assert Path(first["outputs"][0]["bundle"]) == tmp_path / "raw.txt.sig"

    clean = tmp_path / "clean.txt"
    clean.write_text("a\nb\n")  # what a shell step (sort -u) wrote
    code, second = _record(capsys, "--stage", "process", "--name", "dedupe", "--input", f"raw={raw}",
                           "--output", f"clean={clean}", "--param", "n=2", "--metric", "rows=2",
                           "--ledger", url, "--key", str(key))
    assert code == 0 and second is not None
    assert second["inputs"] == [{"name": "raw", "sha256": first["outputs"][0]["sha256"], "producer_seq": 0}]
    trust = TrustRoot.of(PublicKeyVerifier.from_file(tmp_path / "k.pub.pem", name="pipeline"))
    with open_ledger(url) as led:
        rec = parse_entry(led.entry(1), trust)
    assert rec.component.name == "dedupe" and rec.params == {"n": 2} and rec.metrics == {"rows": 2.0}

    # an input never recorded as an output: exit 1 and the ledger is unchanged
    stray = tmp_path / "stray.txt"
    stray.write_text("not recorded\n")
    out = tmp_path / "out.txt"
    out.write_text("x\n")
    code, _ = _record(capsys, "--stage", "process", "--input", f"in={stray}", "--output", f"out={out}",
                      "--ledger", url, "--key", str(key))
    assert code == 1
    assert "never recorded as an output" in LAST_ERR[0]
    with open_ledger(url) as led:
        assert led.size() == 2
    assert out.exists() and not (tmp_path / "out.txt.sig").exists()  # the user's file is left alone

    # recorded, but by a key the trust file does not name
    other = LocalKeySigner.generate()
    other.save(tmp_path / "o.pem", tmp_path / "o.pub.pem")
    code, _ = _record(capsys, "--stage", "process", "--input", f"raw={raw}", "--ledger", url,
                      "--key", str(tmp_path / "o.pem"))
    assert code == 1


def test_record_usage_errors(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "sqlite:///" + str(tmp_path / "ledger.db")
    with pytest.raises(SystemExit) as exc:
        main(["record", "--stage", "ingest", "--output", "no-equals-sign"])
    assert exc.value.code == 2
    assert main(["record", "--stage", "ingest", "--output", f"x={tmp_path / 'missing'}", "--ledger", url,
                 "--key", str(key)]) == 2
    assert main(["record", "--stage", "ingest", "--metric", "acc=high", "--ledger", url, "--key", str(key)]) == 2
    # not a verification failure (exit 1): the command line is wrong
    capsys.readouterr()
    for bad in (["--stage", ""], ["--stage", "Ingest!"], ["--stage", "ingest", "--metric", "acc=NaN"],
                ["--stage", "ingest", "--metric", "acc=Infinity"]):
        assert main(["record", *bad, "--ledger", url, "--key", str(key)]) == 2, bad
    err = capsys.readouterr().err
    assert "record field stage must match" in err and "--metric acc must be a finite number, got 'NaN'" in err
    with open_ledger(url) as led:
        assert led.size() == 0


def test_record_param_that_is_not_json_is_kept_as_a_string(tmp_path: Path, key: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    url = "sqlite:///" + str(tmp_path / "ledger.db")
    out = tmp_path / "out.txt"
    out.write_text("x\n")
    code, _ = _record(capsys, "--stage", "ingest", "--output", f"out={out}", "--param", "threshold=NaN",
                      "--param", "n=3", "--param", "mode=fast", "--ledger", url, "--key", str(key))
    assert code == 0, LAST_ERR[0]
    trust = TrustRoot.of(PublicKeyVerifier.from_file(tmp_path / "k.pub.pem", name="pipeline"))
    with open_ledger(url) as led:
        assert parse_entry(led.entry(0), trust).params == {"threshold": "NaN", "n": 3, "mode": "fast"}


def test_secret_literal_param_is_refused_and_never_recorded(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Params are public (ledger, KFP metadata): a secret-like name needs a Vault reference."""
    monkeypatch.delenv("MLSEAL_TRUST", raising=False)
    url = "sqlite:///" + str(tmp_path / "ledger.db")
    raw = tmp_path / "raw.txt"
    raw.write_text("rows\n")
    code, out = _record(capsys, "--stage", "ingest", "--output", f"raw={raw}",
                        "--param", "db_password=hunter2-literal", "--ledger", url, "--key", str(key))
    assert code == 2 and out is None
    assert "db_password" in LAST_ERR[0] and "hunter2-literal" not in LAST_ERR[0]
    assert not (tmp_path / "raw.txt.sig").exists()
    with open_ledger(url) as led:
        assert led.size() == 0
    # the same parameter as a reference is fine, and only the reference is recorded
    code, out = _record(capsys, "--stage", "ingest", "--output", f"raw={raw}",
                        "--param", "db_password_path=mlseal/db/reader", "--ledger", url, "--key", str(key))
    assert code == 0 and out is not None


def test_record_with_trust_refuses_a_signer_not_trusted_for_its_stage(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlseal record --trust` checks its own signer first: a record the trust file does not
    allow would break `ledger verify` for good, so nothing is appended and no .sig is left."""
    monkeypatch.delenv("MLSEAL_TRUST", raising=False)
    url = "sqlite:///" + str(tmp_path / "ledger.db")
    raw = tmp_path / "raw.txt"
    raw.write_text("a\n")
    (tmp_path / "trust.yaml").write_text("signers: [{name: train, public_key: k.pub.pem, stages: [train]}]\n")
    code, _ = _record(capsys, "--stage", "ingest", "--output", f"raw={raw}", "--ledger", url, "--key", str(key),
                      "--trust", str(tmp_path / "trust.yaml"))
    assert code == 2 and "may sign ['train'] records, not 'ingest'" in LAST_ERR[0]
    other = tmp_path / "other.pem"
    LocalKeySigner.generate().save(other, tmp_path / "other.pub.pem")
    code, _ = _record(capsys, "--stage", "train", "--output", f"raw={raw}", "--ledger", url, "--key", str(other),
                      "--trust", str(tmp_path / "trust.yaml"))
    assert code == 2 and "is not listed in the trust file" in LAST_ERR[0]
    with open_ledger(url) as led:
        assert led.size() == 0
    assert not (tmp_path / "raw.txt.sig").exists() and raw.read_text() == "a\n"
