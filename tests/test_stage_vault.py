"""Sealed stages with Vault: KV secrets and Transit data keys by reference, Transit-signed records."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from mlseal.components import steps as s
from mlseal.ledger import open_ledger
from mlseal.ledger.entry import parse_entry
from mlseal.ml import data
from mlseal.secrets import open_secret_source
from mlseal.signing.artifact import verify_path
from mlseal.signing.keys import PublicKeyVerifier
from mlseal.signing.trust import TrustRoot
from mlseal.stage import Sealing
from tests.fixtures_pipeline import ledger_plaintext
from tests.fixtures_vault import VaultHarness

pytestmark = pytest.mark.vault_real


def test_steps_take_secrets_from_vault_by_reference(vault: VaultHarness, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    hmac_path = vault.path("anonymize/hmac")
    version = vault.put(hmac_path, {"key": base64.b64encode(os.urandom(32)).decode()})
    src = open_secret_source(env=vault.token_env(["mlseal-pipeline"]))
    assert src.kind == "vault"
    signer = src.transit_signer("mlseal-signing")  # the private key stays in Vault
    trust = TrustRoot.of(PublicKeyVerifier(signer.public_key(), name="pipeline"))
    raw = tmp_path / "raw.csv"
    data.write_csv(data.make_demo_dataset(rows=60, seed=3), raw)
    with open_ledger("sqlite:///" + str(tmp_path / "ledger.db")) as led:
        sealing = Sealing(ledger=led, signer=signer, trust=trust, secrets=src)
        s.ingest(sealing, dataset=s.ArtifactOut(tmp_path / "a" / "raw.csv"), source=str(raw))
        s.anonymize(sealing, data=s.ArtifactIn(tmp_path / "a" / "raw.csv"),
                    anonymized=s.ArtifactOut(tmp_path / "a" / "anon.csv"), hmac_key_path=hmac_path)
        enc = s.encrypt(sealing, data=s.ArtifactIn(tmp_path / "a" / "anon.csv"),
                        encrypted=s.ArtifactOut(tmp_path / "a" / "enc.bin"))
        records = [parse_entry(e, trust) for _, e in led.entries()]
        entries = ledger_plaintext(led)
    assert [(x.path, x.version) for x in records[1].secrets] == [(hmac_path, version)]
    (transit,) = records[2].secrets
    assert transit.path == "transit/mlseal-data" and transit.version == 1
    assert enc is not None
    verify_path(enc.outputs["encrypted"].path, enc.outputs["encrypted"].bundle, trust)
    texts = [entries.decode(), caplog.text, (tmp_path / "a" / "anon.csv").read_text()]
    vault.assert_clean(*texts)
