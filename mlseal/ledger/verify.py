"""Ledger verification: a pure core (entry bytes in, verdict out) and a thin driver.

`verify_entries` checks, for every entry, in this order (docs/design.md#storage-verification-lineage):

1. the entry is a DSSE record envelope whose signature verifies with a signer in the
   trust file, and its payload is exactly the RFC 8785 encoding of the record it
   parses to (both skipped with ``trust=None``, the hash/Merkle-only mode, which reads
   only ``prev`` and ``seq``);
2. its record's ``prev`` is the SHA-256 of the previous entry (64 zeros for seq 0);
3. its record's ``seq`` is its position (no gap, no reordering, no replay);
4. the Merkle root over all entries equals the stored tree's root;
5. if a checkpoint is given: the tree at the checkpoint's size has the checkpoint's
   root, i.e. the current log extends what the checkpoint pinned;
6. with ``digest_uri``: each artifact (the latest output recorded at each URI) still
   has the recorded digest.

The core does no storage, network or clock access: it gets bytes and, for artifacts, a
function that digests a URI. Work is spread over processes (signature checks dominate);
results do not depend on the number of workers.

    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> from mlseal.ledger.record import RecordDraft, SignerRef, ZERO_HASH
    >>> from mlseal.ledger.entry import build_entry
    >>> s = LocalKeySigner.generate()
    >>> rec = RecordDraft(stage="ingest").complete(seq=0, prev=ZERO_HASH, time="t",
    ...     signer=SignerRef("p", s.key_id))
    >>> verify_entries([(0, build_entry(rec, s))], TrustRoot.of(s.verifier("p"))).ok
    True
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mlseal.errors import Error, VerificationError
from mlseal.ledger import _canonical, merkle
from mlseal.ledger._store import ROLE_INPUT, ROLE_OUTPUT, DigestRow, NodeRange, NodeRow
from mlseal.ledger.checkpoint import Checkpoint
from mlseal.ledger.entry import split_entry
from mlseal.ledger.merkle import Coord
from mlseal.ledger.record import RECORD_PAYLOAD_TYPE, ZERO_HASH, Record, RecordFormatError, _canonical_or_raise
from mlseal.signing.keys import KeyId
from mlseal.signing.trust import TrustRoot

if TYPE_CHECKING:
    from mlseal.ledger import Ledger
    from mlseal.signing.keys import PublicKeyVerifier
    from mlseal.signing.trust import Grant

#: report at most this many problems (a deleted record makes every later one "wrong")
MAX_PROBLEMS = 50
#: below this many entries, forking workers costs more than it saves
PARALLEL_THRESHOLD = 2048
#: entries per job: the driver reads a job's entries while the workers check earlier ones
BATCH = 4096

DigestUri = Callable[[str], str]

_ZERO = ZERO_HASH.encode()
_sha256 = hashlib.sha256
_hexlify = binascii.hexlify
_a2b = binascii.a2b_base64
_HEAD = b'{"payload":"'


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the log; ``seq`` is the position it concerns, if any."""

    seq: int | None
    kind: str  # format, signature, prev, seq, missing, root, size, checkpoint, artifact, index, node, head,
    #            stored_checkpoint
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "detail": self.detail}


@dataclass(frozen=True)
class Report:
    """The verdict. ``problems`` are sorted by position, the entries' own before those of
    derived rows (kinds in `DERIVED_KINDS`); the first is the first bad record."""

    ok: bool
    size: int
    root: bytes
    problems: tuple[Problem, ...] = ()
    checked: int = 0  # entries read (fewer than size when starting from a checkpoint)
    start: int = 0
    omitted: int = 0  # problems beyond MAX_PROBLEMS
    stored_checkpoints: int | None = None  # stored checkpoint rows checked (None: not asked)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": self.root.hex(),
            "problems": [p.to_json() for p in self.problems],
        }

    def raise_for_problems(self) -> None:
        if not self.ok:
            first = self.problems[0].detail if self.problems else "verification failed"
            more = len(self.problems) + self.omitted - 1
            raise VerificationError(first + (f" (and {more} more problems)" if more else ""))


@dataclass(frozen=True)
class Anchor:
    """A trusted starting point: verify only the entries after a checkpoint.

    ``frontier`` are the hashes of the perfect subtrees covering ``[0, size)`` (left to
    right); ``last_entry`` is entry ``size - 1`` with its inclusion proof. Both come from
    untrusted storage and are checked against ``root`` (which the caller trusts, e.g.
    from a signed checkpoint), so a verify from an anchor costs O(log n) + new entries.
    """

    size: int
    root: bytes
    frontier: tuple[bytes, ...]
    last_entry: bytes = b""
    last_entry_proof: tuple[bytes, ...] = ()


# --- per-entry checks (run in worker processes) -----------------------------------------

