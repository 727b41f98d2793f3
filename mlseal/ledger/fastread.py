"""Reading a ledger entry's few fields fast, without parsing (or decoding) all of it.

The hash-only verification (`UNSAFE_SKIP_SIGNATURES`) needs just ``prev`` and ``seq`` of
each record, and the derived-row check the digests of its inputs and outputs. Decoding a
whole payload costs more than hashing the entry, so these readers find what they need in
the entry's bytes (the DSSE envelope this ledger writes, its payload in base64) and decode
only that. Each returns None (or falls back to JSON) for anything unusual: they are exact
for the canonical form and never guess.

    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.ledger.record import RecordDraft, SignerRef, ZERO_HASH
    >>> from mlseal.ledger.entry import build_entry
    >>> s = LocalKeySigner.generate()
    >>> rec = RecordDraft(stage="ingest").complete(seq=7, prev=ZERO_HASH, time="t",
    ...     signer=SignerRef("p", s.key_id))
    >>> e = build_entry(rec, s)
    >>> seq, prev, keyid, _ = fast_fields(e[len(HEAD) : e.find(b'"', len(HEAD))])
    >>> seq, prev == ZERO_HASH.encode(), keyid == s.key_id.encode()
    (7, True, True)
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from mlseal.ledger._store import ROLE_INPUT, ROLE_OUTPUT
from mlseal.ledger.record import RECORD_PAYLOAD_TYPE

_a2b = binascii.a2b_base64

#: the canonical envelope, around its base64 payload and its key id: ``HEAD payload MID keyid SIG sig CLOSE``
HEAD = b'{"payload":"'
MID = b'","payloadType":"' + RECORD_PAYLOAD_TYPE.encode() + b'","signatures":[{"keyid":"'
SIG = b'","sig":"'
CLOSE = b'"}]}'
HEX_DIGITS = b"0123456789abcdef"
#: DSSE PAE up to the payload's length: ``pae(payload) == b"%s%d %s" % (PAE_HEAD, len(payload), payload)``
PAE_HEAD = b"DSSEv1 %d %s " % (len(RECORD_PAYLOAD_TYPE.encode()), RECORD_PAYLOAD_TYPE.encode())

# --- finding a key inside base64 without decoding it all ------------------------------
# Hash-only verification needs just ``prev`` and ``seq`` from each payload. Decoding a
# whole payload costs more than hashing the entry, so we search the base64 text: a
# byte string at payload offset o is encoded, from its first whole 3-byte group on, as
# fixed base64 characters at a 4-aligned position, one pattern per o mod 3. The last
# aligned hit is decoded from there to the end and must match `RECORD_TAIL`, which
# makes the reading exact; anything unusual falls back to JSON parsing.

def _b64_cores(key: bytes) -> tuple[tuple[bytes, int], ...]:
    out = []
    for r in range(3):
        first = (3 - r) % 3  # index in key of the first byte of a whole group
        whole = (len(key) - first) // 3
        out.append((base64.b64encode(key[first : first + 3 * whole]), first))
    return tuple(out)


def _b64_range(b64: bytes, start: int, end: int) -> bytes | None:
    """Payload bytes [start, end) decoded from the groups that hold them."""
    g0 = start // 3
    try:
        w = _a2b(b64[g0 << 2 : ((end + 2) // 3) << 2], strict_mode=True)
    except binascii.Error:
        return None
    return w[start - 3 * g0 : end - 3 * g0]


PREV_KEY = b',"prev":"'
_PREV_CORES = _b64_cores(PREV_KEY)
_TAIL_WINDOW = 768  # base64 characters
#: A JSON string. The quantifiers are possessive (no backtracking): a run of plain
#: characters can only end at a quote or a backslash, so giving some back never helps a
#: match, and failing fast makes the hash-only reader ~1/3 cheaper per record tail.
_STR = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_OPT = rb"(?:" + _STR + rb"|null)"
_SECRET = rb'\{"path":' + _STR + rb',"version":(?:0|[1-9][0-9]*|null)\}'
#: A canonical record from its top-level ``prev`` to the end: after ``prev`` come run,
#: secrets, seq, signer, stage, status, time, v, each with a fixed shape (RFC 8785 sorts
#: keys). ``,"`` never occurs inside a JSON string (a quote there is escaped), so the
#: last ``,"prev":"`` whose tail matches this closes exactly the top-level object: it
#: is the record's own prev, whatever keys params or metrics hold.
RECORD_TAIL = re.compile(
    rb',"prev":"([0-9a-f]{64})","run":\{"pipeline":' + _OPT + rb',"run_id":' + _OPT + rb',"task":' + _OPT
    + rb'\},"secrets":\[(?:' + _SECRET + rb'(?:,' + _SECRET + rb')*)?\],'
    rb'"seq":(0|[1-9][0-9]{0,17}),"signer":\{"key_id":(' + _STR + rb'),"name":' + _STR + rb'\},'
    rb'"stage":(' + _STR + rb'),"status":' + _STR + rb',"time":' + _STR + rb',"v":1\}',
    re.DOTALL,
)


def tail_fields(tail: bytes | None) -> tuple[int, bytes, bytes, bytes] | None:
    """(seq, prev hex, signer key id, stage) from a record tail, if canonical."""
    m = RECORD_TAIL.fullmatch(tail) if tail is not None else None
    if m is None:
        return None
    return int(m.group(2)), m.group(1), m.group(3)[1:-1], m.group(4)[1:-1]


def fast_fields(b64: bytes, hint: int = 0) -> tuple[int, bytes, bytes, int] | None:
    """(seq, prev, signer key id, tail length) read from base64 payload text without
    decoding it all.

    Only the tail from the record's ``,"prev":"`` is decoded; `RECORD_TAIL` then proves
    it is the top-level one (see there), wherever it was found. ``hint`` is the tail
    length of the previous record: consecutive records usually have equal tails, so
    that guess is tried first. None: let the caller parse the whole payload.
    """
    end = (len(b64) >> 2) * 3  # decoded length, rounded up to whole groups
    if hint:
        fields = tail_fields(_b64_range(b64, end - hint, end))
        if fields is not None:
            return (*fields[:3], hint)
    # Look near the end first (records' tails are short); the last hit there is the
    # last hit overall. Only if no pattern occurs there, search everything.
    for lo in (max(len(b64) - _TAIL_WINDOW, 0), 0):
        o = -1
        for core, first in _PREV_CORES:
            q = b64.rfind(core, lo)
            while q >= 0 and q & 3:
                q = b64.rfind(core, lo, q + len(core) - 1)
            if q >= 0:
                o = max(o, (q >> 2) * 3 - first)
        if o >= 0:
            fields = tail_fields(_b64_range(b64, o, end))
            return None if fields is None else (*fields[:3], end - o)
        if lo == 0:
            break
    return None


def guessed_tail(e: bytes, end: int, hint: int) -> tuple[int, bytes, bytes, int] | None:
    """`fast_fields` for the guess that the record's tail is ``hint`` bytes long, read
    straight from the entry (payload base64 text at ``e[12:end]``) without copying it."""
    b64_len = end - 12
    start = ((b64_len >> 2) * 3) - hint  # payload offset of the tail
    if start < 0 or b64_len & 3:
        return None
    g0 = start // 3
    try:
        w = _a2b(e[12 + (g0 << 2) : end], strict_mode=True)
    except binascii.Error:
        return None
    m = RECORD_TAIL.fullmatch(w, start - 3 * g0)
    if m is None:
        return None
    return int(m.group(2)), m.group(1), m.group(3)[1:-1], hint


# --- the digest index rows an entry implies ------------------------------------------------
# `Ledger.append` indexes each output's digest (role 0) and each input's (role 1) under the
# record's seq. In a canonical record the item lists sit between these markers: ``,"``
# never occurs inside a JSON string there and the items' keys are fixed, so the first
# occurrence of each marker is the top-level one and every ``"digest":{"sha256":…}``
# between them is an item's own.
_IN_START = b',"inputs":['
_IN_END = b'],"metrics":{'
_OUT_START = b',"outputs":['
_OUT_END = b'],"params":'
_ITEM_DIGEST = re.compile(rb'"digest":\{"sha256":"([0-9a-f]{64})"\}')
_HEX64 = re.compile(r"[0-9a-f]{64}")
_unhex = binascii.unhexlify


def _payload_digests(payload: bytes) -> list[tuple[int, bytes]] | None:
    """(role, sha256) of a canonical record's inputs and outputs; None: parse it as JSON."""
    i = payload.find(_IN_START)
    j = payload.find(_IN_END, i) if i >= 0 else -1
    k = payload.find(_OUT_START, j) if j >= 0 else -1
    m = payload.find(_OUT_END, k) if k >= 0 else -1
    if m < 0:
        return None
    out = [(ROLE_OUTPUT, h) for h in map(_unhex, _ITEM_DIGEST.findall(payload, k, m))]
    out += [(ROLE_INPUT, h) for h in map(_unhex, _ITEM_DIGEST.findall(payload, i, j))]
    return out


