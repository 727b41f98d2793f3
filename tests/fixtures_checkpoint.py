"""Helpers for the rollback/fork tests: a ledger with a record key and a checkpoint key, and
what an attacker with write access to a SQLite ledger file does to it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from mlseal.ledger import Appended, open_ledger
from mlseal.ledger.record import RecordDraft
from mlseal.signing.keys import LocalKeySigner
from mlseal.signing.trust import TrustRoot

RECORD_KEY = LocalKeySigner.generate()
CHECKPOINT_KEY = LocalKeySigner.generate()
TRUST = TrustRoot.of(RECORD_KEY.verifier("pipeline"), checkpoint_keys=(CHECKPOINT_KEY.verifier("witness"),))


@dataclass
class Sqlite:
    path: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def append(self, n: int = 1, stage: str = "ingest") -> list[Appended]:
        with open_ledger(self.url) as led:
            return [led.append(RecordDraft(stage=stage), RECORD_KEY, signer_name="pipeline") for _ in range(n)]

    def truncate(self, size: int) -> None:
        """Remove records ``size..`` and the Merkle nodes that cover them (a rollback)."""
        with sqlite3.connect(self.path) as c:
            c.execute("DELETE FROM mlseal_entries WHERE seq >= ?", (size,))
            c.execute("DELETE FROM mlseal_nodes WHERE ((idx + 1) << level) > ?", (size,))
            c.execute("DELETE FROM mlseal_digests WHERE seq >= ?", (size,))

    def fork_last(self, stage: str = "train") -> Appended:
        """Replace the last record by a different, validly signed one (nodes rebuilt to match)."""
        with open_ledger(self.url) as led:
            size = led.size()
        self.truncate(size - 1)
        return self.append(1, stage=stage)[0]

    def clear_checkpoints(self) -> None:
        with sqlite3.connect(self.path) as c:
            c.execute("DELETE FROM mlseal_checkpoints")


def rewrite(path: Path, seq: int, entry: bytes) -> None:
    """Replace entry ``seq`` by ``entry`` and rebuild every Merkle node from the entries, as an
    attacker with write access would (the chain is not re-linked: stages do not read it)."""
    import hashlib

    from mlseal.ledger import merkle

    with sqlite3.connect(path) as c:
        c.execute("UPDATE mlseal_entries SET entry = ?, entry_hash = ? WHERE seq = ?",
                  (entry, hashlib.sha256(entry).digest(), seq))
        entries = [bytes(r[0]) for r in c.execute("SELECT entry FROM mlseal_entries ORDER BY seq")]
        c.execute("DELETE FROM mlseal_nodes")
        nodes: dict[tuple[int, int], bytes] = {}
        for i, e in enumerate(entries):
            siblings = {k: nodes[k] for k in merkle.append_coords(i)}
            for level, idx, h in merkle.append_nodes(i, merkle.leaf_hash(e), siblings):
                nodes[(level, idx)] = h
        c.executemany("INSERT INTO mlseal_nodes (level, idx, hash) VALUES (?, ?, ?)",
                      [(lv, ix, h) for (lv, ix), h in nodes.items()])


def signed_entry(seq: int, prev: str, stage: str = "ingest", signer: LocalKeySigner = RECORD_KEY) -> bytes:
    """A validly signed entry for position ``seq`` (what a holder of a record key can make)."""
    from mlseal.ledger.entry import build_entry
    from mlseal.ledger.record import SignerRef

    rec = RecordDraft(stage=stage).complete(seq=seq, prev=prev, time="2026-01-01T00:00:00.000000Z",
                                            signer=SignerRef("pipeline", signer.key_id))
    return build_entry(rec, signer)
