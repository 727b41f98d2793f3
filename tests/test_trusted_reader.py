"""One trusted-record reader: stage input checks, admission and trace give one answer.

Each test is an attack that worked while the three callers chose their records three
ways (newest without the successor-link check, newest with it, earliest) and admission
skipped failed evaluations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlseal.admission import decide, load_policy
from mlseal.admission.engine import _trusted_producer
from mlseal.ledger import open_ledger, trusted
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.lineage import trace
from mlseal.ledger.protocols import LedgerWriter
from mlseal.ledger.record import Component, InputRef, Record, RecordDraft, Sha256Hex, Status
from mlseal.ledger.recordcache import VerifiedRecords
from mlseal.ledger.trusted import TooManyRecords, TrustedReader
from mlseal.signing.digest import digest_path
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot
from mlseal.stage import InputRefused, Stage
from tests.fixtures_admission import build_lineage, isvc, resign_entry, write_policy
from tests.fixtures_pipeline import SealedEnv


def _world(d: Path) -> tuple[str, LocalKeySigner]:
    signer = LocalKeySigner.generate()
    signer.save(d / "keys" / "pipeline.pem", d / "keys" / "pipeline.pub.pem")
    (d / "trust.yaml").write_text("signers:\n  - name: pipeline\n    public_key: keys/pipeline.pub.pem\n")
    write_policy(d)
    return "sqlite:///" + str(d / "ledger.db"), signer


def _evaluate(led: LedgerWriter, signer: LocalKeySigner, model_sha: str, model_uri: str, *,
              status: Status, metrics: dict[str, float] | None = None) -> int:
    inp = InputRef(name="model", uri=model_uri, sha256=Sha256Hex(model_sha))
    draft = RecordDraft(stage="evaluate", component=Component(name="evaluate"), inputs=(inp,),
                        metrics=metrics or {}, status=status)
    return int(led.append(draft, signer, signer_name="pipeline").seq)


# (a) a newer failed evaluation supersedes an older pass

def test_newer_failed_evaluation_denies_admission(tmp_path: Path) -> None:
    url, signer = _world(tmp_path)
    with open_ledger(url) as led:
        model = build_lineage(led, signer, "m")  # passes every gate
        policy = load_policy(tmp_path / "policy.yaml")
        assert decide(isvc(model), policy, ledger=led).allowed
        failed = _evaluate(led, signer, model.sha256, model.uri, status=Status.FAILED)
        build_lineage(led, signer, "tail")
        d = decide(isvc(model), policy, ledger=led)
        assert not d.allowed
        assert any(f"record {failed}" in r and "failed" in r and "supersedes" in r for r in d.reasons), d.reasons
        latest = TrustedReader(led, policy.trust).latest_evaluation(model.sha256).record
        assert latest is not None and latest.seq == failed


def test_newer_evaluation_with_a_broken_successor_link_does_not_decide(tmp_path: Path) -> None:
    """A re-signed (edited) newer evaluation is skipped, reported, and the model denied."""
    url, signer = _world(tmp_path)
    with open_ledger(url) as led:
        model = build_lineage(led, signer, "m", metrics={"accuracy": 0.1, "robust_accuracy": 0.1})
        newer = _evaluate(led, signer, model.sha256, model.uri, status=Status.FAILED)
        build_lineage(led, signer, "tail")
    # a trusted key turns the failed evaluation into a pass; its successor's prev no longer matches
    resign_entry(url, newer, signer, status=Status.OK, metrics={"accuracy": 0.99, "robust_accuracy": 0.99})
    with open_ledger(url) as led:
        policy = load_policy(tmp_path / "policy.yaml")
        d = decide(isvc(model), policy, ledger=led)
        assert not d.allowed
        assert any(f"entry {newer} was altered" in r for r in d.reasons), d.reasons


# (b) the three callers agree

def _produce(env: SealedEnv, path: Path, text: str) -> int:
    with Stage("ingest", name="ingest", sealing=env.sealing) as st:
        st.output("raw", path, media_type="text/csv").write_text(text)
    assert st.result is not None
    return int(st.result.seq)


def _stage_producer(env: SealedEnv, path: Path, bundle: bytes | None = None) -> int:
    with Stage("process", name="p", sealing=env.sealing) as st:
        got = st.input("raw", path, bundle=bundle)
        st.output("o", env.root / f"o{env.ledger.size()}").write_text(got.read_text() + "consumed\n")
    return int(st.inputs[0].producer_seq)


def _answers(env: SealedEnv, path: Path, bundle: bytes | None = None) -> tuple[int, int, int]:
    digest = digest_path(path)
    rec, findings = _trusted_producer(TrustedReader(env.ledger, env.trust), env.ledger, digest, "model")
    assert rec is not None, findings
    lin = trace(env.ledger, digest, env.trust)
    assert lin.producer is not None, lin.problems
    return _stage_producer(env, path, bundle), rec.seq, lin.producer.seq


def test_three_callers_pick_the_newest_trusted_producer(sealed_env: SealedEnv) -> None:
    env = sealed_env
    raw = env.root / "raw.csv"
    _produce(env, raw, "a\n1\n")
    second = _produce(env, raw, "a\n1\n")  # the same bytes recorded again
    assert _answers(env, raw) == (second, second, second)


def test_three_callers_skip_a_producer_whose_successor_link_is_broken(sealed_env: SealedEnv) -> None:
    env = sealed_env
    raw = env.root / "raw.csv"
    first = _produce(env, raw, "a\n1\n")
    first_bundle = raw.with_name("raw.csv.sig").read_bytes()
    second = _produce(env, raw, "a\n1\n")
    _produce(env, env.root / "tail.csv", "t\n")
    # a trusted key edits and re-signs the newer record; its successor's prev does not follow
    resign_entry(env.ledger_url, second, env.signer, params={"edited": True})
    assert _answers(env, raw, first_bundle) == (first, first, first)
    # with the newer record's bundle, the stage refuses: the deciding record bound another one
    if raw.with_name("raw.csv.sig").read_bytes() != first_bundle:
        with pytest.raises(InputRefused, match=f"record {first} bound bundle"):
            _stage_producer(env, raw)


# (c) one cap on the candidates examined

def test_too_many_candidate_records_are_refused(sealed_env: SealedEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env = sealed_env
    raw = env.root / "raw.csv"
    for _ in range(4):
        _produce(env, raw, "a\n1\n")
    monkeypatch.setattr(trusted, "MAX_CANDIDATES", 3)
    sha = digest_path(raw)
    with pytest.raises(TooManyRecords, match=r"4 ledger records name sha256 .* more than the 3"):
        TrustedReader(env.ledger, env.trust).producer_of(sha)
    with pytest.raises(InputRefused, match="more than the 3"):
        _stage_producer(env, raw)
    rec, findings = _trusted_producer(TrustedReader(env.ledger, env.trust), env.ledger, sha, "model")
    assert rec is None and any("more than the 3" in f.message for f in findings)
    lin = trace(env.ledger, sha, env.trust)
    assert lin.producer is None and any(p.kind == "limit" for p in lin.problems)
    monkeypatch.setattr(trusted, "MAX_CANDIDATES", 4)
    assert TrustedReader(env.ledger, env.trust).producer_of(sha).record is not None


def test_too_many_evaluations_deny_admission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, signer = _world(tmp_path)
    with open_ledger(url) as led:
        model = build_lineage(led, signer, "m")
        for _ in range(3):
            _evaluate(led, signer, model.sha256, model.uri, status=Status.OK,
                      metrics={"accuracy": 0.99, "robust_accuracy": 0.99})
        build_lineage(led, signer, "tail")
        monkeypatch.setattr(trusted, "MAX_CANDIDATES", 3)
        d = decide(isvc(model), load_policy(tmp_path / "policy.yaml"), ledger=led)
        assert not d.allowed and any("more than the 3" in r for r in d.reasons), d.reasons


def test_shared_cache_still_fills_and_is_reused(tmp_path: Path) -> None:
    """Readers build a verified view of every entry; a shared cache makes the second build
    check no signature again."""
    url, signer = _world(tmp_path)
    with open_ledger(url) as led:
        model = build_lineage(led, signer, "m")
        build_lineage(led, signer, "tail")
        policy = load_policy(tmp_path / "policy.yaml")
        cache = VerifiedRecords()
        parsed: list[bytes] = []

        def parse(data: bytes, trust: TrustRoot) -> Record:
            parsed.append(data)
            return parse_entry(data, trust)

        assert TrustedReader(led, policy.trust, cache, parse=parse).producer_of(model.sha256).record is not None
        assert len(cache) == led.size() == len(parsed)
        assert TrustedReader(led, policy.trust, cache, parse=parse).producer_of(model.sha256).record is not None
        assert len(cache) == led.size() == len(parsed)


def test_the_same_bytes_recorded_twice_keep_both_bundles_valid(sealed_env: SealedEnv) -> None:
    """The newest producer decides; a bundle an older verified producer bound to the same bytes
    still verifies them (deterministic outputs recorded at two places)."""
    env = sealed_env
    a, b = env.root / "a.csv", env.root / "b.csv"
    _produce(env, a, "same\n")
    newest = _produce(env, b, "same\n")
    assert a.with_name("a.csv.sig").read_bytes() != b.with_name("b.csv.sig").read_bytes()
    assert _stage_producer(env, a) == newest
    forged = env.root / "forged.sig"
    forged.write_bytes(b"{}")
    with pytest.raises(InputRefused, match="bound bundle"):
        _stage_producer(env, a, forged.read_bytes())


def test_three_callers_agree_when_an_older_producers_successor_link_is_broken(sealed_env: SealedEnv) -> None:
    env = sealed_env
    raw = env.root / "raw.csv"
    first = _produce(env, raw, "a\n1\n")
    second = _produce(env, raw, "a\n1\n")
    _produce(env, env.root / "tail.csv", "t\n")
    resign_entry(env.ledger_url, first, env.signer, params={"edited": True})
    assert _answers(env, raw) == (second, second, second)
    lin = trace(env.ledger, digest_path(raw), env.trust)
    assert lin.producer is not None and lin.producer.seq == second
