"""The trusted-record reader's rule, pinned where mutation testing found it unpinned.

Each test states a promise of `mlseal.ledger.trusted` that a surviving mutant broke
without any test noticing: the ``before`` bound of a lineage lookup, the stage kind of
``newest_about``, the candidate cap given to one reader, the bound of the shared cache of
verified records, and the answer's candidates when no record qualifies.
"""

from __future__ import annotations

import sqlite3

import pytest

from mlseal.errors import VerificationError
from mlseal.ledger import open_ledger
from mlseal.ledger.entry import envelope_bytes, pae
from mlseal.ledger.record import (
    ZERO_HASH,
    Component,
    InputRef,
    OutputRef,
    Record,
    RecordDraft,
    Sha256Hex,
    SignerRef,
)
from mlseal.ledger.recordcache import VerifiedRecords
from mlseal.ledger.trusted import TooManyRecords, TrustedReader
from mlseal.ledger.verified import VerifiedView
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from tests.fixtures_admission import sha

X = sha("x")
Y = sha("y")


def _out(digest: Sha256Hex, name: str = "o") -> OutputRef:
    return OutputRef(name=name, uri=f"file:///{name}", sha256=digest)


def _in(digest: Sha256Hex, name: str = "i") -> InputRef:
    return InputRef(name=name, uri=f"file:///{name}", sha256=digest)


def _append(led: object, signer: LocalKeySigner, stage: str, *, outputs: tuple[OutputRef, ...] = (),
            inputs: tuple[InputRef, ...] = ()) -> int:
    draft = RecordDraft(stage=stage, component=Component(name=stage), inputs=inputs, outputs=outputs)
    return int(led.append(draft, signer, signer_name="pipeline").seq)  # type: ignore[attr-defined]


