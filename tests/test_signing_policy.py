"""Composable bundle policies: AnyOf/AllOf, empty refused, the Unsafe bypass warns."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.signing.bundle import read_bundle, sign_path, verify_path
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.policy import AllOf, AnyOf, BundlePolicy, KeyPolicy, UnsafeNoSignatureCheck, policy_from_trust
from mlseal.signing.trust import TrustRoot


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
        def verify(self, bundle):  # type: ignore[no-untyped-def]
            raise VerificationError("closed today")

    assert isinstance(OnlyOnWeekdays(), BundlePolicy)
    with pytest.raises(VerificationError, match="closed today"):
        verify_path(model_dir, sig, AllOf([KeyPolicy(signer.verifier()), OnlyOnWeekdays()]))
    assert read_bundle(sig).key_hint
