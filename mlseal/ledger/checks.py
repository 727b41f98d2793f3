"""The checks `verify_entries` applies, as a numbered checklist; pure (bytes in, problems out).

Per entry (`check_entry`, `check_chunk`; run in worker processes, see `mlseal.ledger.pool`):

1. the entry is a DSSE record envelope whose signature verifies with a key the trust file
   lists (``signature``), the record names that key as its signer and the key's grant
   covers the record (``signature``), and the payload is exactly the RFC 8785 encoding of
   the record it parses to (``format``). Skipped with `UNSAFE_SKIP_SIGNATURES` (the
   hash/Merkle-only mode), which reads only ``prev`` and ``seq`` (`mlseal.ledger.fastread`);
2. its record's ``prev`` is the SHA-256 of the previous entry, 64 zeros for seq 0 (``prev``);
3. its record's ``seq`` is its position, and storage returned the entry stored at that
   position (``seq``, ``missing``): no gap, no reordering, no replay.

Over the whole log (`mlseal.ledger.verify.verify_entries` calls these in this order):

0. a trusted starting point (an `Anchor`) reproduces its root from the stored nodes, and
   its last entry is the one it pinned (`check_anchor`, ``checkpoint``);
4. the Merkle root over all entries is the stored tree's root, storage's head names the
   number of entries read and the hash of the last one (`check_head`: ``root``, ``size``,
   ``head``);
5. with a checkpoint: the tree at the checkpoint's size has the checkpoint's root, i.e. the
   current log extends what the checkpoint pinned (`check_checkpoint`, ``checkpoint``);
6. with ``digest_uri``: each artifact (the latest output recorded at each URI) still has the
   recorded digest (`check_artifacts`, ``artifact``);
7. the derived rows (digest index, Merkle nodes) are exactly those the entries imply
   (`mlseal.ledger.derived`, ``index``, ``node``).

Problem kinds are those of `mlseal.ledger.problem.KINDS`.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlseal.errors import Error, VerificationError
from mlseal.ledger import _canonical, merkle
from mlseal.ledger._store import DigestRow
from mlseal.ledger.entry import split_entry
from mlseal.ledger.fastread import (
    CLOSE,
    HEAD,
    HEX_DIGITS,
    MID,
    PAE_HEAD,
    PREV_KEY,
    SIG,
    b64_digests,
    digests_of,
    fast_fields,
    guessed_tail,
    tail_fields,
)
from mlseal.ledger.merkle import Coord
from mlseal.ledger.problem import Problem
from mlseal.ledger.record import Record, RecordFormatError, _canonical_or_raise
from mlseal.signing.keys import KeyId

if TYPE_CHECKING:
    from mlseal.ledger.checkpoint import Checkpoint
    from mlseal.signing.keys import PublicKeyVerifier
    from mlseal.signing.trust import Grant, TrustRoot

DigestUri = Callable[[str], str]

_sha256 = hashlib.sha256
_hexlify = binascii.hexlify
_a2b = binascii.a2b_base64


@dataclass(frozen=True)
class Config:
    """How one verification checks its entries; the same in every worker of its pool.

    ``trust`` None: `UNSAFE_SKIP_SIGNATURES` (check 1 skipped). ``parse_all``: parse every
    record in full (artifacts are checked, so the outputs are needed). ``derived``: also
    compute the derived rows the entries imply (check 7)."""

    trust: TrustRoot | None
    parse_all: bool = False
    derived: bool = False


@dataclass
class Chunk:
    """What the checks found in one job's run of consecutive entries."""

    lo: int
    first_key: int = 0  # storage seqs of the chunk's first and last entries
    last_key: int = -1
    keys: frozenset[int] | None = None  # all of them, if they are not first_key..last_key
    first_prev: bytes | None = None  # the first entry's prev (b"?": unreadable), for check 2 across chunks
    last_hash: bytes = b""
    nodes: list[tuple[int, bytes]] = field(default_factory=list)  # perfect subtrees over the chunk
    problems: list[Problem] = field(default_factory=list)
    outputs: list[tuple[int, str, str, str]] = field(default_factory=list)  # seq, name, uri, sha
    #: with derived-row checks: the digest index rows the entries imply, (storage seq,
    #: role, sha256) sorted, and every perfect Merkle node inside the chunk {coord: hash}
    digests: list[DigestRow] = field(default_factory=list)
    tree: dict[Coord, bytes] = field(default_factory=dict)


_KeyInfo = tuple["PublicKeyVerifier | None", "Grant | None"]


