"""Pytest fixtures for the pipeline area (loaded by conftest.py).

- `sealed_env`: a fresh SQLite ledger, dev secret store, signing key and trust root, and
  a `Sealing` over them (stages run in-process, no KFP).
- `demo_run`: one `mlseal demo` run (KFP local runner) shared by the demo tests.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import pytest

if TYPE_CHECKING:  # for annotations; the fixtures import mlseal where they run
    from mlseal.demo import DemoResult
    from mlseal.ledger import Ledger
    from mlseal.secrets._dev import DevSecretSource
    from mlseal.signing.keys import LocalKeySigner
    from mlseal.signing.trust import TrustRoot
    from mlseal.stage import Sealing

#: the `demo_run` fixture: the demo's result and the progress lines it printed
DemoRun: TypeAlias = "tuple[DemoResult, list[str]]"


@dataclass
class SealedEnv:
    root: Path
    ledger: Ledger
    signer: LocalKeySigner
    trust: TrustRoot
    secrets: DevSecretSource
    sealing: Sealing
    trust_file: Path

    @property
    def ledger_url(self) -> str:
        return "sqlite:///" + str(self.root / "ledger.db")


@pytest.fixture
def sealed_env(tmp_path: Path) -> Iterator[SealedEnv]:
    import yaml

    from mlseal.ledger import open_ledger
    from mlseal.secrets import open_secret_source
    from mlseal.secrets._dev import DevSecretSource
    from mlseal.signing.keys import public_pem
    from mlseal.signing.trust import load_trust
    from mlseal.stage import Sealing

    src = open_secret_source(tmp_path / "secrets", env={})
    assert isinstance(src, DevSecretSource)  # no VAULT_ADDR in env: the dev store
    signer = src.transit_signer("mlseal-signing")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "pipeline.pub.pem").write_bytes(public_pem(signer.public_key()))
    trust_file = tmp_path / "trust.yaml"
    trust_file.write_text(yaml.safe_dump({"signers": [{"name": "pipeline", "public_key": "keys/pipeline.pub.pem"}]}))
    trust = load_trust(trust_file)
    led = open_ledger("sqlite:///" + str(tmp_path / "ledger.db"))
    sealing = Sealing(ledger=led, signer=signer, trust=trust, secrets=src, image="example.org/img@sha256:" + "ab" * 32)
    try:
        yield SealedEnv(tmp_path, led, signer, trust, src, sealing, trust_file)
    finally:
        led.close()


def secret_values(secrets_dir: Path) -> list[bytes]:
    """Every secret value in a dev store, in the forms it could leak as (raw, base64, hex)."""
    values: list[bytes] = []
    for f in secrets_dir.rglob("*"):
        if not f.is_file():
            continue
        raw = f.read_bytes()
        if b"PRIVATE KEY" in raw:
            body = b"".join(line for line in raw.splitlines() if not line.startswith(b"-----"))
            values += [body[:64], body[-64:]]
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            values.append(raw)  # a raw key file
            values.append(base64.b64encode(raw))
            values.append(raw.hex().encode())
            continue
        for version in (doc.get("versions") or {}).values():
            for v in (version.get("data") or {}).values():
                values.append(str(v).encode())
                try:
                    decoded = base64.b64decode(v, validate=True)
                except ValueError:
                    continue
                values += [decoded, decoded.hex().encode()]
    return [v for v in values if len(v) >= 8]


def ledger_plaintext(led: Ledger) -> bytes:
    """Every entry as stored and its record decoded (entries hold the record base64-encoded)."""
    from mlseal.ledger.entry import record_of

    return b"".join(e + b"\n" + record_of(e).canonical() + b"\n" for _, e in led.entries())


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One demo run (about 20 s): the pipeline through KFP's local runner, verified and reported."""
    from mlseal.demo import run_demo

    workdir = tmp_path_factory.mktemp("demo") / "wd"
    lines: list[str] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    result = run_demo(workdir, progress=lines.append, env=env)
    return result, lines