def _raw_update(url: str, seq: int, entry: bytes) -> None:
    """Replace a stored entry, as someone with write access to the database would."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE mlseal_entries SET entry = ? WHERE seq = ?", (entry, seq))
    db.close()


def test_before_bounds_the_producer_and_the_consumer_asked_about(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """Lineage asks for the producer of an input *before* the record that read it: a later
    re-recording of the same bytes must not be taken for the producer."""
    with open_ledger(sqlite_url) as led:
        first = _append(led, ledger_signer, "ingest", outputs=(_out(X),))
        eval_a = _append(led, ledger_signer, "evaluate", inputs=(_in(X),))
        second = _append(led, ledger_signer, "ingest", outputs=(_out(X),))
        eval_b = _append(led, ledger_signer, "evaluate", inputs=(_in(X),))
        reader = TrustedReader(led, ledger_trust, VerifiedRecords())
        assert reader.producer_of(X).record.seq == second  # type: ignore[union-attr]
        answer = reader.producer_of(X, before=second)
        assert answer.record is not None and answer.record.seq == first
        assert answer.candidates == (first,)
        assert reader.producer_of(X, before=second + 1).record.seq == second  # type: ignore[union-attr]
        assert reader.producer_of(X, before=first).record is None
        assert reader.newest_about(X, stage="evaluate").record.seq == eval_b  # type: ignore[union-attr]
        assert reader.newest_about(X, stage="evaluate", before=eval_b).record.seq == eval_a  # type: ignore[union-attr]
        assert reader.newest_about(X, stage="evaluate", before=eval_a).record is None


def test_newest_about_answers_only_with_the_stage_kind_asked_for(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """A newer process step that read the model is not its evaluation."""
    with open_ledger(sqlite_url) as led:
        _append(led, ledger_signer, "train", outputs=(_out(X),))
        evaluation = _append(led, ledger_signer, "evaluate", inputs=(_in(X),))
        _append(led, ledger_signer, "process", inputs=(_in(X),), outputs=(_out(Y),))
        reader = TrustedReader(led, ledger_trust, VerifiedRecords())
        assert reader.latest_evaluation(X).record.seq == evaluation  # type: ignore[union-attr]
        assert reader.newest_about(X, stage="deploy").record is None


def test_max_candidates_given_to_a_reader_caps_its_lookups(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        for _ in range(3):
            _append(led, ledger_signer, "ingest", outputs=(_out(X),))
        with pytest.raises(TooManyRecords, match="more than the 2"):
            TrustedReader(led, ledger_trust, VerifiedRecords(), max_candidates=2).producer_of(X)
        assert TrustedReader(led, ledger_trust, VerifiedRecords(), max_candidates=3).producer_of(X).record


def test_record_beyond_the_ledger_is_named(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        _append(led, ledger_signer, "ingest")
        reader = TrustedReader(led, ledger_trust, VerifiedRecords())
        for seq in (1, -1):
            with pytest.raises(VerificationError, match=rf"no record {seq} \(size 1\)"):
                reader.record(seq)


def test_an_unqualified_answer_still_lists_its_candidates(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """No record qualifies, but some named the digest: callers tell "never recorded" from
    "recorded, but by nobody trusted / tampered" by the candidates."""
    rogue = LocalKeySigner.generate()
    with open_ledger(sqlite_url) as led:
        bad = _append(led, rogue, "ingest", outputs=(_out(X),))
        answer = TrustedReader(led, ledger_trust, VerifiedRecords()).producer_of(X)
    assert answer.record is None and answer.candidates == (bad,)
    assert answer.problems[0].untrusted


def test_a_tampered_candidate_is_reported_with_its_position(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    with open_ledger(sqlite_url) as led:
        seq = _append(led, ledger_signer, "ingest", outputs=(_out(X),))
        entry = led.entry(seq)
    # one character of the payload changed after signing: the signature no longer verifies
    at = entry.index(b'"payload":"') + len(b'"payload":"') + 40
    _raw_update(sqlite_url, seq, entry[:at] + (b"B" if entry[at:at + 1] != b"B" else b"C") + entry[at + 1:])
    with open_ledger(sqlite_url, create=False) as led:
        answer = TrustedReader(led, ledger_trust, VerifiedRecords()).producer_of(X)
    assert answer.record is None
    with open_ledger(sqlite_url, create=False) as led, pytest.raises(VerificationError, match=f"entry {seq}: "):
        TrustedReader(led, ledger_trust, VerifiedRecords()).record(seq)


def test_an_entry_whose_payload_is_not_an_object_is_kept_as_its_error(
    sqlite_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    """A trusted key signed a JSON array: the view reads past it (no crash) and the entry
    answers with its error."""
    with open_ledger(sqlite_url) as led:
        for _ in range(3):
            _append(led, ledger_signer, "ingest", outputs=(_out(X),))
    payload = b"[]"
    _raw_update(sqlite_url, 1, envelope_bytes(payload, ledger_signer.key_id, ledger_signer.sign(pae(payload))))
    with open_ledger(sqlite_url, create=False) as led:
        view = VerifiedView(led, ledger_trust)
        assert view.failure is None and view.size() == 3
        with pytest.raises(VerificationError):
            view.record(1)
        assert TrustedReader(view, ledger_trust).producer_of(X).record.seq == 2  # type: ignore[union-attr]


def _rec(n: int) -> Record:
    return RecordDraft(stage="ingest").complete(seq=n, prev=ZERO_HASH, time="t", signer=SignerRef("p", "k"))


def test_verified_records_keep_the_most_recently_used() -> None:
    cache = VerifiedRecords(2)
    cache.put(("a",), _rec(0))
    cache.put(("b",), _rec(1))
    assert len(cache) == 2
    assert cache.get(("a",)) is not None  # "a" used last: "b" goes first
    cache.put(("c",), _rec(2))
    assert len(cache) == 2
    assert cache.get(("b",)) is None
    assert cache.get(("a",)) is not None and cache.get(("c",)) is not None


@pytest.mark.parametrize(("bound", "kept"), [(0, 0), (1, 1)])
def test_verified_records_hold_at_most_their_bound(bound: int, kept: int) -> None:
    cache = VerifiedRecords(bound)
    cache.put(("a",), _rec(0))
    cache.put(("b",), _rec(1))
    assert len(cache) == kept
    assert (cache.get(("b",)) is not None) == bool(kept)