@dataclass
class _Chunk:
    lo: int
    first_key: int = 0  # storage seqs of the chunk's first and last entries
    last_key: int = -1
    keys: frozenset[int] | None = None  # all of them, if they are not first_key..last_key
    first_prev: bytes | None = None
    last_hash: bytes = b""
    nodes: list[tuple[int, bytes]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    outputs: list[tuple[int, str, str, str]] = field(default_factory=list)  # seq, name, uri, sha
    #: with derived-row checks: the digest index rows the entries imply, (storage seq,
    #: role, sha256) sorted, and every perfect Merkle node inside the chunk {coord: hash}
    digests: list[DigestRow] = field(default_factory=list)
    tree: dict[Coord, bytes] = field(default_factory=dict)


# --- finding a key inside base64 without decoding it all ------------------------------
# Hash-only verification needs just ``prev`` and ``seq`` from each payload. Decoding a
# whole payload costs more than hashing the entry, so we search the base64 text: a
# byte string at payload offset o is encoded, from its first whole 3-byte group on, as
# fixed base64 characters at a 4-aligned position, one pattern per o mod 3. The last
# aligned hit is decoded from there to the end and must match `_RECORD_TAIL`, which
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


_PREV_KEY = b',"prev":"'
_PREV_CORES = _b64_cores(_PREV_KEY)
_TAIL_WINDOW = 768  # base64 characters
_HEX_DIGITS = b"0123456789abcdef"
_SIG = b'","sig":"'
_CLOSE = b'"}]}'
#: DSSE PAE up to the payload's length: ``pae(payload) == b"%s%d %s" % (_PAE_HEAD, len(payload), payload)``
_PAE_HEAD = b"DSSEv1 %d %s " % (len(RECORD_PAYLOAD_TYPE.encode()), RECORD_PAYLOAD_TYPE.encode())
_MID = (
    b'","payloadType":"' + RECORD_PAYLOAD_TYPE.encode() + b'","signatures":[{"keyid":"'
)
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
_RECORD_TAIL = re.compile(
    rb',"prev":"([0-9a-f]{64})","run":\{"pipeline":' + _OPT + rb',"run_id":' + _OPT + rb',"task":' + _OPT
    + rb'\},"secrets":\[(?:' + _SECRET + rb'(?:,' + _SECRET + rb')*)?\],'
    rb'"seq":(0|[1-9][0-9]{0,17}),"signer":\{"key_id":(' + _STR + rb'),"name":' + _STR + rb'\},'
    rb'"stage":(' + _STR + rb'),"status":' + _STR + rb',"time":' + _STR + rb',"v":1\}',
    re.DOTALL,
)


def _tail_fields(tail: bytes | None) -> tuple[int, bytes, bytes, bytes] | None:
    """(seq, prev hex, signer key id, stage) from a record tail, if canonical."""
    m = _RECORD_TAIL.fullmatch(tail) if tail is not None else None
    if m is None:
        return None
    return int(m.group(2)), m.group(1), m.group(3)[1:-1], m.group(4)[1:-1]


def _fast_fields(b64: bytes, hint: int = 0) -> tuple[int, bytes, bytes, int] | None:
    """(seq, prev, signer key id, tail length) read from base64 payload text without
    decoding it all.

    Only the tail from the record's ``,"prev":"`` is decoded; `_RECORD_TAIL` then proves
    it is the top-level one (see there), wherever it was found. ``hint`` is the tail
    length of the previous record: consecutive records usually have equal tails, so
    that guess is tried first. None: let the caller parse the whole payload.
    """
    end = (len(b64) >> 2) * 3  # decoded length, rounded up to whole groups
    if hint:
        fields = _tail_fields(_b64_range(b64, end - hint, end))
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
            fields = _tail_fields(_b64_range(b64, o, end))
            return None if fields is None else (*fields[:3], end - o)
        if lo == 0:
            break
    return None


def _guessed_tail(e: bytes, end: int, hint: int) -> tuple[int, bytes, bytes, int] | None:
    """`_fast_fields` for the guess that the record's tail is ``hint`` bytes long, read
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
    m = _RECORD_TAIL.fullmatch(w, start - 3 * g0)
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


def _b64_digests(b64: bytes) -> list[tuple[int, bytes]]:
    """`_digests_of` for a payload given as base64 text, decoding only as far as needed."""
    if len(b64) > _LISTS_B64:
        try:
            pairs = _payload_digests(_a2b(b64[:_LISTS_B64]))
        except binascii.Error:
            pairs = None
        if pairs is not None:
            return pairs
    try:
        return _digests_of(_a2b(b64, strict_mode=True))
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


def _add_digests(chunk: _Chunk, key: int, pairs: list[tuple[int, bytes]]) -> None:
    """The entry's index rows, sorted as storage returns them, once each (an append
    writes a digest listed twice in one role once)."""
    if len(pairs) == 1:
        chunk.digests.append((key, *pairs[0]))
    elif pairs:
        chunk.digests.extend(sorted({(key, role, sha) for role, sha in pairs}))


def _digests_of(payload: bytes) -> list[tuple[int, bytes]]:
    pairs = _payload_digests(payload)
    if pairs is None:
        try:
            pairs = _obj_digests(json.loads(payload))
        except (ValueError, UnicodeDecodeError):
            pairs = []
    return pairs


_KeyInfo = tuple["PublicKeyVerifier | None", "Grant | None"]


def _check_one(
    pos: int, e: bytes, trust: TrustRoot | None, parse_all: bool, chunk: _Chunk,
    keys: dict[bytes, _KeyInfo] | None = None, key: int | None = None,
) -> tuple[int | None, bytes | None]:
    """(record seq, record prev as ASCII hex) of one entry, adding what is wrong to chunk.

    ``keys`` caches the trust file's verifier and grant per key id across a chunk. With
    ``key`` (the entry's storage seq), the digest index rows it implies go to the chunk."""
    payload: bytes | None = None
    keyid = sig = b""
    if e.startswith(_HEAD):  # the canonical form this ledger writes
        end = e.find(b'"', 12)
        if end > 0 and e.startswith(_MID, end):
            # the canonical envelope's tail, by offsets: 64 hex digits, then the base64
            # sig (alphabet and padding checked by strict a2b) and the closing ``"}]}``
            k = end + len(_MID)
            keyid = e[k : k + 64]
            if (len(keyid) == 64 and not keyid.translate(None, _HEX_DIGITS) and e.startswith(_SIG, k + 64)
                    and e.endswith(_CLOSE) and len(e) > k + 68 + len(_SIG)):
                try:
                    payload = _a2b(e[12:end], strict_mode=True)
                    sig = _a2b(e[k + 64 + len(_SIG) : -4], strict_mode=True)
                except binascii.Error:
                    payload = None
    if payload is None:
        try:
            part = split_entry(e)
        except VerificationError as exc:
            chunk.problems.append(Problem(pos, "format", f"record {pos}: {exc}"))
            return None, None
        payload, keyid, sig = part.payload, part.keyid.encode(), part.sig
    if key is not None:
        _add_digests(chunk, key, _digests_of(payload))
    grant = None
    if trust is not None:
        info = keys.get(keyid) if keys is not None else None
        if info is None:
            info = trust.signers.get(KeyId(keyid.decode())), trust.grant(keyid.decode())
            if keys is not None:
                keys[keyid] = info
        v, grant = info
        if v is None:
            chunk.problems.append(Problem(
                pos, "signature",
                f"record {pos}: signed by key {keyid.decode()[:16]}…, which the trust file does not list",
            ))
        else:
            try:
                v.verify(b"%s%d %s" % (_PAE_HEAD, len(payload), payload), sig)  # = pae(payload)
            except VerificationError:
                chunk.problems.append(Problem(
                    pos, "signature",
                    f"record {pos}: signature does not verify with key {v.name or keyid.decode()[:16]} "
                    "(entry altered after signing)",
                ))
    if trust is not None and not parse_all:
        # signatures: the payload must be its record's RFC 8785 encoding; the fast
        # check proves that for the usual layout, anything else takes the exact path
        canon = _canonical.fast_fields(payload)
        if canon is not None:
            seq_n, prev_b, named, stage_b, image_j, source_j = canon
            if named != keyid:
                chunk.problems.append(_signer_problem(pos, named, keyid))
            if grant is not None:  # no grant: the key may sign any record
                if grant.needs_component:
                    _check_grant(pos, trust, keyid, _json_text(stage_b), json.loads(source_j),
                                 json.loads(image_j), chunk)
                else:
                    _check_grant(pos, trust, keyid, _json_text(stage_b), None, None, chunk)
            return seq_n, prev_b
    elif not parse_all:
        # hash-only: read prev and seq; canonical form is not checked (docs/ledger.md)
        i = payload.rfind(_PREV_KEY)
        fields = _tail_fields(payload[i:]) if i >= 0 else None
        if fields is not None:
            return fields[0], fields[1]
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        chunk.problems.append(Problem(pos, "format", f"record {pos}: payload is not valid JSON"))
        return None, None
    try:
        seq: object
        prev_s: object
        signer_s: object
        if parse_all or trust is not None:
            record = Record.from_obj(obj)
            seq, prev_s, signer_s = record.seq, record.prev, record.signer.key_id
            stage, component, image = record.stage, record.component.source_sha256, record.component.image
            why = _canonical.problem(payload, _canonical_or_raise(record))
            if why is not None:
                chunk.problems.append(Problem(
                    pos, "format",
                    f"record {pos}: payload is not the RFC 8785 canonical encoding of its record "
                    f"(stage {record.stage}): {why}",
                ))
            for o in record.outputs:
                chunk.outputs.append((record.seq, o.name, o.uri, o.sha256))
        else:
            seq, prev_s = obj.get("seq"), obj.get("prev")
            signer_obj = obj.get("signer")
            signer_s = signer_obj.get("key_id") if isinstance(signer_obj, dict) else None
            comp_obj = obj.get("component")
            comp = comp_obj if isinstance(comp_obj, dict) else {}
            stage, component, image = obj.get("stage"), comp.get("source_sha256"), comp.get("image")
        if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(prev_s, str):
            raise RecordFormatError("record has no integer seq and string prev")
        if trust is not None:
            if signer_s != keyid.decode():
                chunk.problems.append(_signer_problem(pos, str(signer_s).encode(), keyid))
            _check_grant(pos, trust, keyid, stage, component, image, chunk)
        return seq, prev_s.encode()
    except RecordFormatError as exc:
        chunk.problems.append(Problem(pos, "format", f"record {pos}: {exc}"))
        return None, None


def _json_text(raw: bytes) -> str:
    """A JSON string's text (``raw`` includes no quotes; escapes are rare)."""
    text: str = json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
    return text


def _check_grant(
    pos: int, trust: TrustRoot, keyid: bytes, stage: object, component: object, image: object, chunk: _Chunk
) -> None:
    """A trusted key signed a record outside what the trust file lets it sign."""
    why = trust.authorization_problem(
        keyid.decode(),
        stage if isinstance(stage, str) else "",
        component if isinstance(component, str) else None,
        image if isinstance(image, str) else None,
    )
    if why is not None:
        chunk.problems.append(Problem(pos, "signature", f"record {pos} ({stage}): {why}"))


def _signer_problem(pos: int, named: bytes, keyid: bytes) -> Problem:
    return Problem(
        pos, "signature",
        f"record {pos}: names signer key {named.decode(errors='replace')[:16]}… "
        f"but was signed by {keyid.decode()[:16]}…",
    )


def _range_nodes(
    start: int, leaves: list[bytes], tree: dict[Coord, bytes] | None = None
) -> list[tuple[int, bytes]]:
    """Perfect subtrees (level, hash), left to right, covering leaves [start, start+len);
    with ``tree``, every perfect node inside the range goes there too."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(leaves)
    node = merkle.NODE_PREFIX
    while i < n:
        level = (n - i).bit_length() - 1
        p = start + i
        while p & ((1 << level) - 1):
            level -= 1
        row = leaves[i : i + (1 << level)]
        lv = 0
        if tree is not None:
            tree.update(zip(zip(itertools.repeat(0), range(p, p + len(row))), row, strict=False))
        while len(row) > 1:  # merkle.node_hash, inlined: half of all hashing is here
            row = [_sha256(node + a + b).digest() for a, b in zip(row[::2], row[1::2], strict=True)]
            lv += 1
            if tree is not None:
                tree.update(zip(zip(itertools.repeat(lv), range(p >> lv, (p >> lv) + len(row))), row, strict=False))
        out.append((level, row[0]))
        i += 1 << level
    return out


# Set in the parent before forking; workers inherit them (keys do not pickle).
_TRUST: TrustRoot | None = None
_PARSE_ALL = False
_DERIVED = False  # also compute the derived rows (digest index, Merkle nodes) the entries imply


def _check_chunk(job: tuple[int, list[tuple[int, bytes]]]) -> _Chunk:
    """Check the entries at positions ``pos0, pos0 + 1, …``: ``(storage seq, bytes)``."""
    pos0, rows = job
    chunk = _Chunk(lo=pos0)
    trust, parse_all, derived = _TRUST, _PARSE_ALL, _DERIVED
    fast = trust is None and not parse_all
    entries = [e for _, e in rows]
    # the two hashes of every entry, in C-level loops
    hashes = [_hexlify(h.digest()) for h in map(_sha256, entries)]
    leaves = [h.digest() for h in map(_sha256, map(merkle.LEAF_PREFIX.__add__, entries))]
    prev_hash: bytes | None = None
    keys: dict[bytes, _KeyInfo] = {}
    hint = 0
    seq: int | None
    prev: bytes | None
    for i, (key, e) in enumerate(rows):
        pos = pos0 + i
        if key != pos:
            chunk.problems.append(Problem(
                pos, "missing", f"record {pos}: storage returned record {key} in its place (record {pos} is missing)"
            ))
        fields = None
        if fast and e.startswith(_HEAD):  # hash-only: read prev and seq, nothing else
            end = e.find(b'"', 12)
            if end > 0 and e.startswith(_MID, end):
                fields = _guessed_tail(e, end, hint) if hint else None
                if fields is None:
                    fields = _fast_fields(e[12:end], hint)
        if fields is not None:
            seq, prev, _, hint = fields
            if derived:
                _add_digests(chunk, key, _b64_digests(e[12:end]))
        else:
            seq, prev = _check_one(pos, e, trust, parse_all, chunk, keys, key if derived else None)
        if prev is not None:
            if prev_hash is None:
                chunk.first_prev = prev
            elif prev != prev_hash:
                chunk.problems.append(_prev_problem(pos, prev, prev_hash))
        elif prev_hash is None:
            chunk.first_prev = b"?"
        if seq is not None and seq != pos:
            chunk.problems.append(Problem(pos, "seq", f"record {pos}: has seq {seq}, expected {pos}"))
        prev_hash = hashes[i]
    chunk.last_hash = prev_hash or b""
    if rows:
        chunk.first_key, chunk.last_key = rows[0][0], rows[-1][0]
        if chunk.last_key - chunk.first_key != len(rows) - 1:
            chunk.keys = frozenset(k for k, _ in rows)
    chunk.nodes = _range_nodes(pos0, leaves, chunk.tree if derived else None)
    return chunk


def _prev_problem(pos: int, prev: bytes, expected: bytes) -> Problem:
    return Problem(
        pos, "prev",
        f"record {pos}: prev hash {prev.decode(errors='replace')[:8]}… does not match hash of "
        f"record {pos - 1} ({expected.decode()[:8]}…)",
    )


# --- the core ------------------------------------------------------------------------------

class _Frontier:
    """Perfect subtrees covering [0, size), merged as nodes arrive left to right."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        levels = [lv for lv, _ in merkle.perfect_cover(0, size)]
        self.stack: list[tuple[int, bytes]] = list(zip(levels, hashes, strict=True))
        self.end = size

    def push(self, level: int, h: bytes, made: dict[Coord, bytes] | None = None) -> None:
        """Add the perfect subtree right after the current ones (aligned to its size);
        the nodes the merges complete go to ``made``."""
        start = self.end
        self.end += 1 << level
        while self.stack and self.stack[-1][0] == level:
            h = merkle.node_hash(self.stack.pop()[1], h)
            start -= 1 << level
            level += 1
            if made is not None:
                made[(level, start >> level)] = h
        self.stack.append((level, h))

    def root(self) -> bytes:
        if not self.stack:
            return merkle.EMPTY_ROOT
        return merkle.fold_cover([h for _, h in self.stack])


# --- derived rows: what the store should hold, given the entries ------------------------

class DerivedRows(Protocol):
    """Read access to the rows a ledger derives from its entries (a storage backend)."""

    def iter_digest_rows(self, start: int) -> Iterator[DigestRow]: ...

    def iter_node_rows(self, ranges: Sequence[NodeRange]) -> Iterator[NodeRow]: ...


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: kinds of problems with derived rows; a report lists them after all of the entries' own
DERIVED_KINDS = frozenset({"index", "node", "head"})
_ROLE_NAMES = {ROLE_OUTPUT: "output", ROLE_INPUT: "input"}
_INDEX_FIX = (
    "the digest index is derived from the signed entries and must match them exactly: "
    "someone with write access to the database changed it, so lookups by digest (admission, "
    "trace, stage input checks) can miss or invent records; restore the database from a backup "
    "taken before the change and find out who could write to it"
)
_NODE_FIX = (
    "Merkle nodes are derived from the signed entries and must match them exactly: "
    "proofs and roots served from them are wrong; restore the database from a backup "
    "taken before the change and find out who could write to it"
)


def _role(role: int) -> str:
    return _ROLE_NAMES.get(role, f"role {role}")


class _DerivedCheck:
    """Compares, chunk by chunk, the stored derived rows with those the entries imply.

    The digest index is read as one stream sorted by seq (merged with the chunks, which
    arrive in seq order); nodes are read per chunk by coordinate ranges, the same way
    proofs read them. Memory: one chunk's rows. Problems are capped at MAX_PROBLEMS (a
    deleted entry shifts every later leaf), the rest only counted.
    """

    def __init__(self, source: DerivedRows, start: int) -> None:
        self.source = source
        self.start = start
        self._stream = source.iter_digest_rows(start if start > 0 else _INT64_MIN)
        self._next: DigestRow | None = next(self._stream, None)
        self.problems: list[Problem] = []
        self.omitted = 0
        self.nodes = True  # off when the starting frontier is unusable (positions unknown)

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def _add(self, p: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(p)
        else:
            self.omitted += 1

    def _take_digests(self, last_key: int | None) -> list[DigestRow]:
        out = []
        while self._next is not None and (last_key is None or self._next[0] <= last_key):
            out.append(self._next)
            self._next = next(self._stream, None)
        return out

    def chunk(self, chunk: _Chunk, hi: int, made: dict[Coord, bytes]) -> None:
        stored = self._take_digests(chunk.last_key)
        if stored != chunk.digests:
            keys = chunk.keys
            first, last = chunk.first_key, chunk.last_key
            self._digest_problems(
                chunk.digests, stored, lambda seq: first <= seq <= last and (keys is None or seq in keys)
            )
        if not self.nodes:
            return
        lo = chunk.lo
        want = chunk.tree
        want.update(made)
        ranges = [(k, k, lo >> k, (hi >> k) - 1) for k in range(hi.bit_length()) if lo >> k < hi >> k]
        got = {(lv, ix): h for lv, ix, h in self.source.iter_node_rows(ranges)}
        if got != want:
            self._node_problems(want, got, hi)

    def finish(self, size: int) -> None:
        """Rows beyond what the entries imply: digest rows after the last entry, nodes
        outside the tree of ``size`` leaves."""
        self._digest_problems([], self._take_digests(None), lambda seq: False)
        top = size.bit_length()  # no level from here up has a node in the tree
        ranges: list[NodeRange] = [(_INT64_MIN, -1, _INT64_MIN, _INT64_MAX), (top, _INT64_MAX, _INT64_MIN, _INT64_MAX)]
        for k in range(top):  # one level each, so that the key's index seeks
            ranges += [(k, k, size >> k, _INT64_MAX), (k, k, _INT64_MIN, -1)]
        for lv, ix, _ in self.source.iter_node_rows(ranges):
            self._add(Problem(
                None, "node",
                f"Merkle node (level {lv}, index {ix}) is stored but is not part of the tree of the "
                f"{size} records: {_NODE_FIX}",
            ))

    def _digest_problems(self, want: list[DigestRow], got: list[DigestRow], held: Callable[[int], bool]) -> None:
        w, g = set(want), set(got)
        for seq, role, sha in sorted(w - g):
            self._add(Problem(
                seq, "index",
                f"record {seq}: the digest index has no row for its {_role(role)} {sha.hex()[:16]}… "
                f"(a lookup by that digest does not find this record): {_INDEX_FIX}",
            ))
        for seq, role, sha in sorted(g - w):
            if held(seq):
                what = (f"record {seq}: the digest index holds a row ({_role(role)} {sha.hex()[:16]}…) "
                        "that the record does not list")
            else:
                what = (f"the digest index holds a row ({_role(role)} {sha.hex()[:16]}…) for record {seq}, "
                        "which storage does not hold")
            self._add(Problem(seq, "index", f"{what}: {_INDEX_FIX}"))

    def _node_problems(self, want: dict[Coord, bytes], got: dict[Coord, bytes], size: int) -> None:
        for c in sorted(want.keys() | got.keys()):
            lv, ix = c
            first, last = ix << lv, ((ix + 1) << lv) - 1
            where = f"Merkle node (level {lv}, index {ix}) over records {first}..{last}"
            w, g = want.get(c), got.get(c)
            if w == g:
                continue
            if g is None:
                msg = f"{where} is missing from storage"
            elif w is None:
                msg = f"{where} is stored but is not part of the tree of the {size} records"
            else:
                msg = f"{where} has hash {g.hex()[:16]}…, the entries give {w.hex()[:16]}…"
            self._add(Problem(min(last, size - 1), "node", f"{msg}: {_NODE_FIX}"))


def _workers(requested: int | None, n: int) -> int:
    if n < PARALLEL_THRESHOLD or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if requested is not None:
        return max(1, requested)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _jobs(
    it: Iterator[tuple[int, bytes]], pos: int, size: int, cut: int | None
) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
    """(first position, entries) of ``size`` entries each, also ending one at ``cut``
    (the checkpoint's size, where the root must be taken)."""
    while True:
        n = cut - pos if cut is not None and pos < cut < pos + size else size
        rows = _take(it, n)
        if not rows:
            return
        yield pos, rows
        pos += len(rows)


def verify_entries(
    entries: Iterable[tuple[int, bytes]],
    trust: TrustRoot | None,
    *,
    anchor: Anchor | None = None,
    stored_size: int | None = None,
    stored_root: bytes | None = None,
    checkpoint: Checkpoint | None = None,
    digest_uri: DigestUri | None = None,
    workers: int | None = None,
    batch: int = BATCH,
    derived: DerivedRows | None = None,
    stored_last_hash: str | None = None,
) -> Report:
    """Verify a log given as ``(storage seq, entry bytes)`` pairs in order.

    ``trust=None`` skips signatures (hash/Merkle-only). ``anchor`` starts from a trusted
    earlier tree and expects the entries after it. ``stored_size``/``stored_root`` are
    what the storage claims (its head); a difference is a problem. ``checkpoint`` must be
    a tree the log extends. ``digest_uri`` digests an artifact URI (hex SHA-256).
    ``derived`` (the store) is compared with the rows the entries imply: the digest
    index rows (sha256, role, seq) of every entry read, and every Merkle node over them.
    ``stored_last_hash`` is the head's hash of the last entry (the next append's prev).

    Entries are read in jobs of ``batch`` while worker processes check earlier ones, so
    at most a few jobs are held in memory, whatever the log's size.
    """
    global _TRUST, _PARSE_ALL, _DERIVED
    problems: list[Problem] = []
    start = 0
    frontier = _Frontier()
    expected_prev = _ZERO
    # (0) the starting point
    if anchor is not None:
        start = anchor.size
        problems += _check_anchor(anchor)
        frontier = _Frontier(anchor.size, anchor.frontier) if not problems else _Frontier()
        expected_prev = _hexlify(_sha256(anchor.last_entry).digest()) if anchor.size else _ZERO
    cp_root: bytes | None = None
    if checkpoint is not None and anchor is not None and checkpoint.size == anchor.size:
        cp_root = anchor.root
    outputs: dict[str, tuple[int, str, str]] = {}
    pos = start
    parse_all = digest_uri is not None
    it = iter(entries)
    first = _take(it, PARALLEL_THRESHOLD)
    n_workers = _workers(workers, len(first))
    jobs = _jobs(itertools.chain(first, it), pos, max(batch, 1), checkpoint.size if checkpoint else None)
    _TRUST, _PARSE_ALL, _DERIVED = trust, parse_all, derived is not None
    check: _DerivedCheck | None = None
    try:
        with contextlib.ExitStack() as stack:
            if derived is not None:
                check = _DerivedCheck(derived, start)
                stack.callback(check.close)
                check.nodes = not problems  # a refused anchor leaves positions unknown
            if n_workers > 1:
                pool = stack.enter_context(multiprocessing.get_context("fork").Pool(n_workers))
                # the pool's feeder thread pulls jobs (reading storage) as workers free up
                results: Iterable[_Chunk] = pool.imap(_check_chunk, jobs)
            else:
                results = map(_check_chunk, jobs)
            for chunk in results:
                # (2) the chain link into the chunk; inside it the worker checked them
                if chunk.first_prev is not None and chunk.first_prev not in (expected_prev, b"?"):
                    problems.append(_prev_problem(chunk.lo, chunk.first_prev, expected_prev))
                expected_prev = chunk.last_hash
                problems += chunk.problems
                for seq, name, uri, sha in chunk.outputs:
                    outputs[uri] = (seq, name, sha)
                # (4) the Merkle tree, one perfect subtree at a time
                made: dict[Coord, bytes] = {}
                for level, h in chunk.nodes:
                    frontier.push(level, h, made if check is not None else None)
                pos = chunk.lo + sum(1 << lv for lv, _ in chunk.nodes)
                if checkpoint is not None and pos == checkpoint.size:
                    cp_root = frontier.root()
                # (7) the derived rows over these entries
                if check is not None:
                    check.chunk(chunk, pos, made)
            if check is not None:
                check.finish(pos)
    finally:
        _TRUST, _DERIVED = None, False
    size = pos
    root = frontier.root()
    if stored_size is not None and stored_size != size:
        problems.append(Problem(
            None, "size", f"storage says the log has {stored_size} records, but {size} were read"
        ))
    if (stored_last_hash is not None and (stored_size is None or stored_size == size)
            and stored_last_hash.encode() != expected_prev):
        problems.append(Problem(
            None, "head",
            f"storage's head names {stored_last_hash[:16]}… as the hash of record {size - 1}, whose entry hashes "
            f"to {expected_prev.decode()[:16]}…: the next record would link to the wrong entry; restore the "
            "database from a backup taken before the change",
        ))
    if stored_root is not None and stored_root != root and (stored_size is None or stored_size == size):
        problems.append(Problem(
            None, "root",
            f"stored Merkle root {stored_root.hex()[:16]}… does not match the root of the entries "
            f"({root.hex()[:16]}…)",
        ))
    # (5) the checkpoint: the log must still contain the tree it pinned
    if checkpoint is not None:
        problems += _check_checkpoint(checkpoint, size, cp_root)
    # (6) artifacts, each URI against the latest record that wrote it
    if digest_uri is not None:
        problems += _check_artifacts(outputs, digest_uri)
    omitted = 0
    if check is not None:
        problems += check.problems
        omitted = check.omitted
    # records' own problems first (the first is the first bad record), then derived rows'
    problems.sort(key=lambda p: (p.kind in DERIVED_KINDS, p.seq if p.seq is not None else size, p.kind))
    return Report(
        ok=not problems and not omitted,
        size=size,
        root=root,
        problems=tuple(problems[:MAX_PROBLEMS]),
        checked=size - start,
        start=start,
        omitted=omitted + max(0, len(problems) - MAX_PROBLEMS),
    )


def _take(it: Iterator[tuple[int, bytes]], n: int) -> list[tuple[int, bytes]]:
    out = []
    for item in it:
        out.append(item)
        if len(out) >= n:
            break
    return out


def _check_anchor(a: Anchor) -> list[Problem]:
    if a.size == 0:
        return []
    cover = merkle.perfect_cover(0, a.size)
    if len(cover) != len(a.frontier) or merkle.fold_cover(list(a.frontier)) != a.root:
        return [Problem(
            None, "checkpoint", f"stored Merkle nodes do not reproduce the checkpoint root at size {a.size}"
        )]
    try:
        merkle.verify_inclusion(
            merkle.leaf_hash(a.last_entry), a.size - 1, a.size, list(a.last_entry_proof), a.root
        )
    except VerificationError as exc:
        return [Problem(a.size - 1, "checkpoint", f"record {a.size - 1}: not the entry the checkpoint pinned ({exc})")]
    return []


def _check_checkpoint(cp: Checkpoint, size: int, root_at: bytes | None) -> list[Problem]:
    if size < cp.size:
        return [Problem(
            size, "checkpoint",
            f"the log has {size} records but checkpoint {cp.origin!r} pinned {cp.size}: "
            f"records {size}..{cp.size - 1} were removed (truncated)",
        )]
    if cp.size == 0:
        return []
    if root_at != cp.root:
        got = root_at.hex()[:16] if root_at else "?"
        return [Problem(
            cp.size - 1, "checkpoint",
            f"the first {cp.size} records have root {got}…, but the checkpoint pinned "
            f"{cp.root.hex()[:16]}…: the log was rewritten (it does not extend the checkpoint)",
        )]
    return []


def _check_artifacts(outputs: dict[str, tuple[int, str, str]], digest_uri: DigestUri) -> list[Problem]:
    problems = []
    for uri, (seq, name, sha) in outputs.items():
        try:
            got = digest_uri(uri)
        except Error as exc:
            problems.append(Problem(seq, "artifact", f"record {seq}: artifact {name} ({uri}): {exc}"))
            continue
        if got != sha:
            problems.append(Problem(
                seq, "artifact",
                f"record {seq}: artifact {name} ({uri}) has sha256 {got[:12]}…, the record says {sha[:12]}…",
            ))
    return problems


# --- the driver: fetch bytes from a ledger, call the core --------------------------------

def verify_ledger(
    led: Ledger,
    trust: TrustRoot | None,
    *,
    checkpoint: Checkpoint | None = None,
    from_checkpoint: bool = False,
    digest_uri: DigestUri | None = None,
    workers: int | None = None,
    derived: bool = True,
    stored_checkpoints: bool = False,
    origin: str | None = None,
) -> Report:
    """Read the ledger's entries (all, or only those after ``checkpoint``) and verify them.

    ``from_checkpoint`` trusts the checkpoint (verify its signature first!) and reads
    only the entries after it, plus O(log n) stored nodes. ``derived`` also proves the
    derived rows (digest index, Merkle nodes) are exactly what the entries read imply
    (with ``from_checkpoint``: the rows of the entries after it, and no row beyond them).
    ``stored_checkpoints`` also checks every stored checkpoint row against ``trust`` and
    the verified tree (`mlseal.ledger.checkpoint.audit_stored`, expected ``origin``): a
    row that does not parse, verify or match the tree is a ``stored_checkpoint`` problem.
    """
    head = led.head()
    anchor = None
    if from_checkpoint and checkpoint is not None and 0 < checkpoint.size <= head.size:
        cover = merkle.perfect_cover(0, checkpoint.size)
        nodes = led.get_nodes(cover)
        anchor = Anchor(
            size=checkpoint.size,
            root=checkpoint.root,
            frontier=tuple(nodes.get(c, b"") for c in cover),
            last_entry=led.entry(checkpoint.size - 1),
            last_entry_proof=tuple(led.inclusion_proof(checkpoint.size - 1, checkpoint.size)),
        )
    start = anchor.size if anchor else 0
    report = verify_entries(
        led.entries(start, 2**62),  # everything stored, also rows beyond the head's size
        trust,
        anchor=anchor,
        stored_size=head.size,
        stored_root=head.root,
        checkpoint=checkpoint,
        digest_uri=digest_uri,
        workers=workers,
        derived=led._store if derived else None,
        stored_last_hash=head.last_entry_hash if derived else None,
    )
    if not stored_checkpoints or trust is None:
        return report
    # and every stored checkpoint, against the tree the entries gave
    from mlseal.ledger.checkpoint import audit_stored

    rows, bad = audit_stored(led, trust, report.size, report.root, origin=origin)
    problems = [*report.problems, *(Problem(None, "stored_checkpoint", p.detail) for p in bad)]
    return dataclasses.replace(
        report, ok=report.ok and not bad, problems=tuple(problems[:MAX_PROBLEMS]),
        omitted=report.omitted + max(0, len(problems) - MAX_PROBLEMS), stored_checkpoints=rows,
    )


__all__ = [
    "DERIVED_KINDS",
    "Anchor",
    "DerivedRows",
    "Problem",
    "Report",
    "verify_entries",
    "verify_ledger",
]
