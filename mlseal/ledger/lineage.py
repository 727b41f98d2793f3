"""Lineage queries: where an artifact came from, and what was made from it.

`trace` starts at the record that produced an artifact (by SHA-256) and walks:

- back through each input: to the record ``producer_seq`` names (which must have
  output that digest) or, without one, to the record that produced it before it was
  consumed, until every path reaches an ``ingest`` record;
- forward through every record that consumed one of the outputs, transitively.

Every record comes from a `mlseal.ledger.verified.VerifiedView` of the ledger: its
entries, verified once, indexed by the view itself (the ledger's digest index is never
read, so a deleted index row hides nothing). The producer of a digest is chosen by
`mlseal.ledger.trusted.TrustedReader`'s rule, the one stage input checks and admission
use: the newest record with status ok that outputs
it, verified against the trust file and hash-linked to its successor. Every record on
the way is checked the same way. What is wrong is
reported as a `mlseal.ledger.problem.Problem` instead of raising: a broken lineage (an input nobody recorded,
a producer_seq that points to the wrong record, a path that ends before ingest) or a
bad signature. Callers decide; admission denies on any problem.

    >>> import tempfile
    >>> from mlseal.ledger import open_ledger
    >>> from mlseal.ledger.record import RecordDraft, OutputRef, Sha256Hex
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> key = LocalKeySigner.generate()
    >>> led = open_ledger("sqlite:///" + tempfile.mkdtemp() + "/l.db")
    >>> raw = OutputRef(name="raw", uri="file:///raw.csv", sha256=Sha256Hex("ab" * 32))
    >>> _ = led.append(RecordDraft(stage="ingest", outputs=(raw,)), key, signer_name="p")
    >>> lin = trace(led, "ab" * 32, TrustRoot.of(key.verifier("p")))
    >>> (lin.producer.stage, lin.ok)
    ('ingest', True)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlseal.errors import VerificationError
from mlseal.ledger.problem import Problem
from mlseal.ledger.record import Record, StageKind, Status
from mlseal.ledger.trusted import TooManyRecords, TrustedReader
from mlseal.ledger.unsafe import Trust, trust_root
from mlseal.ledger.verified import VerifiedView, ViewFailed, trust_key

if TYPE_CHECKING:
    from mlseal.ledger.protocols import LedgerReader

__all__ = ["MAX_RECORDS", "Lineage", "trace"]

#: stop walking after this many records (a lineage is a pipeline, not the whole log)
MAX_RECORDS = 100_000


@dataclass(frozen=True)
class Lineage:
    sha256: str
    producer: Record | None
    ancestors: tuple[Record, ...] = ()  # nearest first
    descendants: tuple[Record, ...] = ()  # nearest first
    problems: tuple[Problem, ...] = ()  # kinds: break, signature, missing, limit
    producers: tuple[int, ...] = field(default=())  # every seq that output the digest

    @property
    def ok(self) -> bool:
        """A trusted producer, every path back reaches ingest, no bad signature."""
        return self.producer is not None and not self.problems

    @property
    def stages(self) -> set[str]:
        """Stages on the way back to the raw data (the producer included)."""
        recs = ([self.producer] if self.producer else []) + list(self.ancestors)
        return {r.stage for r in recs}

    def to_json(self) -> dict[str, Any]:
        def brief(r: Record) -> dict[str, Any]:
            return {
                "seq": r.seq,
                "stage": r.stage,
                "component": r.component.name,
                "time": r.time,
                "signer": r.signer.name,
                "inputs": [{"name": i.name, "sha256": i.sha256, "producer_seq": i.producer_seq} for i in r.inputs],
                "outputs": [{"name": o.name, "uri": o.uri, "sha256": o.sha256} for o in r.outputs],
            }

        return {
            "sha256": self.sha256,
            "ok": self.ok,
            "producer": brief(self.producer) if self.producer else None,
            "ancestors": [brief(r) for r in self.ancestors],
            "descendants": [brief(r) for r in self.descendants],
            "problems": [p.to_json() for p in self.problems],
        }


class _Reader:
    """Reads records from a verified view of the ledger (TrustedReader's rule), noting problems."""

    def __init__(self, led: LedgerReader, trust: Trust) -> None:
        root = trust_root(trust, "trace")
        self.view = led if isinstance(led, VerifiedView) and led.trust_key == trust_key(trust) else \
            VerifiedView(led, trust)
        self.trusted = TrustedReader(self.view, root) if root is not None else None
        self.cache: dict[int, Record | None] = {}
        self.problems: list[Problem] = []

    def get(self, seq: int) -> Record | None:
        if seq not in self.cache:
            try:
                self.cache[seq] = self.view.record(seq)
            except ViewFailed:
                raise
            except VerificationError as exc:
                self.cache[seq] = None
                self.problems.append(Problem(seq, "signature", f"record {seq}: {exc}"))
        return self.cache[seq]

    def producer_of(self, sha: str, before: int | None = None) -> Record | None:
        """The producer by the TrustedReader rule (unchecked, the same rule, with `UNSAFE_SKIP_SIGNATURES`)."""
        if self.trusted is None:
            for seq in sorted(self.view.producers_of(sha), reverse=True):
                rec = self.get(seq) if before is None or seq < before else None
                if rec is not None and rec.status is Status.OK and any(o.sha256 == sha for o in rec.outputs):
                    return rec
            return None
        try:
            answer = self.trusted.producer_of(sha, before=before)
        except TooManyRecords as exc:
            self.problems.append(Problem(before, "limit", str(exc)))
            return None
        for p in answer.problems:
            if p.seq not in self.cache:
                self.cache[p.seq] = None
                self.problems.append(p.to_problem())
        if answer.record is not None:
            self.cache[answer.record.seq] = answer.record
        return answer.record


def trace(led: LedgerReader, sha256: str, trust: Trust) -> Lineage:
    """Lineage of the artifact with this digest, its records verified against ``trust``;
    `UNSAFE_SKIP_SIGNATURES` skips signature checks (logged as a warning), ``None`` is refused.

    ``led`` is an open ledger (a `VerifiedView` of it is built for the call, reading and
    verifying every entry once) or a view already built with the same trust. Raises
    `mlseal.ledger.verified.ViewFailed` if the ledger was rolled back or forked.
    """
    rd = _Reader(led, trust)
    producers = rd.view.producers_of(sha256)
    producer = rd.producer_of(sha256)
    if producer is None:
        if not producers:
            rd.problems.append(Problem(None, "missing", f"no record in the ledger output sha256 {sha256}"))
        return Lineage(sha256, None, problems=tuple(rd.problems), producers=tuple(producers))
    ancestors = _walk_back(producer, rd)
    descendants = _walk_forward(producer, rd)
    return Lineage(
        sha256,
        producer,
        ancestors=tuple(ancestors),
        descendants=tuple(descendants),
        problems=tuple(rd.problems),
        producers=tuple(producers),
    )


def _walk_back(start: Record, rd: _Reader) -> list[Record]:
    seen = {start.seq}
    out: list[Record] = []
    queue = deque([start])
    while queue and len(seen) < MAX_RECORDS:
        rec = queue.popleft()
        if not rec.inputs:
            if rec.stage != StageKind.INGEST:
                rd.problems.append(Problem(
                    rec.seq, "break",
                    f"record {rec.seq} ({rec.stage}) has no inputs and is not an ingest record: "
                    "the lineage does not reach the raw data",
                ))
            continue
        for inp in rec.inputs:
            parent = _producer_of_input(rec, inp.name, inp.sha256, inp.producer_seq, rd)
            if parent is not None and parent.seq not in seen:
                seen.add(parent.seq)
                out.append(parent)
                queue.append(parent)
    return out


def _producer_of_input(rec: Record, name: str, sha: str, producer_seq: int | None, rd: _Reader) -> Record | None:
    if producer_seq is not None:
        if producer_seq >= rec.seq:
            rd.problems.append(Problem(
                rec.seq, "break",
                f"record {rec.seq}: input {name} names producer record {producer_seq}, which is not earlier",
            ))
            return None
        parent = rd.get(producer_seq)
        if parent is None:
            return None
        if not any(o.sha256 == sha for o in parent.outputs):
            rd.problems.append(Problem(
                rec.seq, "break",
                f"record {rec.seq}: input {name} (sha256 {sha[:12]}…) names producer record "
                f"{producer_seq}, which did not output that digest",
            ))
            return None
        return parent
    parent = rd.producer_of(sha, before=rec.seq)
    if parent is not None:
        return parent
    rd.problems.append(Problem(
        rec.seq, "break",
        f"record {rec.seq} ({rec.stage}): input {name} (sha256 {sha[:12]}…) was not output by any earlier "
        "trusted record",
    ))
    return None


def _walk_forward(start: Record, rd: _Reader) -> list[Record]:
    seen = {start.seq}
    out: list[Record] = []
    queue = deque([start])
    while queue and len(seen) < MAX_RECORDS:
        rec = queue.popleft()
        for o in rec.outputs:
            for seq in rd.view.consumers_of(o.sha256):
                if seq in seen or seq <= rec.seq:
                    continue
                seen.add(seq)
                child = rd.get(seq)
                if child is not None:
                    out.append(child)
                    queue.append(child)
    return out
