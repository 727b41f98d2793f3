"""Ledger verification: the public entry points, orchestrating a pure core.

`verify_entries` verifies a log given as entry bytes; `verify_ledger` reads a ledger's
entries (all, or those after a trusted checkpoint) and calls it. They apply the checklist
of `mlseal.ledger.checks` (docs/design.md#storage-verification-lineage):

0. the starting point (`Anchor`), when verifying from a checkpoint;
1. every entry's signature (by a key the trust file lists, under its grant) and canonical
   form, unless `UNSAFE_SKIP_SIGNATURES`;
2. the hash chain (``prev``); 3. positions (``seq``);
4. the Merkle root and storage's head; 5. the checkpoint; 6. artifacts; 7. derived rows.

The core does no storage, network or clock access: it gets bytes and, for artifacts, a
function that digests a URI. Checks 1-3 run in worker processes (`mlseal.ledger.pool`;
signature checks dominate), the Merkle tree is built with `mlseal.ledger.merkle.Frontier`,
derived rows are compared by `mlseal.ledger.derived`. Results do not depend on the number
of workers, and two verifications in two threads do not see each other's trust.

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

import binascii
import contextlib
import dataclasses
import hashlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlseal import _progress
from mlseal.errors import VerificationError
from mlseal.ledger import merkle, pool
from mlseal.ledger.checkpoint import Checkpoint, parse_checkpoint, verify_checkpoint
from mlseal.ledger.checks import (
    Anchor,
    Config,
    DigestUri,
    check_anchor,
    check_artifacts,
    check_checkpoint,
    check_head,
    prev_problem,
)
from mlseal.ledger.derived import DerivedCheck, DerivedRows
from mlseal.ledger.merkle import Coord
from mlseal.ledger.problem import DERIVED_KINDS, Problem
from mlseal.ledger.record import ZERO_HASH
from mlseal.ledger.unsafe import Trust, trust_root

if TYPE_CHECKING:
    from mlseal.ledger import Ledger

#: report at most this many problems (a deleted record makes every later one "wrong")
MAX_PROBLEMS = 50
#: below this many entries, forking workers costs more than it saves
PARALLEL_THRESHOLD = 2048
#: entries per job: the driver reads a job's entries while the workers check earlier ones
BATCH = 4096

_ZERO = ZERO_HASH.encode()


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
    checkpoint: Checkpoint | None = None  # the checkpoint the log was checked to extend (check 5)

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

    def with_problems(self, before: Iterable[Problem] = (), after: Iterable[Problem] = (), **changes: Any) -> Report:
        """This report with more problems (capped at MAX_PROBLEMS, the rest counted)."""
        problems = [*before, *self.problems, *after]
        return dataclasses.replace(
            self, ok=self.ok and len(problems) == len(self.problems), problems=tuple(problems[:MAX_PROBLEMS]),
            omitted=self.omitted + max(0, len(problems) - MAX_PROBLEMS), **changes,
        )


def verify_entries(
    entries: Iterable[tuple[int, bytes]],
    trust: Trust,
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

    ``trust`` is the trust root signatures are checked with, or `UNSAFE_SKIP_SIGNATURES`
    (hash/Merkle-only: check 1 skipped; ``None`` is refused). ``anchor`` starts from a
    trusted earlier tree and expects the entries after it. ``stored_size``/``stored_root``
    are what the storage claims (its head); a difference is a problem. ``checkpoint`` must
    be a tree the log extends. ``digest_uri`` digests an artifact URI (hex SHA-256).
    ``derived`` (the store) is compared with the rows the entries imply: the digest index
    rows (sha256, role, seq) of every entry read, and every Merkle node over them.
    ``stored_last_hash`` is the head's hash of the last entry (the next append's prev).

    Entries are read in jobs of ``batch`` while worker processes check earlier ones, so
    at most a few jobs are held in memory, whatever the log's size.
    """
    config = Config(trust=trust_root(trust, "verify_entries", warn=True), parse_all=digest_uri is not None,
                    derived=derived is not None)
    problems: list[Problem] = []
    start = 0
    frontier = merkle.Frontier()
    expected_prev = _ZERO
    if anchor is not None:  # (0) the starting point
        start = anchor.size
        problems += check_anchor(anchor)
        frontier = merkle.Frontier(anchor.size, anchor.frontier) if not problems else merkle.Frontier()
        expected_prev = binascii.hexlify(hashlib.sha256(anchor.last_entry).digest()) if anchor.size else _ZERO
    cp_root: bytes | None = None
    if checkpoint is not None and anchor is not None and checkpoint.size == anchor.size:
        cp_root = anchor.root
    outputs: dict[str, tuple[int, str, str]] = {}
    pos = start
    it = iter(entries)
    first = pool.take(it, PARALLEL_THRESHOLD)
    n_workers = pool.workers(workers, len(first), PARALLEL_THRESHOLD)
    todo = pool.jobs(itertools.chain(first, it), pos, max(batch, 1), checkpoint.size if checkpoint else None)
    check: DerivedCheck | None = None
    with contextlib.ExitStack() as stack:
        if derived is not None:
            check = DerivedCheck(derived, start, MAX_PROBLEMS)
            stack.callback(check.close)
            check.nodes = not problems  # a refused anchor leaves positions unknown
        for chunk in stack.enter_context(pool.check_chunks(todo, config, workers=n_workers)):
            # (1)-(3) were checked inside the chunk; (2) the chain link into it
            if chunk.first_prev is not None and chunk.first_prev not in (expected_prev, b"?"):
                problems.append(prev_problem(chunk.lo, chunk.first_prev, expected_prev))
            expected_prev = chunk.last_hash
            problems += chunk.problems
            for seq, name, uri, sha in chunk.outputs:
                outputs[uri] = (seq, name, sha)
            # (4) the Merkle tree, one perfect subtree at a time
            made: dict[Coord, bytes] = {}
            for level, h in chunk.nodes:
                frontier.push(level, h, made if check is not None else None)
            done = pos
            pos = chunk.lo + sum(1 << lv for lv, _ in chunk.nodes)
            _progress.advance(pos - done, "entries")
            if checkpoint is not None and pos == checkpoint.size:
                cp_root = frontier.root()
            if check is not None:  # (7) the derived rows over these entries
                check.chunk(chunk, pos, made)
        if check is not None:
            check.finish(pos)
    size = pos
    root = frontier.root()
    # (4) storage's head
    problems += check_head(size, root, expected_prev, stored_size=stored_size, stored_root=stored_root,
                           stored_last_hash=stored_last_hash)
    if checkpoint is not None:  # (5) the log must still contain the tree the checkpoint pinned
        problems += check_checkpoint(checkpoint, size, cp_root)
    if digest_uri is not None:  # (6) artifacts, each URI against the latest record that wrote it
        problems += check_artifacts(outputs, digest_uri)
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
        checkpoint=checkpoint,
    )


