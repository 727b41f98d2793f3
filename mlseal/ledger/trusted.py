"""One answer to "which trusted record speaks about this digest?".

Stage input checks, admission and ``trace`` all ask it; they ask `TrustedReader`, so
the same ledger gives them the same answer.

The selection rule
------------------

Among the records that name a digest (as an output for `producer_of`, as an input for
`newest_about`), newest first, the first that

1. verifies against the trust file: its signature, by a listed key, under that key's
   grant (`mlseal.ledger.entry.parse_entry`), and sits at the seq it claims;
2. is hash-linked to its successor: when a next entry exists, that entry's ``prev`` is
   the SHA-256 of this entry's exact bytes (a trusted key re-signing an edited record
   cannot also fix the record after it);
3. matches the question (lists the digest as an output / input, of the asked stage kind)

decides. A record failing 1 or 2 is skipped and reported as `Skipped`, with the error it
failed with (callers decide whether a tampered candidate denies; `Skipped.untrusted` tells
an unknown signer from tampering); older records are then considered.

Which records name a digest comes from a `mlseal.ledger.verified.VerifiedView`, which
indexes the entries themselves: the ledger's own digest index and Merkle nodes are
derived tables nobody signs, so deleting or adding a row there changes no answer.

Status:

- `newest_about` returns the newest matching record whatever its status: a newer
  FAILED evaluation supersedes an older pass, so a model that failed re-evaluation is
  denied.
- `producer_of` considers only records with status ``ok``. A FAILED record that lists
  the digest as an output describes a run that did not finish, not the bytes: it does
  not un-produce an artifact that an older OK record produced and signed, and it cannot
  produce one either.

At most `MAX_CANDIDATES` records are examined per question; a digest with more
candidates is refused with `TooManyRecords` rather than tying up the caller.

    >>> import tempfile
    >>> from mlseal.ledger import open_ledger
    >>> from mlseal.ledger.record import RecordDraft, OutputRef, Sha256Hex
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> key = LocalKeySigner.generate()
    >>> led = open_ledger("sqlite:///" + tempfile.mkdtemp() + "/l.db")
    >>> raw = OutputRef(name="raw", uri="file:///raw.csv", sha256=Sha256Hex("ab" * 32))
    >>> _ = led.append(RecordDraft(stage="ingest", outputs=(raw,)), key, signer_name="p")
    >>> TrustedReader(led, TrustRoot.of(key.verifier("p"))).producer_of("ab" * 32).record.seq
    0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ledger.entry import UntrustedSigner, parse_entry
from mlseal.ledger.problem import Problem
from mlseal.ledger.protocols import LedgerReader
from mlseal.ledger.record import Record, Status
from mlseal.ledger.recordcache import SHARED, VerifiedRecords
from mlseal.ledger.verified import VerifiedView, trust_key
from mlseal.signing.trust import TrustRoot

__all__ = ["MAX_CANDIDATES", "Answer", "Skipped", "TooManyRecords", "TrustedReader"]

#: candidate records examined per question (per digest); more is refused
MAX_CANDIDATES = 1_000


def _short(h: str) -> str:
    return h[:16] + "…"


class TooManyRecords(VerificationError):
    """More candidate records name a digest than `MAX_CANDIDATES`."""


@dataclass(frozen=True)
class Skipped:
    """A candidate record the selection rule passed over, and the error it failed with.

    Not a `Problem` yet: the error's class is what callers decide by (admission denies a
    tampered candidate, and treats one by an unknown signer as absent). Reported, it is a
    ``signature`` problem (`to_problem`).
    """

    seq: int
    error: VerificationError

    def to_problem(self) -> Problem:
        return Problem(self.seq, "signature", f"record {self.seq}: {self.error}")

    @property
    def untrusted(self) -> bool:
        """Signed by a key the trust file does not list (as if absent, not tampering)."""
        return isinstance(self.error, UntrustedSigner)

    def __str__(self) -> str:
        return str(self.error)


@dataclass(frozen=True)
class Answer:
    """The deciding record (None: no candidate qualified) and the skipped candidates."""

    record: Record | None
    problems: tuple[Skipped, ...]
    candidates: tuple[int, ...]


class TrustedReader:
    """Applies the module's selection rule to a verified view of one ledger.

    ``view`` is a `mlseal.ledger.verified.VerifiedView` built with the same trust (and
    parse), or any `LedgerReader` (an open `Ledger`): then a view of it is built, reading
    and verifying every entry once, when the first question is asked. The candidates
    come from the view's own digest index, never from the ledger's derived tables.
    `record` raises; `producer_of` and `newest_about` apply the rule. `verified` lets
    views built by several readers share signature checks (see VerifiedRecords; default:
    the process-wide `SHARED`).
    """

    def __init__(
        self,
        view: LedgerReader,
        trust: TrustRoot,
        verified: VerifiedRecords | None = None,
        *,
        parse: Callable[[bytes, TrustRoot], Record] = parse_entry,
        max_candidates: int | None = None,
    ) -> None:
        if not isinstance(trust, TrustRoot):
            raise ConfigurationError(
                f"TrustedReader decides which records are trusted: it needs a trust root "
                f"(mlseal.signing.trust.load_trust), not {trust!r}")
        self._source = view
        self._trust = trust
        self._verified = verified
        self._parse = parse
        self._max = MAX_CANDIDATES if max_candidates is None else max_candidates
        self._view: VerifiedView | None = None
        if isinstance(view, VerifiedView) and view.trust_key == trust_key(trust) and view.parse is parse:
            self._view = view
        self._size: int | None = None

    @property
    def view(self) -> VerifiedView:
        """The verified view the answers come from (built on first use)."""
        if self._view is None:
            verified = self._verified if self._verified is not None else SHARED
            self._view = VerifiedView(self._source, self._trust, parse=self._parse, verified=verified)
        return self._view

    def size(self) -> int:
        if self._size is None:
            self._size = self.view.size()
        return self._size

    def record(self, seq: int) -> Record:
        """The verified, hash-linked record at `seq` (steps 1-2); raises UntrustedSigner or VerificationError."""
        if not 0 <= seq < self.size():
            raise VerificationError(f"the ledger has no record {seq} (size {self.size()})")
        return self.view.record(seq)

    def _candidates(self, seqs: list[int], sha: str, before: int | None) -> list[int]:
        limit = self.size() if before is None else min(before, self.size())
        out = sorted({s for s in seqs if s < limit}, reverse=True)
        if len(out) > self._max:
            raise TooManyRecords(
                f"{len(out)} ledger records name sha256 {_short(sha)}, more than the {self._max} a trusted "
                "lookup examines; refused rather than scanning them all. Record a new artifact instead of "
                "re-recording this one"
            )
        return out

    def _select(self, seqs: list[int], match: Callable[[Record], bool]) -> Answer:
        problems: list[Skipped] = []
        for seq in seqs:
            try:
                rec = self.record(seq)
            except VerificationError as exc:
                problems.append(Skipped(seq, exc))
                continue
            if match(rec):
                return Answer(rec, tuple(problems), tuple(seqs))
        return Answer(None, tuple(problems), tuple(seqs))

    def producer_of(self, sha: str, *, before: int | None = None) -> Answer:
        """The newest trusted, hash-linked OK record that output `sha` (earlier than `before`).

        Raises TooManyRecords beyond the cap.
        """
        seqs = self._candidates(self.view.producers_of(sha), sha, before)
        return self._select(
            seqs, lambda r: r.status is Status.OK and any(o.sha256 == sha for o in r.outputs)
        )

    def newest_about(self, sha: str, *, stage: str, before: int | None = None) -> Answer:
        """The newest trusted, hash-linked record of kind `stage` that consumed `sha`, any status.

        Raises TooManyRecords beyond the cap.
        """
        seqs = self._candidates(self.view.consumers_of(sha), sha, before)
        return self._select(seqs, lambda r: r.stage == stage and any(i.sha256 == sha for i in r.inputs))

    def latest_evaluation(self, sha: str) -> Answer:
        """`newest_about(sha, stage="evaluate")`: a newer failed evaluation supersedes a pass."""
        return self.newest_about(sha, stage="evaluate")
