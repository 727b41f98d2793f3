"""Composable bundle policies: AnyOf/AllOf, empty refused, the Unsafe bypass warns."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.signing import dsse, oms
from mlseal.signing.artifact import read_bundle, sign_path, verify_path
from mlseal.signing.authenticated import Authenticated, BundlePolicy, SignedBy
from mlseal.signing.digest import manifest_of
from mlseal.signing.keys import LocalKeySigner, public_pem
from mlseal.signing.policy import AllOf, AnyOf, KeyPolicy, UnsafeNoSignatureCheck, policy_from_trust
from mlseal.signing.sigstore_bundle import BUNDLE_MEDIA_TYPE, SigstoreBundle, key_bundle_bytes, key_hint
from mlseal.signing.trust import TrustRoot
from tests.test_bundle_parsing import message_bundle


def test_empty_compositions_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="empty policy is refused"):
        AnyOf([])
    with pytest.raises(ConfigurationError, match="empty policy is refused"):
        AllOf([])
    with pytest.raises(ConfigurationError, match="empty policy is refused"):
        policy_from_trust(TrustRoot())


def test_any_of_names_every_reason(model_dir: Path) -> None:
    signer, a, b = LocalKeySigner.generate(), LocalKeySigner.generate(), LocalKeySigner.generate()
    sig = sign_path(model_dir, signer)
    p = AnyOf([KeyPolicy(a.verifier(name="alice")), KeyPolicy(b.verifier(name="bob"))])
    with pytest.raises(VerificationError, match=r"no trusted signer accepts the bundle: .*alice.*bob"):
        verify_path(model_dir, sig, p)
    ok = AnyOf([KeyPolicy(a.verifier(name="alice")), KeyPolicy(signer.verifier(name="ci"))])
    assert verify_path(model_dir, sig, ok).signer_name == "ci"


def test_all_of_needs_every_child(model_dir: Path) -> None:
    signer, other = LocalKeySigner.generate(), LocalKeySigner.generate()
    sig = sign_path(model_dir, signer)
    assert verify_path(model_dir, sig, AllOf([KeyPolicy(signer.verifier(name="ci"))])).signer_name == "ci"
    with pytest.raises(VerificationError, match="other"):
        verify_path(model_dir, sig, AllOf([KeyPolicy(signer.verifier()), KeyPolicy(other.verifier(name="other"))]))


def test_unsafe_bypass_warns_and_still_checks_integrity(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    sig = sign_path(model_dir, LocalKeySigner.generate())
    with caplog.at_level(logging.WARNING):
        v = verify_path(model_dir, sig, UnsafeNoSignatureCheck("test"))
    assert v.signer_name == "UNVERIFIED"
    assert "UNSAFE" in caplog.text
    (model_dir / "a.txt").write_text("x")
    with pytest.raises(VerificationError, match=r"a\.txt"):
        verify_path(model_dir, sig, UnsafeNoSignatureCheck("test"))


def test_custom_policy_is_a_protocol(model_dir: Path) -> None:
    signer = LocalKeySigner.generate()
    sig = sign_path(model_dir, signer)

    class OnlyOnWeekdays:
        def verify(self, bundle: SigstoreBundle) -> Authenticated:
            raise VerificationError("closed today")

    assert isinstance(OnlyOnWeekdays(), BundlePolicy)
    with pytest.raises(VerificationError, match="closed today"):
        verify_path(model_dir, sig, AllOf([KeyPolicy(signer.verifier()), OnlyOnWeekdays()]))
    assert read_bundle(sig).key_hint


def test_empty_composition_messages_name_the_composition() -> None:
    with pytest.raises(ConfigurationError, match=r"^AnyOf needs at least one policy: an empty policy is refused$"):
        AnyOf([])
    with pytest.raises(ConfigurationError, match=r"^AllOf needs at least one policy: an empty policy is refused$"):
        AllOf([])


def test_any_of_with_one_child_gives_that_childs_reason(model_dir: Path) -> None:
    sig = sign_path(model_dir, LocalKeySigner.generate())
    alice = LocalKeySigner.generate()
    with pytest.raises(VerificationError) as err:
        verify_path(model_dir, sig, AnyOf([KeyPolicy(alice.verifier(name="alice"))]))
    assert str(err.value).startswith("bundle says it was signed by key ")
    assert str(err.value).endswith(f", not by key alice ({key_hint(public_pem(alice.public_key()))[:16]}…)")


def test_any_of_joins_every_reason(model_dir: Path) -> None:
    sig = sign_path(model_dir, LocalKeySigner.generate())
    p = AnyOf([KeyPolicy(LocalKeySigner.generate().verifier(name=n)) for n in ("alice", "bob")])
    with pytest.raises(VerificationError) as err:
        verify_path(model_dir, sig, p)
    head, reasons = str(err.value).split(": ", 1)
    assert head == "no trusted signer accepts the bundle"
    parts = reasons.split("; ")
    assert all(r.startswith("bundle says it was signed by key ") for r in parts)
    assert [r.split(", not by key ")[1].split(" ")[0] for r in parts] == ["alice", "bob"]


def test_unnamed_key_is_named_by_its_key_id(model_dir: Path) -> None:
    signer, other = LocalKeySigner.generate(), LocalKeySigner.generate()
    sig = sign_path(model_dir, signer)
    with pytest.raises(VerificationError) as err:
        verify_path(model_dir, sig, KeyPolicy(other.verifier()))
    hint, expected = key_hint(public_pem(signer.public_key())), key_hint(public_pem(other.public_key()))
    assert str(err.value) == (
        f"bundle says it was signed by key {hint[:16]}…, not by key {other.key_id[:16]} ({expected[:16]}…)"
    )


def _co_signed(model: Path, *signers: LocalKeySigner) -> Path:
    """A bundle over the model's statement with one signature per signer and no key hint."""
    payload = oms.statement_bytes(manifest_of(model))
    pae = dsse.pae(oms.IN_TOTO_PAYLOAD_TYPE, payload)
    env = dsse.Envelope(oms.IN_TOTO_PAYLOAD_TYPE, payload, tuple(dsse.Signature("", s.sign(pae)) for s in signers))
    obj = json.loads(key_bundle_bytes(env, public_pem(signers[0].public_key())))
    del obj["verificationMaterial"]["publicKey"]["hint"]
    sig = model.with_name("co-signed.sig")
    sig.write_text(json.dumps(obj))
    return sig