def check_chunk(job: tuple[int, list[tuple[int, bytes]]], config: Config) -> Chunk:
    """Checks 1-3 for the entries at positions ``pos0, pos0 + 1, …``: ``(storage seq, bytes)``,
    and the perfect Merkle subtrees over them (for check 4)."""
    pos0, rows = job
    chunk = Chunk(lo=pos0)
    trust, parse_all, derived = config.trust, config.parse_all, config.derived
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
        if key != pos:  # (3) storage returned the entry stored at this position
            chunk.problems.append(Problem(
                pos, "missing", f"record {pos}: storage returned record {key} in its place (record {pos} is missing)"
            ))
        fields = None
        if fast and e.startswith(HEAD):  # hash-only: read prev and seq, nothing else
            end = e.find(b'"', 12)
            if end > 0 and e.startswith(MID, end):
                fields = guessed_tail(e, end, hint) if hint else None
                if fields is None:
                    fields = fast_fields(e[12:end], hint)
        if fields is not None:
            seq, prev, _, hint = fields
            if derived:
                _add_digests(chunk, key, b64_digests(e[12:end]))
        else:
            seq, prev = check_entry(pos, e, trust, parse_all, chunk, keys, key if derived else None)
        # (2) the hash chain inside the chunk; the driver checks the link into it
        if prev is not None:
            if prev_hash is None:
                chunk.first_prev = prev
            elif prev != prev_hash:
                chunk.problems.append(prev_problem(pos, prev, prev_hash))
        elif prev_hash is None:
            chunk.first_prev = b"?"
        if seq is not None and seq != pos:  # (3) the record's seq is its position
            chunk.problems.append(Problem(pos, "seq", f"record {pos}: has seq {seq}, expected {pos}"))
        prev_hash = hashes[i]
    chunk.last_hash = prev_hash or b""
    if rows:
        chunk.first_key, chunk.last_key = rows[0][0], rows[-1][0]
        if chunk.last_key - chunk.first_key != len(rows) - 1:
            chunk.keys = frozenset(k for k, _ in rows)
    chunk.nodes = merkle.range_nodes(pos0, leaves, chunk.tree if derived else None)
    return chunk


def check_entry(
    pos: int, e: bytes, trust: TrustRoot | None, parse_all: bool, chunk: Chunk,
    keys: dict[bytes, _KeyInfo] | None = None, key: int | None = None,
) -> tuple[int | None, bytes | None]:
    """Check 1 for one entry; (record seq, record prev as ASCII hex) for checks 2-3.

    What is wrong goes to ``chunk``. ``keys`` caches the trust file's verifier and grant per
    key id across a chunk. With ``key`` (the entry's storage seq), the digest index rows it
    implies go to the chunk (check 7)."""
    part = _split(pos, e, chunk)
    if part is None:
        return None, None
    payload, keyid, sig = part
    if key is not None:
        _add_digests(chunk, key, digests_of(payload))
    grant = None
    if trust is not None:
        grant = _check_signature(pos, payload, keyid, sig, trust, chunk, keys)
        if not parse_all:
            # the payload must be its record's RFC 8785 encoding; the fast check proves
            # that for the usual layout, anything else takes the exact path below
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
        i = payload.rfind(PREV_KEY)
        fields = tail_fields(payload[i:]) if i >= 0 else None
        if fields is not None:
            return fields[0], fields[1]
    return _check_parsed(pos, payload, keyid, trust, parse_all, chunk)


def _split(pos: int, e: bytes, chunk: Chunk) -> tuple[bytes, bytes, bytes] | None:
    """(payload, key id, signature) of an envelope, or None with a ``format`` problem (check 1)."""
    if e.startswith(HEAD):  # the canonical form this ledger writes
        end = e.find(b'"', 12)
        if end > 0 and e.startswith(MID, end):
            # the canonical envelope's tail, by offsets: 64 hex digits, then the base64
            # sig (alphabet and padding checked by strict a2b) and the closing ``"}]}``
            k = end + len(MID)
            keyid = e[k : k + 64]
            if (len(keyid) == 64 and not keyid.translate(None, HEX_DIGITS) and e.startswith(SIG, k + 64)
                    and e.endswith(CLOSE) and len(e) > k + 68 + len(SIG)):
                try:
                    return _a2b(e[12:end], strict_mode=True), keyid, _a2b(e[k + 64 + len(SIG) : -4], strict_mode=True)
                except binascii.Error:
                    pass
    try:
        part = split_entry(e)
    except VerificationError as exc:
        chunk.problems.append(Problem(pos, "format", f"record {pos}: {exc}"))
        return None
    return part.payload, part.keyid.encode(), part.sig


