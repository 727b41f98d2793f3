"""Many writers form one chain; kill -9 never loses an acknowledged append or breaks the log."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from typing import Any

import pytest

from mlseal.errors import InfrastructureError
from mlseal.ledger import open_ledger
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.record import RecordDraft
from mlseal.ledger.verify import verify_ledger
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot

_ctx = multiprocessing.get_context("fork")


def _writer(url: str, pem: bytes, worker: int, count: int, fd: int | None) -> None:
    signer = LocalKeySigner.from_pem(pem)
    with open_ledger(url) as led:
        for i in range(count):
            a = led.append(RecordDraft(stage="process", params={"w": worker, "i": i}), signer,
                           signer_name="pipeline")
            if fd is not None:  # acknowledge only after append() returned
                os.write(fd, f"{a.entry_hash}\n".encode())


def _run(target: Any, *args: Any) -> Any:
    p = _ctx.Process(target=target, args=args)
    p.start()
    return p


@pytest.mark.slow
def test_concurrent_writers_form_one_chain(
    ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot
) -> None:
    open_ledger(ledger_url).close()  # create the schema once, so writers race only on appends
    workers, count = 8, 100
    pem = ledger_signer.private_pem()
    procs = [_run(_writer, ledger_url, pem, w, count, None) for w in range(workers)]
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with open_ledger(ledger_url) as led:
        report = verify_ledger(led, ledger_trust)
        assert report.ok, report.problems[:3]
        assert report.size == workers * count
        seen = set()
        for seq, entry in led.entries():
            rec = parse_entry(entry, ledger_trust)
            assert rec.seq == seq
            seen.add((rec.params["w"], rec.params["i"]))
        assert seen == {(w, i) for w in range(workers) for i in range(count)}  # none lost, none twice


@pytest.mark.slow
def test_kill_9_during_appends(ledger_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot) -> None:
    open_ledger(ledger_url).close()
    pem = ledger_signer.private_pem()
    rng = random.Random(1)
    acknowledged: set[str] = set()
    trials = 50
    for _ in range(trials):
        r, w = os.pipe()
        procs = [_run(_writer, ledger_url, pem, k, 10_000, w) for k in range(3)]
        os.close(w)
        time.sleep(rng.uniform(0.01, 0.12))
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.join()
        with os.fdopen(r, "rb") as f:
            lines = f.read().split(b"\n")
        # a line cut short by the kill was never a complete acknowledgement
        acknowledged |= {line.decode() for line in lines if len(line) == 64}
    with open_ledger(ledger_url) as led:
        report = verify_ledger(led, ledger_trust)
        assert report.ok, report.problems[:3]
        missing = [h for h in acknowledged if led.find_entry(h) is None]
        assert not missing, f"{len(missing)} acknowledged appends lost"
        assert report.size >= len(acknowledged) > 0
        # and the ledger still takes appends
        led.append(RecordDraft(stage="process"), ledger_signer, signer_name="pipeline")
        assert verify_ledger(led, ledger_trust).ok


class _FlakyConnection:
    """Wraps a psycopg connection; the round trip carrying its next COMMIT is lost, like a
    dropped network link: with ``after_commit`` the server committed, else it did not."""

    def __init__(self, real: Any, *, after_commit: bool) -> None:
        self._real, self._after = real, after_commit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def execute(self, query: Any, *a: Any, **kw: Any) -> Any:
        commit = isinstance(query, str) and "COMMIT;" in query
        if commit and not self._after:
            query = query.replace("COMMIT;", "ROLLBACK;")
        result = self._real.execute(query, *a, **kw)
        if commit:
            self._drop()
        return result

    def _drop(self) -> None:
        import psycopg

        self._real.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly")


@pytest.mark.postgres
@pytest.mark.parametrize("committed", [True, False])
def test_postgres_ambiguous_commit_never_duplicates(
    pg_url: str, ledger_signer: LocalKeySigner, ledger_trust: TrustRoot, committed: bool
) -> None:
    with open_ledger(pg_url) as led:
        led.append(RecordDraft(stage="ingest"), ledger_signer, signer_name="pipeline")
        store: Any = led._store
        store._db = _FlakyConnection(store._db, after_commit=committed)
        a = led.append(RecordDraft(stage="process"), ledger_signer, signer_name="pipeline")
        assert a.seq == 1
        assert led.size() == 2
        assert led.find_entry(a.entry_hash) == 1
        assert verify_ledger(led, ledger_trust).ok


@pytest.mark.postgres
def test_postgres_connection_lost_for_good(pg_url: str, ledger_signer: LocalKeySigner) -> None:
    with open_ledger(pg_url) as led:
        store: Any = led._store
        store._url = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"
        store._db = _FlakyConnection(store._db, after_commit=False)
        with pytest.raises(InfrastructureError):
            led.append(RecordDraft(stage="process"), ledger_signer, signer_name="pipeline")


@pytest.mark.postgres
def test_postgres_append_is_flushed_before_it_returns(pg_url: str, ledger_signer: LocalKeySigner) -> None:
    import psycopg

    with open_ledger(pg_url) as led, psycopg.connect(pg_url, autocommit=True) as probe:
        store: Any = led._store
        for _ in range(20):
            led.append(RecordDraft(stage="process"), ledger_signer, signer_name="pipeline")
            flushed = probe.execute(
                "SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (store.last_commit_lsn,)
            ).fetchone()
            assert flushed is not None and flushed[0], "append returned before its commit was on disk"
