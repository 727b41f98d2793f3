"""Malformed Sigstore bundles and DSSE envelopes are refused with an error naming the defect.

Every case is a bundle an attacker (or a broken tool) can hand to `verify_path`: it must
raise `VerificationError` saying what is wrong, never crash with a `TypeError` or an
`AttributeError`, and never be read as something it does not say.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlseal.errors import VerificationError
from mlseal.signing import dsse
from mlseal.signing.artifact import sign_path, verify_path
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.sigstore_bundle import BUNDLE_MEDIA_TYPE, parse_bundle
from tests.fixtures_signing import KeyFiles

Obj = dict[str, Any]
#: 32 bytes in base64 with a "$" inside: a lax decoder would skip it and find 32 bytes
JUNK_DIGEST = base64.b64encode(b"\1" * 32).decode()[:-4] + "$" + base64.b64encode(b"\1" * 32).decode()[-4:]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def message_bundle(digest: bytes, **overrides: Any) -> Obj:
    """A plain Sigstore message-signature bundle (not OMS) over one file's sha256."""
    obj: Obj = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": "00"}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)},
            "signature": _b64(b"sig"),
        },
    }
    obj.update(overrides)
    return obj


def _dumps(obj: Obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture
def key_bundle(model_dir: Path, signing_key: KeyFiles) -> Obj:
    sig = sign_path(model_dir, signing_key.signer)
    obj: Obj = json.loads(sig.read_bytes())
    return obj


# --- the bundle ------------------------------------------------------------------------


def test_default_source_is_named_bundle() -> None:
    with pytest.raises(VerificationError, match=r"^bundle is empty$"):
        parse_bundle(b"  \n")


def test_errors_name_the_bundle_file(signed_model: tuple[Path, Path, KeyFiles]) -> None:
    model, sig, key = signed_model
    sig.write_text("{")
    with pytest.raises(VerificationError, match=rf"^bundle {re.escape(str(sig))} is not valid JSON"):
        verify_path(model, sig, key.signer.verifier())


@pytest.fixture
def signed_model(model_dir: Path, signing_key: KeyFiles) -> tuple[Path, Path, KeyFiles]:
    return model_dir, sign_path(model_dir, signing_key.signer), signing_key


def _edit(key: str, value: Any) -> Callable[[Obj], None]:
    return lambda o: o.__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda o: o.pop("verificationMaterial"), "src has no verificationMaterial"),
        (lambda o: o["verificationMaterial"].pop("publicKey"), "src names neither a public key nor a certificate"),
        (lambda o: o["verificationMaterial"].update(tlogEntries="none"), "src: tlogEntries is not a list"),
        (lambda o: o["verificationMaterial"].update(tlogEntries={"a": 1}), "src: tlogEntries is not a list"),
        (lambda o: o.pop("dsseEnvelope"), "src has neither a dsseEnvelope nor a messageSignature"),
        (_edit("dsseEnvelope", []), "DSSE envelope must be a JSON object"),
        (lambda o: o["dsseEnvelope"].pop("payloadType"), "DSSE envelope has no string payloadType"),
        (lambda o: o["dsseEnvelope"].update(payloadType=7), "DSSE envelope has no string payloadType"),
        (lambda o: o["dsseEnvelope"].update(payload=7), "DSSE payload must be a base64 string, got int"),
        (lambda o: o["dsseEnvelope"].update(payload="%%%"), "DSSE payload is not valid base64"),
        (lambda o: o["dsseEnvelope"].update(signatures=[]), "DSSE envelope has no signatures"),
        (lambda o: o["dsseEnvelope"].update(signatures={"sig": "AA=="}), "DSSE envelope has no signatures"),
        (lambda o: o["dsseEnvelope"].update(signatures=["AA=="]), "DSSE signature 0 is not an object"),
        (lambda o: o["dsseEnvelope"]["signatures"][0].update(keyid=5), "DSSE signature 0 keyid is not a string"),
        (
            lambda o: o["dsseEnvelope"]["signatures"][0].pop("sig"),
            "DSSE signature 0 must be a base64 string, got NoneType",
        ),
        (lambda o: o["dsseEnvelope"]["signatures"][0].update(sig="%%%"), "DSSE signature 0 is not valid base64"),
    ],
    ids=[
        "no-material",
        "no-key",
        "tlog-str",
        "tlog-dict",
        "nothing-signed",
        "envelope-list",
        "no-ptype",
        "int-ptype",
        "int-payload",
        "bad-payload",
        "no-sigs",
        "sigs-dict",
        "sig-str",
        "keyid-int",
        "no-sig",
        "bad-sig",
    ],
)
def test_malformed_key_bundle_is_refused_with_its_defect(
    key_bundle: Obj, edit: Callable[[Obj], None], reason: str
) -> None:
    edit(key_bundle)
    with pytest.raises(VerificationError) as err:
        parse_bundle(_dumps(key_bundle), source="src")
    assert str(err.value) == reason


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda o: o["messageSignature"].pop("messageDigest"), "src: messageSignature needs a SHA2_256 messageDigest"),
        (
            lambda o: o["messageSignature"].update(messageDigest="abc"),
            "src: messageSignature needs a SHA2_256 messageDigest",
        ),
        (
            lambda o: o["messageSignature"]["messageDigest"].update(algorithm="SHA2_512"),
            "src: messageSignature needs a SHA2_256 messageDigest",
        ),
        (lambda o: o["messageSignature"]["messageDigest"].pop("digest"), "src: messageDigest has 0 bytes, expected 32"),
        (
            lambda o: o["messageSignature"]["messageDigest"].update(digest=_b64(b"\1" * 31)),
            "src: messageDigest has 31 bytes, expected 32",
        ),
        # characters outside the base64 alphabet are refused, not skipped
        (
            lambda o: o["messageSignature"]["messageDigest"].update(digest=JUNK_DIGEST),
            "src: messageSignature is not valid base64",
        ),
        (lambda o: o["messageSignature"].update(signature="QUJD$"), "src: messageSignature is not valid base64"),
        (lambda o: o["messageSignature"].update(signature=5), "src: messageSignature is not valid base64"),
        (lambda o: o["messageSignature"].pop("signature"), "src: messageSignature has no signature"),
        (lambda o: o["messageSignature"].update(signature=""), "src: messageSignature has no signature"),
    ],
    ids=[
        "no-digest",
        "digest-str",
        "sha512",
        "empty-digest",
        "short-digest",
        "digest-junk",
        "sig-junk",
        "sig-int",
        "no-sig",
        "empty-sig",
    ],
)
def test_malformed_message_signature_is_refused_with_its_defect(edit: Callable[[Obj], None], reason: str) -> None:
    obj = message_bundle(b"\1" * 32)
    edit(obj)
    with pytest.raises(VerificationError) as err:
        parse_bundle(_dumps(obj), source="src")
    assert str(err.value) == reason


