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
