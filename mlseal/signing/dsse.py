"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1).

A signature covers PAE(payloadType, payload), never the JSON around it:

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

LEN is the ASCII decimal byte length. Envelopes are serialised as RFC 8785 canonical
JSON so that the same envelope always has the same bytes (the ledger hashes the bytes
it stores and never re-serialises them).

    >>> pae("http://example.com/HelloWorld", b"hello world")
    b'DSSEv1 29 http://example.com/HelloWorld 11 hello world'
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import rfc8785

from mlseal.errors import VerificationError
from mlseal.signing.keys import Signer

__all__ = [
    "Envelope",
    "Signature",
    "Verified",
    "envelope_from_obj",
    "pae",
    "parse",
    "sign",
    "sign_envelope",
    "verify",
]


class _Verifier(Protocol):
    @property
    def key_id(self) -> str: ...

    def verify(self, data: bytes, signature: bytes) -> None: ...


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "payload": base64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()}
                for s in self.signatures
            ],
        }

    def to_bytes(self) -> bytes:
        return rfc8785.dumps(self.to_json_obj())


@dataclass(frozen=True)
class Verified:
    payload_type: str
    payload: bytes
    key_id: str


def sign_envelope(signers: Sequence[Signer], payload_type: str, payload: bytes) -> Envelope:
    message = pae(payload_type, payload)
    sigs = tuple(Signature(keyid=s.key_id, sig=s.sign(message)) for s in signers)
    return Envelope(payload_type, payload, sigs)


def sign(signer: Signer, payload_type: str, payload: bytes) -> bytes:
    """Canonical envelope bytes with one signature."""
    return sign_envelope([signer], payload_type, payload).to_bytes()


_URLSAFE = str.maketrans("-_", "+/")


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"DSSE {what} must be a base64 string, got {type(value).__name__}")
    try:
        # DSSE allows URL-safe base64 too; either way every character must belong to the
        # alphabet (a non-validating decoder would skip junk and accept, say, "%%%" as b"")
        return base64.b64decode(value.translate(_URLSAFE), validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"DSSE {what} is not valid base64") from None


def envelope_from_obj(obj: object) -> Envelope:
    if not isinstance(obj, dict):
        raise VerificationError("DSSE envelope must be a JSON object")
    ptype = obj.get("payloadType")
    if not isinstance(ptype, str):
        raise VerificationError("DSSE envelope has no string payloadType")
    payload = _b64(obj.get("payload"), "payload")
    raw_sigs = obj.get("signatures")
    if not isinstance(raw_sigs, list) or not raw_sigs:
        raise VerificationError("DSSE envelope has no signatures")
    sigs = []
    for i, s in enumerate(raw_sigs):
        if not isinstance(s, dict):
            raise VerificationError(f"DSSE signature {i} is not an object")
        keyid = s.get("keyid", "")
        if not isinstance(keyid, str):
            raise VerificationError(f"DSSE signature {i} keyid is not a string")
        sigs.append(Signature(keyid=keyid, sig=_b64(s.get("sig"), f"signature {i}")))
    return Envelope(ptype, payload, tuple(sigs))


def parse(data: bytes) -> Envelope:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise VerificationError("DSSE envelope is not valid JSON") from None
    return envelope_from_obj(obj)


def verify(
    envelope: Envelope,
    verifiers: Iterable[_Verifier],
    *,
    payload_type: str | None = None,
) -> Verified:
    """Accept the envelope if any signature verifies with a trusted key.

    Steps: (1) the payload type is the expected one; (2) for each signature whose keyid
    names a trusted key (or that has no keyid), check it over PAE; (3) the first that
    verifies wins and names the signer. Otherwise raise, saying why.
    """
    if payload_type is not None and envelope.payload_type != payload_type:
        raise VerificationError(
            f"DSSE payloadType is {envelope.payload_type!r}, expected {payload_type!r}"
        )
    by_id: dict[str, _Verifier] = {v.key_id: v for v in verifiers}
    message = pae(envelope.payload_type, envelope.payload)
    reasons = []
    for s in envelope.signatures:
        candidates = [by_id[s.keyid]] if s.keyid in by_id else ([] if s.keyid else list(by_id.values()))
        if not candidates:
            reasons.append(f"key {s.keyid[:16]}… is not trusted")
        for v in candidates:
            try:
                v.verify(message, s.sig)
            except VerificationError as exc:
                reasons.append(str(exc))
                continue
            return Verified(envelope.payload_type, envelope.payload, v.key_id)
    raise VerificationError("no valid signature from a trusted key: " + "; ".join(reasons))