def test_message_signature_bundle_parses() -> None:
    digest = hashlib.sha256(b"x").digest()
    obj = message_bundle(digest)
    obj["verificationMaterial"]["tlogEntries"] = [{}, {}]
    b = parse_bundle(_dumps(obj))
    assert b.envelope is None
    assert b.message_signature is not None and b.message_signature.sha256 == digest.hex()
    assert b.message_signature.signature == b"sig"
    assert (b.media_type, b.key_hint, b.tlog_entries, b.is_keyless) == (BUNDLE_MEDIA_TYPE, "00", 2, False)


def test_key_bundle_fields(key_bundle: Obj, signing_key: KeyFiles) -> None:
    key_bundle["verificationMaterial"].pop("tlogEntries")
    b = parse_bundle(_dumps(key_bundle))
    assert b.tlog_entries == 0 and b.message_signature is None and b.envelope is not None
    assert b.key_hint is not None and len(b.key_hint) == 64
    del key_bundle["verificationMaterial"]["publicKey"]["hint"]
    assert parse_bundle(_dumps(key_bundle)).key_hint is None  # no hint: None, not ""


# --- DSSE ------------------------------------------------------------------------------


def test_dsse_parse_refuses_non_json() -> None:
    with pytest.raises(VerificationError, match=r"^DSSE envelope is not valid JSON$"):
        dsse.parse(b"{not json")
    with pytest.raises(VerificationError, match=r"^DSSE envelope must be a JSON object$"):
        dsse.parse(b"[]")


def test_dsse_keyid_is_kept() -> None:
    a = LocalKeySigner.generate()
    env = dsse.parse(dsse.sign(a, "t", b"body"))
    assert [s.keyid for s in env.signatures] == [a.key_id]


def test_dsse_named_key_among_several_trusted_verifies() -> None:
    a, b = LocalKeySigner.generate(), LocalKeySigner.generate()
    env = dsse.parse(dsse.sign(b, "t", b"body"))
    v = dsse.verify(env, [a.verifier(), b.verifier()], payload_type="t")
    assert (v.payload_type, v.payload, v.key_id) == ("t", b"body", b.key_id)


def test_dsse_unnamed_signature_is_tried_with_every_trusted_key() -> None:
    """An envelope without keyids (as OMS writes them) verifies with whichever trusted key signed it."""
    a, b = LocalKeySigner.generate(), LocalKeySigner.generate()
    env = dsse.Envelope("t", b"body", (dsse.Signature("", b.sign(dsse.pae("t", b"body"))),))
    assert dsse.verify(env, [a.verifier(), b.verifier()]).key_id == b.key_id


def test_dsse_signature_naming_an_untrusted_key_is_refused_even_if_a_trusted_key_signed() -> None:
    """The keyid names the signer: a signature claiming another key is not tried with ours."""
    a = LocalKeySigner.generate()
    env = dsse.Envelope("t", b"body", (dsse.Signature("f" * 64, a.sign(dsse.pae("t", b"body"))),))
    with pytest.raises(VerificationError) as err:
        dsse.verify(env, [a.verifier()])
    assert str(err.value) == "no valid signature from a trusted key: key ffffffffffffffff… is not trusted"


def test_dsse_refusal_lists_every_reason() -> None:
    a, b, c = LocalKeySigner.generate(), LocalKeySigner.generate(), LocalKeySigner.generate()
    pae = dsse.pae("t", b"body")
    env = dsse.Envelope("t", b"body", (dsse.Signature(a.key_id, c.sign(pae)), dsse.Signature("e" * 64, c.sign(pae))))
    with pytest.raises(VerificationError) as err:
        dsse.verify(env, [a.verifier(), b.verifier()])
    msg = str(err.value)
    assert msg.startswith("no valid signature from a trusted key: ")
    first, second = msg.removeprefix("no valid signature from a trusted key: ").split("; ")
    assert first == f"signature does not verify with key {a.key_id[:16]}"  # the verifier's own reason
    assert second == "key eeeeeeeeeeeeeeee… is not trusted"
