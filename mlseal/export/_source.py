"""What every export reads: a model's records, verified, and nothing else.

`load_model` builds a `mlseal.ledger.verified.VerifiedView` of the ledger (every entry read
and verified once against the trust file: signature by a listed key under its grant,
canonical record, hash links, the view's own Merkle tree), traces the model through it
with `mlseal.ledger.lineage.trace` (the `TrustedReader` rule stage checks and admission
use), and refuses unless the lineage is whole: a trusted producer, every path back to an
``ingest`` record, and no record on the way or made from the model that fails to verify.
The ledger's derived tables (digest index, Merkle nodes) are never read.

    >>> import tempfile
    >>> from mlseal.ledger import open_ledger
    >>> from mlseal.ledger.record import RecordDraft, OutputRef, Sha256Hex
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> key = LocalKeySigner.generate()
    >>> led = open_ledger("sqlite:///" + tempfile.mkdtemp() + "/l.db")
    >>> raw = OutputRef(name="raw", uri="file:///raw.csv", sha256=Sha256Hex("ab" * 32))
    >>> _ = led.append(RecordDraft(stage="ingest", outputs=(raw,)), key, signer_name="p")
    >>> src = load_model(led, "ab" * 32, TrustRoot.of(key.verifier("p")))
    >>> src.producer.seq, src.output.name
    (0, 'raw')
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlseal.errors import VerificationError
from mlseal.ledger.lineage import trace
from mlseal.ledger.record import InputRef, OutputRef, Record, StageKind, is_sha256_hex
from mlseal.ledger.trusted import TrustedReader
from mlseal.ledger.verified import VerifiedView
from mlseal.signing.trust import TrustRoot


class ExportRefused(VerificationError):
    """The ledger does not prove what an export would say: unknown digest, untrusted or
    tampered record, broken lineage. Nothing is written."""


def _short(h: str) -> str:
    return h[:16] + "…"


def check_digest(text: str) -> str:
    """A model digest as the CLI takes it (``sha256:`` prefix allowed), or ExportRefused."""
    sha = text.removeprefix("sha256:").lower()
    if not is_sha256_hex(sha):
        raise ExportRefused(f"{text[:80]!r} is not a SHA-256 digest (64 hex digits)")
    return sha


@dataclass(frozen=True)
class Upstream:
    """One dataset or model a record consumed on the way to the model."""

    input: InputRef
    consumer: Record
    producer: Record | None


@dataclass(frozen=True)
class ModelSource:
    """A model's verified lineage: the records every export is built from."""

    model_sha256: str
    producer: Record
    ancestors: tuple[Record, ...]  # by seq
    descendants: tuple[Record, ...]  # by seq
    #: the newest trusted evaluate record that consumed the model, whatever its status
    evaluation: Record | None
    #: the exact entry bytes of every record above, by seq
    entries: Mapping[int, bytes]
    #: the verified view's tree when the records were read
    size: int
    root: bytes
    trust: TrustRoot
    view: VerifiedView

    @property
    def records(self) -> tuple[Record, ...]:
        """Every record of the export, oldest first."""
        recs = {r.seq: r for r in (*self.ancestors, self.producer, *self.descendants)}
        return tuple(recs[s] for s in sorted(recs))

    @property
    def output(self) -> OutputRef:
        """The producer's output that is the model."""
        return next(o for o in self.producer.outputs if o.sha256 == self.model_sha256)

    def entry_sha256(self, seq: int) -> str:
        return hashlib.sha256(self.entries[seq]).hexdigest()

    def signer_name(self, rec: Record) -> str:
        """The name the trust file gives the key that signed `rec` (never the name the record claims)."""
        return self.trust.signer_name(rec.signer.key_id) or rec.signer.key_id[:16]

    def upstream(self) -> list[Upstream]:
        """Every input consumed by the producer and its ancestors, once per digest, nearest first."""
        by_seq = {r.seq: r for r in self.records}
        seen: set[str] = set()
        out: list[Upstream] = []
        for rec in sorted((self.producer, *self.ancestors), key=lambda r: -r.seq):
            for i in rec.inputs:
                if i.sha256 in seen:
                    continue
                seen.add(i.sha256)
                producer = by_seq.get(i.producer_seq) if i.producer_seq is not None else None
                if producer is None:
                    producer = next((r for r in sorted(self.ancestors, key=lambda r: -r.seq)
                                     if r.seq < rec.seq and any(o.sha256 == i.sha256 for o in r.outputs)), None)
                out.append(Upstream(i, rec, producer))
        return out

    def output_of(self, sha: str) -> tuple[Record, OutputRef] | None:
        """The record of this export that output `sha`, and that output (the newest one)."""
        for rec in sorted(self.records, key=lambda r: -r.seq):
            for o in rec.outputs:
                if o.sha256 == sha:
                    return rec, o
        return None


