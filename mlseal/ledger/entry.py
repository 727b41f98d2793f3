"""Ledger entries: a record signed by whoever appended it, as a DSSE envelope.

An entry is the RFC 8785 canonical JSON of a DSSE envelope (payloadType
`RECORD_PAYLOAD_TYPE`) whose payload is the record's canonical bytes. The ledger stores
the entry's exact bytes and hashes those bytes, never a re-serialisation:

- entry hash = ``SHA-256(entry)`` (what the next record's ``prev`` names),
- Merkle leaf hash = ``SHA-256(0x00 || entry)`` (RFC 9162 §2.1.1).

    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> from mlseal.ledger.record import RecordDraft, SignerRef, ZERO_HASH
    >>> signer = LocalKeySigner.generate()
    >>> rec = RecordDraft(stage="ingest").complete(seq=0, prev=ZERO_HASH,
    ...     time="2026-01-01T00:00:00Z", signer=SignerRef("pipeline", signer.key_id))
    >>> entry = build_entry(rec, signer)
    >>> parse_entry(entry, TrustRoot.of(signer.verifier("pipeline"))) == rec
    True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from mlseal.errors import VerificationError
from mlseal.ledger import _jcs
from mlseal.ledger.record import (
    RECORD_PAYLOAD_TYPE,
    ZERO_HASH,
    Record,
    RecordDraft,
    RecordFormatError,
    SignerRef,
    is_sha256_hex,
)
from mlseal.ledger.unsafe import Trust, trust_root
from mlseal.signing import dsse
from mlseal.signing.keys import KeyId, Signer
from mlseal.signing.trust import TrustRoot

__all__ = [
    "CANONICAL_ENTRY",
    "EntryFormatError",
    "RecordTemplate",
    "SplitEntry",
    "UntrustedSigner",
    "build_entry",
    "check_signature",
    "entry_hash",
    "envelope_bytes",
    "pae",
    "parse_entry",
    "prev_of",
    "record_of",
    "split_entry",
    "verify_entry",
]

#: The exact canonical form of a one-signature record entry. RFC 8785 sorts the keys
#: (payload < payloadType < signatures; keyid < sig) and base64 needs no escaping, so an
#: entry this module writes always matches, and a match is unambiguous: it lets readers
#: split an entry without a JSON parser (verification of 100k entries is mostly this).
CANONICAL_ENTRY = re.compile(
    rb'\{"payload":"([A-Za-z0-9+/]*={0,2})",'
    rb'"payloadType":"application/vnd\.mlseal\.record\.v1\+json",'
    rb'"signatures":\[\{"keyid":"([0-9a-f]{64})","sig":"([A-Za-z0-9+/]+={0,2})"\}\]\}'
)


class EntryFormatError(VerificationError):
    """Entry bytes are not a DSSE envelope over a v1 record."""


@dataclass(frozen=True)
class SplitEntry:
    """The parts of an entry, not yet verified."""

    payload: bytes
    keyid: str
    sig: bytes


def pae(payload: bytes) -> bytes:
    """DSSE pre-authentication encoding for a record payload (what the signature covers)."""
    return dsse.pae(RECORD_PAYLOAD_TYPE, payload)


def build_entry(record: Record, signer: Signer) -> bytes:
    """Sign ``record`` and return the canonical entry bytes.

    Equal to ``dsse.sign(signer, RECORD_PAYLOAD_TYPE, record.canonical())``, written out
    directly because every append pays for it.
    """
    return _envelope(record.canonical(), signer)


class RecordTemplate:
    """A draft's canonical bytes with holes for ``seq``, ``prev`` and ``time``.

    Appends fill the holes while holding the ledger's write lock, so everything else
    (RFC 8785 encoding of inputs, outputs, params, …) is done before taking it. RFC 8785
    writes an object as ``{"k1":v1,"k2":v2,…}`` with keys sorted, so joining the
    separately canonicalised members in key order is the canonical record, exactly.
    """

    _HOLES = ("prev", "seq", "time")

    def __init__(self, draft: RecordDraft, signer: SignerRef) -> None:
        self.draft, self.signer = draft, signer
        # refuse what readers would refuse (a field of the wrong type, a bad digest)
        # before anything is signed or stored
        draft.validate()
        if not isinstance(signer.name, str) or not isinstance(signer.key_id, str):
            raise RecordFormatError("record field signer must hold a name and a key id")
        obj = draft.complete(seq=0, prev=ZERO_HASH, time="", signer=signer).to_obj()
        # The members between two holes, canonicalised as one object without its braces:
        # keys sort the same inside a group as in the whole record.
        self._groups: list[bytes] = []
        group: dict[str, object] = {}
        for key in sorted(obj):  # top-level keys are ASCII: UTF-16 order = byte order
            if key in self._HOLES:
                self._groups.append(_jcs.dumps(group)[1:-1])
                group = {}
            else:
                group[key] = obj[key]
        self._groups.append(_jcs.dumps(group)[1:-1])

    def render(self, seq: int, prev: str, time: str) -> bytes:
        g = self._groups
        members = [
            g[0], b'"prev":"%s"' % prev.encode(), g[1], b'"seq":%d' % seq, g[2], b'"time":' + _jcs.dumps(time), g[3]
        ]
        return b"{" + b",".join(m for m in members if m) + b"}"

    def sign(self, seq: int, prev: str, time: str, signer: Signer) -> bytes:
        """The entry for this draft at ``seq``; equal to `build_entry` of the completed record."""
        return _envelope(self.render(seq, prev, time), signer)


def _envelope(payload: bytes, signer: Signer) -> bytes:
    return envelope_bytes(payload, signer.key_id, signer.sign(pae(payload)))


def envelope_bytes(payload: bytes, keyid: str, sig: bytes) -> bytes:
    """The canonical one-signature entry for a record payload and its signature."""
    return b'{"payload":"%s","payloadType":"%s","signatures":[{"keyid":"%s","sig":"%s"}]}' % (
        base64.b64encode(payload),
        RECORD_PAYLOAD_TYPE.encode(),
        keyid.encode(),
        base64.b64encode(sig),
    )


def entry_hash(entry: bytes) -> str:
    return hashlib.sha256(entry).hexdigest()


def split_entry(data: bytes) -> SplitEntry:
    """Take an entry apart without checking any signature.

    Fast path for the canonical one-signature form; anything else goes through the
    general DSSE parser and must still be a record envelope with one signature, in
    RFC 8785 form. The payload is not parsed here (`Record.from_bytes` checks it).
    """
    m = CANONICAL_ENTRY.fullmatch(data)
    if m is not None:
        try:
            return SplitEntry(
                payload=binascii.a2b_base64(m.group(1), strict_mode=True),
                keyid=m.group(2).decode(),
                sig=binascii.a2b_base64(m.group(3), strict_mode=True),
            )
        except binascii.Error:
            raise EntryFormatError("entry payload or signature is not valid base64") from None
    try:
        env = dsse.parse(data)
    except VerificationError as exc:
        raise EntryFormatError(f"entry is not a DSSE envelope: {exc}") from None
    if env.payload_type != RECORD_PAYLOAD_TYPE:
        raise EntryFormatError(
            f"entry payloadType is {env.payload_type[:80]!r}, expected {RECORD_PAYLOAD_TYPE!r}"
        )
    if len(env.signatures) != 1:
        raise EntryFormatError(f"entry has {len(env.signatures)} signatures, a ledger entry has exactly 1")
    if env.to_bytes() != data:
        # RFC 8785 envelope bytes are unique: anything else (whitespace, key order,
        # URL-safe base64, extra members) is a second spelling of the same entry
        raise EntryFormatError("entry is a DSSE envelope but not in RFC 8785 canonical form")
    s = env.signatures[0]
    return SplitEntry(payload=env.payload, keyid=s.keyid, sig=s.sig)


def record_of(data: bytes) -> Record:
    """The record inside an entry, WITHOUT verifying its signature (for display)."""
    try:
        return Record.from_bytes(split_entry(data).payload)
    except RecordFormatError as exc:
        raise EntryFormatError(str(exc)) from None


def check_signature(part: SplitEntry, trust: TrustRoot) -> str:
    """Verify the entry's signature against the trusted record signers; return the key id.

    1. the signature names a key the trust file lists as a signer;
    2. the ECDSA signature verifies over PAE(payloadType, payload).
    """
    verifier = trust.signers.get(KeyId(part.keyid))
    if verifier is None:
        raise VerificationError(f"entry is signed by key {part.keyid[:16]}…, which the trust file does not list")
    try:
        verifier.verify(pae(part.payload), part.sig)
    except VerificationError:
        raise VerificationError(
            f"entry signature does not verify with key {verifier.name or part.keyid[:16]} "
            "(entry altered after signing, or signed by another key)"
        ) from None
    return part.keyid


def parse_entry(data: bytes, trust: TrustRoot) -> Record:
    """Verify an entry's signature against ``trust.signers`` and return its record.

    Steps: (1) split the DSSE envelope (record payload type, one signature, RFC 8785
    form); (2) the signing key is a trusted signer and the signature verifies; (3) the
    payload is a v1 record and exactly its RFC 8785 encoding; (4) the record's
    ``signer.key_id`` is the key that signed it; (5) the trust file lets that key sign
    this record's stage (and component, image).
    Raises `VerificationError` naming what is wrong.
    """
    part = split_entry(data)
    keyid = check_signature(part, trust)
    record = Record.from_bytes(part.payload)
    if record.signer.key_id != keyid:
        raise VerificationError(
            f"record {record.seq} names signer key {record.signer.key_id[:16]}… "
            f"but was signed by key {keyid[:16]}…"
        )
    why = trust.authorization_problem(keyid, record.stage, record.component.source_sha256, record.component.image)
    if why is not None:
        raise VerificationError(f"record {record.seq} ({record.stage}): {why}")
    return record


class UntrustedSigner(VerificationError):
    """The entry is signed, but by nobody the trust file names."""


def verify_entry(seq: int, data: bytes, trust: Trust, *,
                 parse: Callable[[bytes, TrustRoot], Record] = parse_entry) -> Record:
    """Step 1 of the selection rule for the entry stored at `seq`: its record, verified.

    Signed by a key the trust file lists (else `UntrustedSigner`), under that key's grant,
    canonical (`parse`, default `parse_entry`), and holding the seq it is stored at.
    `UNSAFE_SKIP_SIGNATURES` reads the record without checking its signature (display only;
    the caller that chose it warns: this runs once per entry); ``None`` is refused.
    """
    root = trust_root(trust, "verify_entry")
    if root is None:
        rec = record_of(data)
    else:
        part = split_entry(data)
        if part.keyid not in root.signers:
            raise UntrustedSigner(
                f"entry {seq} is signed by key {part.keyid[:16]}…, which the trust file does not list"
            )
        try:
            rec = parse(data, root)
        except VerificationError as exc:
            raise VerificationError(f"entry {seq}: {exc}") from None
    if rec.seq != seq:
        raise VerificationError(f"entry stored at {seq} holds record seq {rec.seq}: entries were moved")
    return rec


def prev_of(entry: bytes) -> str:
    """The `prev` field of an entry's record, read without building the whole record."""
    try:
        obj = json.loads(split_entry(entry).payload)
    except ValueError:
        raise VerificationError("its successor's payload is not JSON") from None
    prev = obj.get("prev") if isinstance(obj, dict) else None
    if not is_sha256_hex(prev):
        raise VerificationError("its successor's record has no valid prev hash")
    assert isinstance(prev, str)
    return prev