def test_key_policy_finds_its_signature_among_several(model_dir: Path) -> None:
    a, b = LocalKeySigner.generate(), LocalKeySigner.generate()
    sig = _co_signed(model_dir, a, b)
    assert verify_path(model_dir, sig, KeyPolicy(b.verifier(name="b"))).signer_name == "b"
    refused = r"^bundle signature does not verify with key c \(tampered, or another key\)$"
    with pytest.raises(VerificationError, match=refused):
        verify_path(model_dir, sig, KeyPolicy(LocalKeySigner.generate().verifier(name="c")))


def test_all_of_two_keys_over_a_co_signed_bundle(model_dir: Path) -> None:
    a, b = LocalKeySigner.generate(), LocalKeySigner.generate()
    sig = _co_signed(model_dir, a, b)
    v = verify_path(model_dir, sig, AllOf([KeyPolicy(a.verifier(name="a")), KeyPolicy(b.verifier(name="b"))]))
    assert v.signer_name == "a"


def test_all_of_refuses_children_that_authenticate_different_payloads(model_dir: Path) -> None:
    """A child policy that returns some other payload (a buggy or hostile plug-in) is caught."""
    signer = LocalKeySigner.generate()
    sig = sign_path(model_dir, signer)
    key = KeyPolicy(signer.verifier())

    class Other:
        def verify(self, bundle: SigstoreBundle) -> Authenticated:
            return Authenticated(oms.IN_TOTO_PAYLOAD_TYPE, b"{}", SignedBy(name="other"))

    other: BundlePolicy = Other()
    for children in ([key, other], [key, other, key], [other, key]):
        with pytest.raises(VerificationError, match=r"^policies authenticated different payloads$"):
            verify_path(model_dir, sig, AllOf(children))


def test_unsafe_bypass_refuses_a_bundle_with_nothing_signed() -> None:
    empty = SigstoreBundle(b"{}", BUNDLE_MEDIA_TYPE, None, None, None, False, 0)
    with pytest.raises(VerificationError, match=r"^bundle has nothing signed$"):
        UnsafeNoSignatureCheck().verify(empty)


def test_all_of_refuses_children_that_authenticate_different_file_digests(tmp_path: Path) -> None:
    """For a plain message signature what is signed is the file's sha256: children must agree on it."""
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    sig = tmp_path / "w.bin.sigstore"
    sig.write_text(json.dumps(message_bundle(hashlib.sha256(b"weights").digest())))

    class Other:
        def verify(self, bundle: SigstoreBundle) -> Authenticated:
            return Authenticated("", b"", SignedBy(name="other"), message_sha256=hashlib.sha256(b"evil").hexdigest())

    unsafe = UnsafeNoSignatureCheck()
    assert verify_path(f, sig, AllOf([unsafe, unsafe])).signer_name == "UNVERIFIED"
    other: BundlePolicy = Other()
    with pytest.raises(VerificationError, match=r"^policies authenticated different payloads$"):
        verify_path(f, sig, AllOf([unsafe, other]))