def open_view(led: Any, trust: TrustRoot) -> VerifiedView:
    """A verified view of `led`; a rolled-back or forked ledger is refused."""
    view = VerifiedView(led, trust)
    if view.failure is not None:
        raise ExportRefused(f"the ledger cannot be read as verified: {view.failure}")
    return view


def load_model(led: Any, sha256: str, trust: TrustRoot, *, view: VerifiedView | None = None) -> ModelSource:
    """The verified lineage of the model `sha256`; ExportRefused naming what is wrong.

    1. a verified view of the ledger (every entry verified once; a rolled-back or forked
       ledger is refused);
    2. a record the trust file trusts produced the digest (`TrustedReader` rule): an
       unknown digest, or one only untrusted or tampered records name, is refused;
    3. the lineage back to ``ingest`` and every record made from the model verify, with no
       break (`trace`): any problem is refused, with every problem named;
    4. the newest trusted evaluation of the model (any status) is read by the same rule.
    """
    sha = check_digest(sha256)
    view = view if view is not None else open_view(led, trust)  # 1
    lineage = trace(view, sha, trust)  # 2, 3
    if lineage.producer is None:
        if not lineage.producers:
            raise ExportRefused(f"model sha256 {sha}: no record in the ledger output this digest (unknown digest)")
        details = "; ".join(p.detail for p in lineage.problems) or "every record naming it failed verification"
        raise ExportRefused(f"model sha256 {_short(sha)}: no trusted record produced it: {details}")
    if lineage.problems:
        raise ExportRefused(
            f"model sha256 {_short(sha)}: its lineage does not verify: " + "; ".join(p.detail for p in lineage.problems)
        )
    answer = TrustedReader(view, trust).latest_evaluation(sha)  # 4
    if answer.problems:
        raise ExportRefused(
            f"model sha256 {_short(sha)}: an evaluation record does not verify: "
            + "; ".join(f"record {p.seq}: {p}" for p in answer.problems)
        )
    records = (lineage.producer, *lineage.ancestors, *lineage.descendants)
    if answer.record is not None:
        records = (*records, answer.record)
    entries = {r.seq: view.entry(r.seq) for r in records}
    head = view.head()
    return ModelSource(
        model_sha256=sha,
        producer=lineage.producer,
        ancestors=tuple(sorted(lineage.ancestors, key=lambda r: r.seq)),
        descendants=tuple(sorted({r.seq: r for r in (*lineage.descendants, *(
            [answer.record] if answer.record is not None else []))}.values(), key=lambda r: r.seq)),
        evaluation=answer.record,
        entries=entries,
        size=head.size,
        root=head.root,
        trust=trust,
        view=view,
    )


def ingest_source(rec: Record) -> tuple[str, str] | None:
    """(source, sha256) an ingest record names as the raw data it read, if it names them."""
    if rec.stage != StageKind.INGEST:
        return None
    source, sha = rec.params.get("source"), rec.params.get("source_sha256")
    if isinstance(source, str) and is_sha256_hex(sha):
        assert isinstance(sha, str)
        return source, sha
    return None