#: base64 characters decoded first when only the item lists are wanted: they come right
#: after the component, before params (a typical record's lists end ~550 bytes in)
_LISTS_B64 = 1024


def b64_digests(b64: bytes) -> list[tuple[int, bytes]]:
    """`digests_of` for a payload given as base64 text, decoding only as far as needed."""
    if len(b64) > _LISTS_B64:
        try:
            pairs = _payload_digests(_a2b(b64[:_LISTS_B64]))
        except binascii.Error:
            pairs = None
        if pairs is not None:
            return pairs
    try:
        return digests_of(_a2b(b64, strict_mode=True))
    except binascii.Error:
        return []


def _obj_digests(obj: object) -> list[tuple[int, bytes]]:
    """(role, sha256) of the well-formed items of a parsed record (any JSON)."""
    out: list[tuple[int, bytes]] = []
    if not isinstance(obj, dict):
        return out
    for role, name in ((ROLE_OUTPUT, "outputs"), (ROLE_INPUT, "inputs")):
        items = obj.get(name)
        for item in items if isinstance(items, list) else ():
            d = item.get("digest") if isinstance(item, dict) else None
            h = d.get("sha256") if isinstance(d, dict) else None
            if isinstance(h, str) and _HEX64.fullmatch(h):
                out.append((role, bytes.fromhex(h)))
    return out


def digests_of(payload: bytes) -> list[tuple[int, bytes]]:
    pairs = _payload_digests(payload)
    if pairs is None:
        try:
            pairs = _obj_digests(json.loads(payload))
        except (ValueError, UnicodeDecodeError):
            pairs = []
    return pairs


__all__ = [
    "CLOSE",
    "HEAD",
    "HEX_DIGITS",
    "MID",
    "PAE_HEAD",
    "PREV_KEY",
    "RECORD_TAIL",
    "SIG",
    "b64_digests",
    "digests_of",
    "fast_fields",
    "guessed_tail",
    "tail_fields",
]
