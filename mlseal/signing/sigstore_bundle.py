"""Sigstore bundle (v0.3) JSON: parse at the boundary, write in `model-signing`'s layout.

An OMS bundle signed with a key carries the DSSE envelope and a hint naming the key
(hex sha256 of its PEM SubjectPublicKeyInfo, as `model-signing` computes it); a keyless
bundle carries a Fulcio certificate and a Rekor entry instead. Parsing checks the shape
only; who signed is decided by a policy (`mlseal.signing.policy`).

    >>> b = parse_bundle(b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",'
    ...   b' "verificationMaterial": {"publicKey": {"hint": "00"}, "tlogEntries": []},'
    ...   b' "dsseEnvelope": {"payload": "e30=", "payloadType": "t", "signatures": [{"sig": "AA==", "keyid": ""}]}}')
    >>> b.key_hint, b.envelope.payload
    ('00', b'{}')
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from mlseal.errors import VerificationError
from mlseal.signing import dsse

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "MessageSignature",
    "SigstoreBundle",
    "key_bundle_bytes",
    "key_hint",
    "parse_bundle",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
#: media types sigstore-python reads (v0.1-v0.3, both spellings)
_SIGSTORE_MEDIA_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    }
)


@dataclass(frozen=True)
class MessageSignature:
    """A plain (non-DSSE) Sigstore signature over an artifact digest."""

    sha256: str
    signature: bytes


@dataclass(frozen=True)
class SigstoreBundle:
    raw: bytes
    media_type: str
    envelope: dsse.Envelope | None
    message_signature: MessageSignature | None
    key_hint: str | None
    has_certificate: bool
    tlog_entries: int

    @property
    def is_keyless(self) -> bool:
        return self.has_certificate


def key_hint(public_key_pem: bytes) -> str:
    """The bundle's publicKey hint, as `model-signing` writes and checks it."""
    return hashlib.sha256(public_key_pem).hexdigest()


def parse_bundle(data: bytes, *, source: str = "bundle") -> SigstoreBundle:
    """Parse bundle JSON once; every defect is a VerificationError naming what was found."""
    if not data.strip():
        raise VerificationError(f"{source} is empty")
    try:
        obj = json.loads(data)
    except UnicodeDecodeError:
        raise VerificationError(f"{source} is not UTF-8 JSON") from None
    except ValueError as exc:
        raise VerificationError(f"{source} is not valid JSON (truncated or corrupt? {exc})") from None
    if not isinstance(obj, dict):
        raise VerificationError(f"{source} is not a JSON object")
    media_type = obj.get("mediaType")
    if media_type not in _SIGSTORE_MEDIA_TYPES:
        raise VerificationError(f"{source} has media type {media_type!r:.80}, expected {BUNDLE_MEDIA_TYPE!r}")
    vm = obj.get("verificationMaterial")
    if not isinstance(vm, dict):
        raise VerificationError(f"{source} has no verificationMaterial")
    hint = None
    pk = vm.get("publicKey")
    if isinstance(pk, dict) and isinstance(pk.get("hint"), str):
        hint = pk["hint"]
    has_cert = any(k in vm for k in ("certificate", "x509CertificateChain"))
    if pk is None and not has_cert:
        raise VerificationError(f"{source} names neither a public key nor a certificate")
    tlog = vm.get("tlogEntries") or []
    if not isinstance(tlog, list):
        raise VerificationError(f"{source}: tlogEntries is not a list")

    envelope = None
    message = None
    if "dsseEnvelope" in obj:
        envelope = dsse.envelope_from_obj(obj["dsseEnvelope"])
    elif isinstance(obj.get("messageSignature"), dict):
        message = _message_signature(obj["messageSignature"], source)
    else:
        raise VerificationError(f"{source} has neither a dsseEnvelope nor a messageSignature")
    return SigstoreBundle(data, media_type, envelope, message, hint, has_cert, len(tlog))


def _message_signature(ms: dict[str, Any], source: str) -> MessageSignature:
    md = ms.get("messageDigest")
    if not isinstance(md, dict) or md.get("algorithm") != "SHA2_256":
        raise VerificationError(f"{source}: messageSignature needs a SHA2_256 messageDigest")
    try:
        digest = base64.b64decode(md.get("digest", ""), validate=True)
        sig = base64.b64decode(ms.get("signature", ""), validate=True)
    except (ValueError, TypeError):
        raise VerificationError(f"{source}: messageSignature is not valid base64") from None
    if len(digest) != 32:
        raise VerificationError(f"{source}: messageDigest has {len(digest)} bytes, expected 32")
    if not sig:
        raise VerificationError(f"{source}: messageSignature has no signature")
    return MessageSignature(digest.hex(), sig)


def key_bundle_bytes(envelope: dsse.Envelope, public_key_pem: bytes) -> bytes:
    """A key-signed OMS bundle, laid out exactly as `model-signing` 1.1.1 writes one."""
    obj = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(public_key_pem)}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(envelope.payload).decode(),
            "payloadType": envelope.payload_type,
            "signatures": [{"sig": base64.b64encode(s.sig).decode(), "keyid": s.keyid} for s in envelope.signatures],
        },
    }
    return json.dumps(obj, separators=(",", ":")).encode()
