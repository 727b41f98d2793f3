"""VerifiedView: built from the entries alone, follows the tail, refuses rollbacks and forks.

The attacker writes the ledger's database: rewrites an entry the view already verified,
deletes rows from the end (rollback), replaces the last entry by a validly signed other
one (fork), or stores a checkpoint that does not match. The view must keep believing
only what it verified, and fail (naming the reason) on what an append-only log never does.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlseal.admission import decide, load_policy
from mlseal.admission.decision import Reason
from mlseal.errors import VerificationError
from mlseal.ledger import UNSAFE_SKIP_SIGNATURES, Ledger, open_ledger
from mlseal.ledger.checkpoint import Checkpoint, sign_checkpoint
from mlseal.ledger.record import Component, InputRef, RecordDraft, Sha256Hex, Status
from mlseal.ledger.recordcache import VerifiedRecords
from mlseal.ledger.trusted import TrustedReader
from mlseal.ledger.verified import FORKED, ROLLED_BACK, TAMPERED, VerifiedView, ViewFailed
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from tests.fixtures_admission import Model, build_lineage, isvc, resign_entry, write_policy


@dataclass
class World:
    dir: Path
    url: str
    signer: LocalKeySigner
    trust: TrustRoot
    model: Model


def evaluate(led: Ledger, signer: LocalKeySigner, model: Model, accuracy: float,
             status: Status = Status.OK) -> int:
    return led.append(RecordDraft(
        stage="evaluate", component=Component(name="evaluate"), status=status,
        inputs=(InputRef("model", model.uri, Sha256Hex(model.sha256), model.seqs["train"]),),
        metrics={"accuracy": accuracy, "robust_accuracy": 0.9}), signer, signer_name="pipeline").seq


@pytest.fixture
def world(tmp_path: Path) -> World:
    signer = LocalKeySigner.generate()
    signer.save(tmp_path / "keys" / "pipeline.pem", tmp_path / "keys" / "pipeline.pub.pem")
    (tmp_path / "trust.yaml").write_text("signers:\n  - name: pipeline\n    public_key: keys/pipeline.pub.pem\n")
    url = f"sqlite:///{tmp_path}/ledger.db"
    with open_ledger(url) as led:
        model = build_lineage(led, signer, "m")
        build_lineage(led, signer, "tail")
    write_policy(tmp_path, ledger=url)
    return World(tmp_path, url, signer, TrustRoot.of(signer.verifier("pipeline")), model)


def truncate(url: str, size: int) -> None:
    """Delete every row of records >= size, consistently (entries, index, Merkle nodes)."""
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    db.execute("DELETE FROM mlseal_entries WHERE seq >= ?", (size,))
    db.execute("DELETE FROM mlseal_digests WHERE seq >= ?", (size,))
    db.execute("DELETE FROM mlseal_nodes WHERE ((idx + 1) << level) > ?", (size,))
    db.commit()
    db.close()


def test_view_indexes_the_entries_and_gives_their_exact_bytes(world: World) -> None:
    with open_ledger(world.url, create=False) as led:
        view = VerifiedView(led, world.trust)
        assert view.size() == led.size()
        assert view.head().root == led.head().root and view.head().last_entry_hash == led.head().last_entry_hash
        for seq in range(led.size()):
            assert view.entry(seq) == led.entry(seq)
        assert view.producers_of(world.model.sha256) == [world.model.seqs["train"]]
        assert view.consumers_of(world.model.sha256) == [world.model.seqs["evaluate"]]
        assert view.root(3) == led.root(3)
        assert view.problems == []


def test_untrusted_and_tampered_entries_are_kept_as_their_error(world: World) -> None:
    rogue = LocalKeySigner.generate()
    with open_ledger(world.url) as led:
        bad = build_lineage(led, world.signer, "rogue", train_signer=rogue)
        view = VerifiedView(led, world.trust)
    with pytest.raises(VerificationError, match="which the trust file does not list"):
        view.record(bad.seqs["train"])
    # indexed by what it claims, so a question about the model meets (and reports) it
    assert view.producers_of(bad.sha256) == [bad.seqs["train"]]
    answer = TrustedReader(view, world.trust).producer_of(bad.sha256)
    assert answer.record is None and answer.problems[0].untrusted


def test_a_rewritten_entry_below_the_views_size_is_not_believed(world: World) -> None:
    """After the view verified a failing evaluation, the attacker re-signs it as a pass (a
    stolen key) in place: the view keeps the record it verified."""
    with open_ledger(world.url) as led:
        failing = evaluate(led, world.signer, world.model, 0.3)
        build_lineage(led, world.signer, "tail2")
        view = VerifiedView(led, world.trust)
        policy = load_policy(world.dir / "policy.yaml")
        assert not decide(isvc(world.model), policy, ledger=view).allowed
        resign_entry(world.url, failing, world.signer, metrics={"accuracy": 0.99, "robust_accuracy": 0.99})
        view.refresh()
        assert view.record(failing).metrics["accuracy"] == 0.3
        d = decide(isvc(world.model), policy, ledger=view)
        assert not d.allowed and Reason.GATE_FAILED in d.codes, d.reasons
        # a view built now sees the broken hash link and calls the entry tampered
        fresh = decide(isvc(world.model), policy, ledger=led)
        assert not fresh.allowed and Reason.TAMPERED in fresh.codes, fresh.reasons


def test_a_newer_failed_evaluation_is_seen_after_one_refresh(world: World) -> None:
    with open_ledger(world.url) as led:
        view = VerifiedView(led, world.trust)
        policy = load_policy(world.dir / "policy.yaml")
        assert decide(isvc(world.model), policy, ledger=view).allowed
        seq = evaluate(led, world.signer, world.model, 0.95, status=Status.FAILED)
        assert decide(isvc(world.model), policy, ledger=view).allowed  # not read yet
        assert view.refresh() == 1
        d = decide(isvc(world.model), policy, ledger=view)
        assert not d.allowed and any(f"record {seq}" in r for r in d.reasons), d.reasons


def test_rollback_fails_the_view_for_good(world: World) -> None:
    with open_ledger(world.url) as led:
        view = VerifiedView(led, world.trust)
        size = view.size()
        truncate(world.url, size - 2)
        with pytest.raises(ViewFailed, match="rolled back") as exc:
            view.refresh()
        assert exc.value.code == ROLLED_BACK
        # it stays failed, even once the store grows past the old size again
        for _ in range(3):
            led.append(RecordDraft(stage="ingest"), world.signer, signer_name="pipeline")
        for read in (view.refresh, view.size, lambda: view.producers_of(world.model.sha256)):
            with pytest.raises(ViewFailed):
                read()
        d = decide(isvc(world.model), load_policy(world.dir / "policy.yaml"), ledger=view)
        assert not d.allowed and d.codes == (Reason.LEDGER_ROLLED_BACK,), d.reasons
        assert "rolled back" in d.reasons[0]


@pytest.mark.parametrize("then_append", [False, True], ids=["same-size", "then-append"])
def test_fork_fails_the_view(world: World, then_append: bool) -> None:
    """The last entry replaced by a validly signed, consistently stored other record."""
    with open_ledger(world.url) as led:
        view = VerifiedView(led, world.trust)
        size = view.size()
        truncate(world.url, size - 1)
    with open_ledger(world.url) as led:
        led.append(RecordDraft(stage="ingest", params={"forked": True}), world.signer, signer_name="pipeline")
        if then_append:
            led.append(RecordDraft(stage="ingest"), world.signer, signer_name="pipeline")
        view.ledger = led
        with pytest.raises(ViewFailed, match="forked") as exc:
            view.refresh()
        assert exc.value.code == FORKED
        d = decide(isvc(world.model), load_policy(world.dir / "policy.yaml"), ledger=view)
        assert not d.allowed and d.codes == (Reason.LEDGER_FORKED,), d.reasons


class WithCheckpoint:
    """A ledger that also stores checkpoints (`Ledger.latest_checkpoint`), as a stub."""

    def __init__(self, led: Ledger, note: bytes | None = None) -> None:
        self._led, self.note = led, note

    def __getattr__(self, name: str) -> Any:
        return getattr(self._led, name)

    def latest_checkpoint(self) -> bytes | None:
        return self.note

    def checkpoints(self, limit: int = 64) -> list[bytes]:
        return [n for n in (self.note, *self.older) if n is not None][:limit]

    older: tuple[bytes, ...] = ()


@pytest.fixture
def cp_key() -> LocalKeySigner:
    return LocalKeySigner.generate()


def _trust_with(world: World, cp_key: LocalKeySigner) -> TrustRoot:
    return TrustRoot.of(world.signer.verifier("pipeline"), checkpoint_keys=(cp_key.verifier("cp"),))


def test_consistent_checkpoint_is_accepted(world: World, cp_key: LocalKeySigner) -> None:
    with open_ledger(world.url) as led:
        note = sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, led.root(3)), cp_key)
        view = VerifiedView(WithCheckpoint(led, note), _trust_with(world, cp_key))
        assert view.failure is None and view.checkpoint_size == 3


@pytest.mark.parametrize(("make", "code", "words"), [
    (lambda led, key: sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, bytes(32)), key), FORKED, "forked"),
    (lambda led, key: sign_checkpoint(Checkpoint("mlseal.local/ledger", led.size() + 5, bytes(32)), key),
     ROLLED_BACK, "rolled back"),
], ids=["other-root", "beyond-the-log"])
def test_inconsistent_checkpoint_denies(world: World, cp_key: LocalKeySigner, make: Any, code: str,
                                        words: str) -> None:
    with open_ledger(world.url) as led:
        stub = WithCheckpoint(led)
        view = VerifiedView(stub, _trust_with(world, cp_key))
        assert view.failure is None
        stub.note = make(led, cp_key)
        with pytest.raises(ViewFailed, match=words) as exc:
            view.refresh()
        assert exc.value.code == code
        policy = load_policy(world.dir / "policy.yaml")
        d = decide(isvc(world.model), policy, ledger=view)
        assert not d.allowed and d.codes == (Reason(code),), d.reasons
        # built from scratch over the same store, it fails the same way
        assert VerifiedView(stub, _trust_with(world, cp_key)).failure is not None


@pytest.mark.parametrize("junk", [
    lambda led, key: sign_checkpoint(Checkpoint("mlseal.local/ledger", led.size() + 5, bytes(32)),
                                     LocalKeySigner.generate()),  # signed by nobody trusted
    lambda led, key: b"mlseal.local/ledger\n999\n" + b"A" * 44 + "\n\n\u2014 x AAAA\n".encode(),  # garbage
], ids=["wrong-key", "unparseable"])
def test_stored_checkpoint_that_does_not_verify_proves_nothing(
    world: World, cp_key: LocalKeySigner, junk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored note no trusted key signed is not evidence of anything: it neither fails the
    view (whoever may write the checkpoint table could otherwise deny every model) nor hides
    the newest note that does verify, which is still enforced. `ledger verify` names the row."""
    with open_ledger(world.url) as led:
        stub = WithCheckpoint(led, junk(led, cp_key))
        view = VerifiedView(stub, _trust_with(world, cp_key))
        assert view.failure is None and view.checkpoint is None
        assert "does not verify" in caplog.text  # reported, not silent
        policy = load_policy(world.dir / "policy.yaml")
        assert decide(isvc(world.model), policy, ledger=view).allowed
        # behind the junk, a valid note of another tree is still a fork
        stub.older = (sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, bytes(32)), cp_key),)
        with pytest.raises(ViewFailed, match="forked") as exc:
            VerifiedView(stub, _trust_with(world, cp_key)).refresh()
        assert exc.value.code == FORKED
        # and a valid consistent one is accepted
        stub.older = (sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, led.root(3)), cp_key),)
        assert VerifiedView(stub, _trust_with(world, cp_key)).checkpoint_size == 3


