"""The witness: extend the chain of signed checkpoints, refusing a rolled-back or forked log.

`witness` (the engine of ``mlseal ledger witness``) starts from the checkpoints it can
trust: its own last accepted one (a state file it keeps) and the newest stored checkpoint
whose signature verifies against the trust file's ``checkpoint_keys`` (stored ones that do
not verify are ignored and reported). From the largest of them it verifies the entries
appended since, exactly as ``mlseal ledger verify --from-checkpoint`` does (signatures,
grants, hash chain, seq, and the Merkle root the new entries give, which is the proof
that the current tree extends the checkpoint); every other checkpoint it holds must be
extended too (`checkpoint.prove_consistency`). Then it signs a checkpoint of the
verified tree with the checkpoint key, stores it in the ledger and in its state file.

A log that does not extend what the witness accepted (fewer records: truncated or rolled
back; other records at the same positions: forked) is refused with `RollbackError`
naming both tree heads, and nothing is signed or stored.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlseal.errors import ConfigurationError
from mlseal.ledger.checkpoint import (
    Checkpoint,
    RollbackError,
    Trusted,
    ecdsa_key_hash,
    expected_origin,
    newest_stored,
    prove_consistency,
    sign_checkpoint,
    tree_text,
    verify_notes,
)

if TYPE_CHECKING:
    from mlseal.ledger import Ledger
    from mlseal.ledger.verify import Report
    from mlseal.signing.keys import Signer
    from mlseal.signing.trust import TrustRoot

__all__ = ["ATTEMPTS", "Witnessed", "read_state", "run_witness", "witness", "write_state"]

#: appends racing the witness's read make storage report more entries than its head said
ATTEMPTS = 3


@dataclass(frozen=True)
class Witnessed:
    """What a witness run accepted and signed."""

    old: Checkpoint | None  # the checkpoint it started from (None: first run, whole log verified)
    new: Checkpoint
    note: bytes
    stored: bool  # False when the newest stored checkpoint already covers this tree
    checked: int  # entries verified
    skipped: tuple[str, ...] = ()  # stored checkpoints ignored (not verifiable)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "old": self.old.to_json() if self.old else None,
            "new": self.new.to_json(),
            "stored": self.stored,
            "checked": self.checked,
            "skipped": list(self.skipped),
            "checkpoint": self.note.decode(),
        }


def read_state(path: Path) -> bytes | None:
    """The last checkpoint this witness accepted (None: no state yet); `ConfigurationError`
    when its directory does not exist (the state could never be written)."""
    if not path.parent.is_dir():
        raise ConfigurationError(f"--state {path}: directory {path.parent} does not exist")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"cannot read the witness state {path}: {exc.strerror}") from None
    return data or None


def write_state(path: Path, note: bytes) -> None:
    """Replace the state file atomically (a crash leaves the old or the new note, never half)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(note)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def witness(led: Ledger, trust: TrustRoot, signer: Signer, *, state: bytes | None = None,
            origin: str | None = None) -> Witnessed:
    """One witness run (see the module docstring); `RollbackError` on a rollback or fork,
    `VerificationError` when the new entries do not verify."""
    from mlseal.ledger.verify import verify_ledger

    origin = expected_origin(trust, origin)
    if ecdsa_key_hash(signer.public_key()) not in {ecdsa_key_hash(v.key) for v in trust.checkpoint_keys.values()}:
        raise ConfigurationError(
            f"the witness's signing key {signer.key_id[:16]}… is not in checkpoint_keys of the trust file "
            f"{trust.source}: the checkpoints it signs would not verify; list its public key there"
        )
    known = verify_notes([state] if state else [], trust, origin=origin, where="witness state")
    report: Report | None = None
    for _ in range(ATTEMPTS):
        stored, skipped = newest_stored(led, trust, origin=origin)
        held = known + ([stored] if stored else [])
        anchor = max(held, key=lambda t: t.checkpoint.size, default=None)
        head = led.head()
        for t in held:
            prove_consistency(led, t.checkpoint, head)
        cp = anchor.checkpoint if anchor else None
        report = verify_ledger(led, trust, checkpoint=cp, from_checkpoint=cp is not None)
        if report.ok or not _raced(report, head.size):
            break
    assert report is not None
    if not report.ok:
        first = report.problems[0].detail if report.problems else "verification failed"
        if anchor is not None and any(p.kind == "checkpoint" for p in report.problems):
            raise RollbackError(
                f"the ledger ({tree_text(report.size, report.root)}) does not extend the accepted checkpoint "
                f"({tree_text(anchor.checkpoint.size, anchor.checkpoint.root)}): {first}"
            )
        from mlseal.errors import VerificationError

        raise VerificationError(f"the ledger does not verify, refusing to sign a checkpoint: {first}")
    new = Checkpoint(origin=origin, size=report.size, root=report.root)
    if stored is not None and stored.checkpoint == new and _signed_by(stored, signer):
        # nothing new since this witness's stored checkpoint: do not store it again
        return Witnessed(old=cp, new=new, note=stored.note, stored=False, checked=report.checked,
                         skipped=tuple(skipped))
    note = sign_checkpoint(new, signer)
    led.add_checkpoint(note)
    return Witnessed(old=cp, new=new, note=note, stored=True, checked=report.checked, skipped=tuple(skipped))


def run_witness(led: Ledger, trust: TrustRoot, signer: Signer, *, state_path: Path | None = None,
                origin: str | None = None) -> Witnessed:
    """`witness`, starting from (and, on success, replacing) the state file at ``state_path``
    (``ledger witness --state``): what this witness accepted before must be extended."""
    state = read_state(state_path) if state_path is not None else None
    done = witness(led, trust, signer, state=state, origin=origin)
    if state_path is not None:
        write_state(state_path, done.note)
    return done


def _raced(report: Report, head_size: int) -> bool:
    """Only problem: appends landed after the head was read (more entries than it said)."""
    return all(p.kind == "size" for p in report.problems) and report.size > head_size


def _signed_by(t: Trusted, signer: Signer) -> bool:
    from mlseal.ledger.checkpoint import parse_checkpoint

    kh = ecdsa_key_hash(signer.public_key())
    return any(s.key_hash == kh for s in parse_checkpoint(t.note)[2])
