"""C2SP signed-note checkpoints: format, key IDs, origin and signature checks."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    ecdsa_key_hash,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot

ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture(scope="module")
def cp_key() -> LocalKeySigner:
    return LocalKeySigner.generate()


@pytest.fixture(scope="module")
def cp_trust(cp_key: LocalKeySigner) -> TrustRoot:
    return TrustRoot(checkpoint_keys={cp_key.key_id: cp_key.verifier("ledger")})


def test_format_follows_c2sp(cp_key: LocalKeySigner) -> None:
    note = sign_checkpoint(Checkpoint("example.org/log", 1042, ROOT), cp_key)
    text = note.decode()
    body, sigs = text.split("\n\n")
    assert body == f"example.org/log\n1042\n{base64.b64encode(ROOT).decode()}"
    line = sigs.rstrip("\n")
    assert line.startswith("\u2014 example.org/log ")
    raw = base64.b64decode(line.split(" ")[2])
    der = cp_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # signed-note type 0x02: key ID = SHA-256(DER SPKI)[:4], then the DER ECDSA signature over the text
    assert raw[:4] == hashlib.sha256(der).digest()[:4] == ecdsa_key_hash(cp_key.public_key())
    cp_key.verifier().verify((body + "\n").encode(), raw[4:])


def test_round_trip_and_extensions(cp_key: LocalKeySigner, cp_trust: TrustRoot) -> None:
    cp = Checkpoint("example.org/log", 7, ROOT, extensions=("Timestamp: 1700000000",))
    got = verify_checkpoint(sign_checkpoint(cp, cp_key), cp_trust, origin="example.org/log")
    assert got == cp


def test_default_origin_and_trust_file_origin(cp_key: LocalKeySigner, cp_trust: TrustRoot) -> None:
    note = sign_checkpoint(Checkpoint("mlseal.local/ledger", 1, ROOT), cp_key)
    assert verify_checkpoint(note, cp_trust).size == 1
    custom = TrustRoot(checkpoint_keys=cp_trust.checkpoint_keys, extra={"checkpoint_origin": "acme/ml"})
    with pytest.raises(CheckpointError, match="expected 'acme/ml'"):
        verify_checkpoint(note, custom)


def test_foreign_origin_is_refused(cp_key: LocalKeySigner, cp_trust: TrustRoot) -> None:
    note = sign_checkpoint(Checkpoint("other.example/log", 5, ROOT), cp_key)
    with pytest.raises(VerificationError, match=r"origin 'other\.example/log', expected 'mlseal\.local/ledger'"):
        verify_checkpoint(note, cp_trust)


def test_bad_signature_is_refused(cp_key: LocalKeySigner, cp_trust: TrustRoot) -> None:
    note = sign_checkpoint(Checkpoint("mlseal.local/ledger", 5, ROOT), cp_key)
    # change the signed text: size 5 -> 6
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(note.replace(b"\n5\n", b"\n6\n", 1), cp_trust)
    # flip a bit inside the signature itself
    body, line = note.split(b"\n\n")
    parts = line.split(b" ")
    sig = bytearray(base64.b64decode(parts[2]))
    sig[-3] ^= 1
    bad = body + b"\n\n" + b" ".join([parts[0], parts[1], base64.b64encode(bytes(sig))]) + b"\n"
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(bad, cp_trust)


def test_untrusted_key_is_refused(cp_trust: TrustRoot) -> None:
    note = sign_checkpoint(Checkpoint("mlseal.local/ledger", 5, ROOT), LocalKeySigner.generate())
    with pytest.raises(CheckpointError, match="not signed by a trusted checkpoint key"):
        verify_checkpoint(note, cp_trust)
    with pytest.raises(ConfigurationError, match="no checkpoint_keys"):
        verify_checkpoint(note, TrustRoot())


def test_extra_signature_from_unknown_key_is_ignored(cp_key: LocalKeySigner, cp_trust: TrustRoot) -> None:
    cp = Checkpoint("mlseal.local/ledger", 5, ROOT)
    note = sign_checkpoint(cp, cp_key)
    witness = sign_checkpoint(cp, LocalKeySigner.generate(), key_name="witness.example")
    cosigned = note + witness.split(b"\n\n")[1]
    assert verify_checkpoint(cosigned, cp_trust) == cp


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"no blank line\n",
        b"origin\n5\n" + base64.b64encode(ROOT) + b"\n\n",  # no signature
        b"origin\nfive\n" + base64.b64encode(ROOT) + b"\n\n\xe2\x80\x94 origin AAAAAAA=\n",
        b"origin\n5\nnot-base64!\n\n\xe2\x80\x94 origin AAAAAAA=\n",
        b"origin\n5\n" + base64.b64encode(b"short") + b"\n\n\xe2\x80\x94 origin AAAAAAA=\n",
        b"origin\n5\n" + base64.b64encode(ROOT) + b"\n\n- origin AAAAAAA=\n",
        b"origin\n5\n" + base64.b64encode(ROOT) + b"\n\n\xe2\x80\x94 origin AAAAAAA=",  # no final newline
        b"\xff\xfe\n",
        b"origin\t\n5\n" + base64.b64encode(ROOT) + b"\n\n\xe2\x80\x94 origin AAAAAAA=\n",
    ],
)
def test_malformed_checkpoints(text: bytes) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(text)


def test_bad_origin_cannot_be_signed(cp_key: LocalKeySigner) -> None:
    with pytest.raises(ConfigurationError):
        sign_checkpoint(Checkpoint("two\nlines", 1, ROOT), cp_key)
    with pytest.raises(ConfigurationError):
        sign_checkpoint(Checkpoint("has space", 1, ROOT), cp_key)
