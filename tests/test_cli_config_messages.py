"""The CLI's configuration errors name the option and show a valid example of it (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlseal.cli import main
from mlseal.signing.keys import LocalKeySigner

CASES = [
    (["webhook", "serve", "--policy", "p.yaml", "--tls-cert", "c", "--tls-key", "k", "--port", "0"],
     "--port", "e.g. --port 8443"),
    (["webhook", "serve", "--policy", "p.yaml", "--tls-cert", "c", "--tls-key", "k", "--threads", "0"],
     "--threads", "e.g. --threads 4"),
    (["webhook", "serve", "--policy", "p.yaml", "--tls-cert", "c", "--tls-key", "k", "--reload-interval", "0"],
     "--reload-interval", "e.g. --reload-interval 60"),
    (["verify", "model.bin", "--identity", "me@example.com"], "--issuer",
     "e.g. --issuer https://token.actions.githubusercontent.com"),
    (["ledger", "verify", "--trust", "{trust}", "--from-checkpoint"], "--checkpoint",
     "e.g. --checkpoint checkpoint --from-checkpoint"),
    (["ledger", "checkpoint"], "--vault-transit", "e.g. --vault-transit mlseal-checkpoint"),
    (["export", "mlbom", "ab" * 32], "--trust", "e.g. --trust /etc/mlseal/trust.yaml"),
]


@pytest.mark.parametrize(("argv", "option", "example"), CASES, ids=[f"{c[0][0]}-{c[1]}" for c in CASES])
def test_cli_configuration_errors_name_the_option_and_an_example(
        argv: list[str], option: str, example: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLSEAL_TRUST", raising=False)
    LocalKeySigner.generate().save(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    (tmp_path / "trust.yaml").write_text("signers:\n  - name: p\n    public_key: k.pub.pem\n")
    (tmp_path / "model.bin").write_bytes(b"x")
    argv = [a.replace("{trust}", str(tmp_path / "trust.yaml")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and example in err, err