# --- the driver: fetch bytes from a ledger, call the core --------------------------------

def verify_ledger(
    led: Ledger,
    trust: Trust,
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

    ``trust``: as for `verify_entries`. ``from_checkpoint`` trusts the checkpoint (verify
    its signature first, or pass its note to `verify_ledger_note`) and reads only the
    entries after it, plus O(log n) stored nodes. ``derived`` also proves the derived rows
    (digest index, Merkle nodes) are exactly what the entries read imply (with
    ``from_checkpoint``: the rows of the entries after it, and no row beyond them).
    ``stored_checkpoints`` also checks every stored checkpoint row against ``trust`` and
    the verified tree (`mlseal.ledger.checkpoint.audit_stored`, expected ``origin``): a row
    that does not parse, verify or match the tree is a ``stored_checkpoint`` problem
    (skipped with `UNSAFE_SKIP_SIGNATURES`: there are no keys to verify them with).
    """
    root_of_trust = trust_root(trust, "verify_ledger")
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
    if not stored_checkpoints or root_of_trust is None:
        return report
    # and every stored checkpoint, against the tree the entries gave
    from mlseal.ledger.checkpoint import audit_stored

    rows, bad = audit_stored(led, root_of_trust, report.size, report.root, origin=origin)
    return report.with_problems(after=bad, stored_checkpoints=rows)


def verify_ledger_note(
    led: Ledger,
    trust: Trust,
    note: bytes,
    *,
    source: str = "checkpoint",
    from_checkpoint: bool = False,
    origin: str | None = None,
    **kw: Any,
) -> Report:
    """`verify_ledger` against a checkpoint given as its signed note (``ledger verify --checkpoint``).

    The note's signature is verified against ``trust.checkpoint_keys`` (expected ``origin``)
    first. One that does not verify is a ``checkpoint`` problem naming ``source``, listed
    first: with ``from_checkpoint`` nothing else is read (there is no trusted starting
    point), else the whole log is still verified and checked to extend the note's tree (a
    note that does not parse raises `CheckpointError`). With `UNSAFE_SKIP_SIGNATURES` the
    note's signature is not checked.
    ``kw``: the other options of `verify_ledger`.
    """
    root_of_trust = trust_root(trust, "verify_ledger_note")
    checkpoint: Checkpoint | None
    try:
        checkpoint = verify_checkpoint(note, root_of_trust, origin=origin) if root_of_trust is not None \
            else parse_checkpoint(note)[0]
    except VerificationError as exc:
        early = Problem(None, "checkpoint", f"checkpoint {source}: {exc}")
        if from_checkpoint:
            head = led.head()
            return Report(ok=False, size=head.size, root=head.root, problems=(early,))
        checkpoint = parse_checkpoint(note)[0]  # a note that does not even parse is an error
        report = verify_ledger(led, trust, checkpoint=checkpoint, origin=origin, **kw)
        return report.with_problems(before=[early])
    return verify_ledger(led, trust, checkpoint=checkpoint, from_checkpoint=from_checkpoint, origin=origin, **kw)


__all__ = [
    "DERIVED_KINDS",
    "MAX_PROBLEMS",
    "Anchor",
    "DerivedRows",
    "Problem",
    "Report",
    "verify_entries",
    "verify_ledger",
    "verify_ledger_note",
]
