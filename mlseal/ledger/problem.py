"""One thing wrong with a ledger, as every ledger check reports it.

`ledger verify` (`mlseal.ledger.verify`), ``trace`` (`mlseal.ledger.lineage`), the
stored-checkpoint audit (`mlseal.ledger.checkpoint.audit_stored`) and a `VerifiedView`'s
notes about its store all report a `Problem`: the position it concerns (``seq``, None when
it concerns the log as a whole), a ``kind`` from `KINDS` and a ``detail`` a person can act
on. The kinds are lowercase snake_case words; docs/design.md ("Problem kinds") has the
same table.

    >>> p = Problem(3, "prev", "record 3: prev hash 00aa… does not match hash of record 2 (77c0…)")
    >>> p.to_json()["kind"], str(p)
    ('prev', 'record 3: prev hash 00aa… does not match hash of record 2 (77c0…)')
    >>> Problem(None, "Prev", "x")
    Traceback (most recent call last):
    ...
    ValueError: problem kind 'Prev' is not one of KINDS (mlseal.ledger.problem)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: every kind, and what it means (docs/design.md, "Problem kinds", is this table)
KINDS: dict[str, str] = {
    # the entries themselves (verify; trace for the records it reads)
    "format": "an entry is not a DSSE record envelope, or its payload not the RFC 8785 encoding of a record",
    "signature": "an entry's signature does not verify with a key the trust file lists, the record names another "
                 "signer than the key that signed it, or the key's grant does not cover the record",
    "prev": "a record's prev is not the SHA-256 of the entry before it",
    "seq": "a record's seq is not its position",
    "missing": "what was looked for is not in the ledger: storage returned another record in this one's place "
               "(verify), or no record output the artifact (trace)",
    # the tree and the head
    "size": "storage's head names another number of records than were read",
    "root": "the stored Merkle root is not the root of the stored entries",
    "checkpoint": "the log does not extend a checkpoint it was checked against, or the checkpoint does not verify",
    "stored_checkpoint": "a stored checkpoint row does not parse, verify, or match the verified tree",
    # artifacts
    "artifact": "an artifact's bytes no longer have the digest its latest record gives",
    # derived rows (DERIVED_KINDS)
    "index": "the digest index has a row the entries do not imply, or lacks one they do",
    "node": "a stored Merkle node is missing, extra, or has another hash than the entries give",
    "head": "storage's head names another hash of the last entry than the entry has",
    # lineage (trace)
    "break": "the lineage is broken: an input nobody recorded, a producer_seq naming the wrong record, a path "
             "that ends before an ingest record",
    "limit": "more records name a digest than a trusted lookup examines",
}

#: kinds of problems with derived rows; a report lists them after all of the entries' own
DERIVED_KINDS = frozenset({"index", "node", "head"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the log; ``seq`` is the position it concerns, if any."""

    seq: int | None
    kind: str  # a key of KINDS
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"problem kind {self.kind!r} is not one of KINDS (mlseal.ledger.problem)")

    def __str__(self) -> str:
        return self.detail

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "detail": self.detail}


__all__ = ["DERIVED_KINDS", "KINDS", "Problem"]