def test_checkpoint_ignored_without_checkpoint_keys(world: World, cp_key: LocalKeySigner) -> None:
    with open_ledger(world.url) as led:
        note = sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, bytes(32)), cp_key)
        assert VerifiedView(WithCheckpoint(led, note), world.trust).failure is None


def test_rows_deleted_in_the_middle_fail_the_view(world: World) -> None:
    db = sqlite3.connect(world.url.removeprefix("sqlite:///"))
    db.execute("DELETE FROM mlseal_entries WHERE seq = 2")
    db.commit()
    db.close()
    with open_ledger(world.url, create=False) as led:
        view = VerifiedView(led, world.trust)
    assert view.failure is not None and view.failure.code == TAMPERED
    d = decide(isvc(world.model), load_policy(world.dir / "policy.yaml"), ledger=view)
    assert not d.allowed and d.codes == (Reason.TAMPERED,)


def test_shared_verified_records_skip_second_signature_checks(world: World) -> None:
    cache = VerifiedRecords()
    with open_ledger(world.url, create=False) as led:
        a = VerifiedView(led, world.trust, verified=cache)
        assert len(cache) == a.size()
        b = VerifiedView(led, world.trust, verified=cache)
        assert [b.record(s) for s in range(b.size())] == [a.record(s) for s in range(a.size())]