def _check_signature(
    pos: int, payload: bytes, keyid: bytes, sig: bytes, trust: TrustRoot, chunk: Chunk,
    keys: dict[bytes, _KeyInfo] | None,
) -> Grant | None:
    """Check 1: a listed key, and its signature over the payload verifies; the key's grant."""
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
            v.verify(b"%s%d %s" % (PAE_HEAD, len(payload), payload), sig)  # = pae(payload)
        except VerificationError:
            chunk.problems.append(Problem(
                pos, "signature",
                f"record {pos}: signature does not verify with key {v.name or keyid.decode()[:16]} "
                "(entry altered after signing)",
            ))
    return grant


def _check_parsed(
    pos: int, payload: bytes, keyid: bytes, trust: TrustRoot | None, parse_all: bool, chunk: Chunk,
) -> tuple[int | None, bytes | None]:
    """Check 1 on the exact path: the payload parsed as JSON (and as a record, unless hash-only)."""
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


def _add_digests(chunk: Chunk, key: int, pairs: list[tuple[int, bytes]]) -> None:
    """The entry's index rows, sorted as storage returns them, once each (an append
    writes a digest listed twice in one role once)."""
    if len(pairs) == 1:
        chunk.digests.append((key, *pairs[0]))
    elif pairs:
        chunk.digests.extend(sorted({(key, role, sha) for role, sha in pairs}))


def _json_text(raw: bytes) -> str:
    """A JSON string's text (``raw`` includes no quotes; escapes are rare)."""
    text: str = json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
    return text


def _check_grant(
    pos: int, trust: TrustRoot, keyid: bytes, stage: object, component: object, image: object, chunk: Chunk
) -> None:
    """Check 1: a trusted key signed a record outside what the trust file lets it sign."""
    why = trust.authorization_problem(
        keyid.decode(),
        stage if isinstance(stage, str) else "",
        component if isinstance(component, str) else None,
        image if isinstance(image, str) else None,
    )
    if why is not None:
        chunk.problems.append(Problem(pos, "signature", f"record {pos} ({stage}): {why}"))


def _signer_problem(pos: int, named: bytes, keyid: bytes) -> Problem:
    """Check 1: the record names another signer than the key that signed it."""
    return Problem(
        pos, "signature",
        f"record {pos}: names signer key {named.decode(errors='replace')[:16]}… "
        f"but was signed by {keyid.decode()[:16]}…",
    )


def prev_problem(pos: int, prev: bytes, expected: bytes) -> Problem:
    """Check 2: the record's prev is not the hash of the entry before it."""
    return Problem(
        pos, "prev",
        f"record {pos}: prev hash {prev.decode(errors='replace')[:8]}… does not match hash of "
        f"record {pos - 1} ({expected.decode()[:8]}…)",
    )


# --- over the whole log ----------------------------------------------------------------------

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


def check_anchor(a: Anchor) -> list[Problem]:
    """Check 0: the stored frontier reproduces the anchor's root, its last entry is the pinned one."""
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


def check_head(size: int, root: bytes, last_hash: bytes, *, stored_size: int | None, stored_root: bytes | None,
               stored_last_hash: str | None) -> list[Problem]:
    """Check 4: what storage's head says (its size, root, last entry's hash) against the
    ``size`` entries read, their Merkle ``root`` and the hash of the last one."""
    problems = []
    if stored_size is not None and stored_size != size:
        problems.append(Problem(
            None, "size", f"storage says the log has {stored_size} records, but {size} were read"
        ))
    same_size = stored_size is None or stored_size == size
    if stored_last_hash is not None and same_size and stored_last_hash.encode() != last_hash:
        problems.append(Problem(
            None, "head",
            f"storage's head names {stored_last_hash[:16]}… as the hash of record {size - 1}, whose entry hashes "
            f"to {last_hash.decode()[:16]}…: the next record would link to the wrong entry; restore the "
            "database from a backup taken before the change",
        ))
    if stored_root is not None and stored_root != root and same_size:
        problems.append(Problem(
            None, "root",
            f"stored Merkle root {stored_root.hex()[:16]}… does not match the root of the entries "
            f"({root.hex()[:16]}…)",
        ))
    return problems


def check_checkpoint(cp: Checkpoint, size: int, root_at: bytes | None) -> list[Problem]:
    """Check 5: the log of ``size`` entries, whose root at ``cp.size`` was ``root_at``, extends ``cp``."""
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


def check_artifacts(outputs: dict[str, tuple[int, str, str]], digest_uri: DigestUri) -> list[Problem]:
    """Check 6: each URI's bytes against the latest record that wrote it, ``{uri: (seq, name, sha256)}``."""
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


__all__ = [
    "Anchor",
    "Chunk",
    "Config",
    "DigestUri",
    "check_anchor",
    "check_artifacts",
    "check_checkpoint",
    "check_chunk",
    "check_entry",
    "check_head",
    "prev_problem",
]
