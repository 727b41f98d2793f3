"""The webhook decides from its verified view and follows the ledger's tail.

Over real TLS: a newer failed evaluation appended while serving is seen within a refresh
tick; a rollback or fork of the ledger while serving denies every model with the named
reason, for good; an unreachable ledger keeps the last verified state for
``max_staleness`` seconds, then denies ``ledger_unavailable``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mlseal.admission import load_policy
from mlseal.errors import InfrastructureError
from mlseal.ledger import open_ledger
from mlseal.ledger.record import RecordDraft, Status
from tests.fixtures_admission import isvc, review
from tests.test_verified_view import World, evaluate, truncate
from tests.test_verified_view import world as world  # the fixture


def _until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _response(hook: Any, world: World) -> dict[str, Any]:
    out: dict[str, Any] = hook.validate(review(isvc(world.model)))["response"]
    return out


def test_newer_failed_evaluation_is_seen_within_a_refresh(webhook_factory: Any, world: World) -> None:
    hook = webhook_factory(load_policy(world.dir / "policy.yaml"), cache_size=0)
    assert _response(hook, world)["allowed"] is True
    with open_ledger(world.url) as led:
        seq = evaluate(led, world.signer, world.model, 0.95, status=Status.FAILED)
    size = seq + 1
    view = hook.controller.view
    _until(lambda: view.size() == size, "the view never read the new entry")
    r = _response(hook, world)
    assert r["allowed"] is False and f"record {seq}" in r["status"]["message"], r


def test_cached_decision_follows_the_view(webhook_factory: Any, world: World) -> None:
    hook = webhook_factory(load_policy(world.dir / "policy.yaml"))
    assert _response(hook, world)["allowed"] is True
    assert _response(hook, world)["allowed"] is True  # a cache hit
    with open_ledger(world.url) as led:
        evaluate(led, world.signer, world.model, 0.2)
    _until(lambda: _response(hook, world)["allowed"] is False, "a cached allow outlived the failed evaluation")


def test_rollback_while_serving_denies_every_model_for_good(webhook_factory: Any, world: World) -> None:
    hook = webhook_factory(load_policy(world.dir / "policy.yaml"))
    assert _response(hook, world)["allowed"] is True
    truncate(world.url, hook.controller.view.size() - 2)
    _until(lambda: hook.controller.view.failure is not None, "the rollback was not noticed")
    r = _response(hook, world)
    assert r["allowed"] is False and "rolled back" in r["status"]["message"], r
    assert hook.controller.metrics.decisions.value("denied", "ledger_rolled_back") >= 1
    # appending past the old size does not bring it back
    with open_ledger(world.url) as led:
        for _ in range(4):
            led.append(RecordDraft(stage="ingest"), world.signer, signer_name="pipeline")
    time.sleep(0.3)
    r = _response(hook, world)
    assert r["allowed"] is False and "rolled back" in r["status"]["message"], r
    assert hook.request("GET", "/readyz")[0] == 200  # ready: its denials name the reason


def test_fork_while_serving_denies_with_the_reason(webhook_factory: Any, world: World) -> None:
    hook = webhook_factory(load_policy(world.dir / "policy.yaml"))
    assert _response(hook, world)["allowed"] is True
    size = hook.controller.view.size()
    truncate(world.url, size - 1)
    with open_ledger(world.url) as led:  # a validly signed, different last record
        led.append(RecordDraft(stage="ingest", params={"fork": 1}), world.signer, signer_name="pipeline")
    _until(lambda: hook.controller.view.failure is not None, "the fork was not noticed")
    r = _response(hook, world)
    assert r["allowed"] is False and "forked" in r["status"]["message"], r
    assert hook.controller.metrics.decisions.value("denied", "ledger_forked") >= 1


class Switchable:
    """A ledger whose reads fail while ``down`` is set (an unreachable database)."""

    down = False

    def __init__(self, url: str) -> None:
        self._led = open_ledger(url, create=False)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._led, name)
        if name in ("head", "size", "entries", "entry", "root") and Switchable.down:
            raise InfrastructureError("ledger postgresql://db/x: connection refused")
        return attr


def test_unreachable_ledger_keeps_the_last_verified_state_then_denies(webhook_factory: Any, world: World) -> None:
    def factory() -> Any:
        if Switchable.down:
            raise InfrastructureError("ledger postgresql://db/x: connection refused")
        return Switchable(world.url)

    Switchable.down = False
    try:
        hook = webhook_factory(load_policy(world.dir / "policy.yaml"), ledger_factory=factory, cache_size=0,
                               max_staleness=1.0)
        assert _response(hook, world)["allowed"] is True
        Switchable.down = True
        t = time.monotonic()
        # within the staleness bound: decided from the last verified state
        assert _response(hook, world)["allowed"] is True
        _until(lambda: _response(hook, world)["allowed"] is False, "a stale view kept allowing", timeout=10)
        assert time.monotonic() - t >= 0.8
        r = _response(hook, world)
        assert "could not be read" in r["status"]["message"] and "connection refused" in r["status"]["message"]
        assert hook.controller.metrics.decisions.value("denied", "ledger_unavailable") >= 1
        Switchable.down = False
        _until(lambda: _response(hook, world)["allowed"] is True, "the view did not recover")
    finally:
        Switchable.down = False


class Counting:
    """A ledger that counts every call made to it after ``armed`` is set."""

    def __init__(self, url: str) -> None:
        self._led = open_ledger(url, create=False)
        self.armed = False
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if self.armed:
            self.calls.append(name)
        return getattr(self._led, name)


def test_decisions_never_read_the_ledger(world: World) -> None:
    """Once the view is built, reviews (cached or not, allowed or denied) make no ledger call
    at all: the one connection belongs to the follower."""
    import json

    from mlseal.admission.webhook import AdmissionController, DecisionCache

    opened: list[Counting] = []

    def factory() -> Any:
        opened.append(Counting(world.url))
        return opened[-1]

    c = AdmissionController(load_policy(world.dir / "policy.yaml"), ledger_factory=factory, cache=DecisionCache(0))
    body = json.dumps(review(isvc(world.model))).encode()
    assert c.review(body)[1]["response"]["allowed"] is False  # before the view is built: denied, no ledger read
    assert opened == []
    c.follow()
    opened[0].armed = True
    for _ in range(3):
        assert c.review(body)[1]["response"]["allowed"] is True
    assert c.review(b"not json")[0] == 400
    assert opened[0].calls == [] and len(opened) == 1


def test_entries_rewritten_after_verification_are_not_believed(tmp_path: Any) -> None:
    """The controller keeps the records it verified: editing stored entries afterwards (a
    forged metric, a re-signed record) changes no decision; a fresh view (a restart) sees
    the edits as tampering."""
    import json

    from mlseal.admission import decide
    from mlseal.admission.webhook import AdmissionController, DecisionCache
    from tests.fixtures_admission import make_world, resign_entry, tamper_metrics

    w = make_world(tmp_path)
    c = AdmissionController(w.policy, ledger_factory=lambda: open_ledger(w.ledger_url, create=False),
                            cache=DecisionCache(0))
    c.follow()
    good = json.dumps(review(isvc(w.models["good"]))).encode()
    low = json.dumps(review(isvc(w.models["lowacc"]))).encode()
    assert c.review(good)[1]["response"]["allowed"] is True
    tamper_metrics(w.ledger_url, w.models["good"].seqs["evaluate"], accuracy=0.1)
    resign_entry(w.ledger_url, w.models["lowacc"].seqs["evaluate"], w.signer,
                 metrics={"accuracy": 0.99, "robust_accuracy": 0.99})
    c.follow()
    assert c.review(good)[1]["response"]["allowed"] is True
    out = c.review(low)[1]["response"]
    assert out["allowed"] is False and "accuracy = 0.52" in out["status"]["message"]
    fresh = decide(isvc(w.models["good"]), w.policy)
    assert not fresh.allowed and any("ledger tampering" in r for r in fresh.reasons), fresh.reasons
    fresh = decide(isvc(w.models["lowacc"]), w.policy)
    assert not fresh.allowed and any("prev" in r for r in fresh.reasons), fresh.reasons