def test_view_without_trust_checks_chain_and_tree_only(world: World) -> None:
    with open_ledger(world.url, create=False) as led:
        view = VerifiedView(led, UNSAFE_SKIP_SIGNATURES)
        assert view.size() == led.size() and view.head().root == led.head().root
        assert view.record(0).stage == "ingest"


def test_a_read_that_fails_half_way_leaves_the_view_as_it_was(world: World) -> None:
    """The ledger connection drops while the tail is read: nothing half-read stays, and the
    next refresh reads the same entries again into the same state as a fresh view."""
    from mlseal.errors import InfrastructureError

    class Flaky:
        def __init__(self, led: Ledger) -> None:
            self._led = led
            self.fail_after: int | None = None

        def __getattr__(self, name: str) -> Any:
            return getattr(self._led, name)

        def entries(self, start: int, end: int) -> Any:
            for n, row in enumerate(self._led.entries(start, end)):
                if self.fail_after is not None and n >= self.fail_after:
                    raise InfrastructureError("ledger: connection lost")
                yield row

    with open_ledger(world.url) as led:
        flaky = Flaky(led)
        view = VerifiedView(flaky, world.trust)
        size = view.size()
        for _ in range(3):
            build_lineage(led, world.signer, f"more{_}")
        flaky.fail_after = 5
        with pytest.raises(InfrastructureError):
            view.refresh()
        assert view.failure is None and view.size() == size and view.head().root == led.root(size)
        flaky.fail_after = None
        assert view.refresh() == led.size() - size
        fresh = VerifiedView(led, world.trust)
        assert view.head() == fresh.head()
        assert view.producers_of(world.model.sha256) == fresh.producers_of(world.model.sha256)
        assert [view.entry(s) for s in range(view.size())] == [led.entry(s) for s in range(led.size())]
