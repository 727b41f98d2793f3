"""The checkpoint a reader holds: where it comes from, its signature, and the state a
long-running reader keeps.

A hash-chained log can be cut short (rolled back) or rewritten (forked) by whoever
controls its storage, and the same person can delete the stored checkpoints, so the
ledger alone then shows nothing wrong. A reader that holds a signed checkpoint it
accepted before requires the ledger it reads now to extend it. `mlseal admit`,
`mlseal fetch`, `mlseal ledger trace` and `mlseal webhook serve` take it the same way
(`load_checkpoint`):

- ``--checkpoint FILE``: a file holding the signed note (what `mlseal ledger witness
  --state` keeps, or `mlseal ledger checkpoint --out` writes);
- else the environment variable ``MLSEAL_CHECKPOINT``: a value that contains a newline
  (before its end) is the note's text itself (a signed note always has several lines;
  a Kubernetes pod receives it so), any other value is the path of a file holding it
  (how `mlseal demo`'s ``mlseal.env`` sets it). A final newline the text lost
  (``$(cat FILE)``) is restored. Unset or empty: no checkpoint.

The note must verify against the trust file's ``checkpoint_keys`` (with the expected
origin); one that does not is an error naming where it came from, never ignored. The
ledger is then checked against it by `mlseal.ledger.verified.VerifiedView.require`,
which holds every leaf: a ledger with fewer records fails ``ledger_rolled_back``, one
with other records at those positions ``ledger_forked``.

The webhook keeps what its view accepted in a `CheckpointState` file, replaced
atomically whenever a newer signed checkpoint is accepted, and requires it again when
it starts.

    >>> import tempfile, pathlib
    >>> from mlseal.ledger.checkpoint import Checkpoint, sign_checkpoint
    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing.trust import TrustRoot
    >>> key = LocalKeySigner.generate()
    >>> trust = TrustRoot(checkpoint_keys={key.key_id: key.verifier()})
    >>> note = sign_checkpoint(Checkpoint("mlseal.local/ledger", 3, bytes(32)), key)
    >>> load_checkpoint(trust, env={ENV_VAR: note.decode()}).checkpoint.size
    3
    >>> load_checkpoint(trust, env={}) is None
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mlseal.errors import ConfigurationError
from mlseal.ledger.checkpoint import CheckpointError, Trusted, expected_origin, parse_checkpoint, verify_checkpoint
from mlseal.ledger.unsafe import Trust, trust_root
from mlseal.signing.trust import TrustRoot

#: the environment variable `load_checkpoint` reads when no file is given
ENV_VAR = "MLSEAL_CHECKPOINT"
#: a checkpoint note is a few hundred bytes; a larger file is not one
MAX_NOTE = 64 * 1024

_FIX = ("pass the note the witness signed (its --state file, or `mlseal ledger checkpoint --out`), and a trust file "
        "whose checkpoint_keys list the witness's key")


def _read(path: Path, source: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_NOTE + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the checkpoint from {source}: {exc.strerror or exc}") from None
    if len(data) > MAX_NOTE:
        raise CheckpointError(f"the checkpoint from {source} is larger than {MAX_NOTE} bytes: it is not a "
                              f"checkpoint note; {_FIX}")
    return data


def read_note(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
              option: str = "--checkpoint") -> tuple[bytes, str] | None:
    """The configured checkpoint note and where it came from (for messages), or None.

    ``path`` (``--checkpoint FILE``) wins; else ``env[MLSEAL_CHECKPOINT]`` (default:
    ``os.environ``) by the module's rule: with a newline, the note's text; otherwise a path.
    ``option`` names the file's command-line option in messages.
    """
    if path is not None:
        source = f"{option} {path}"
        return _read(Path(path), source), source
    value = (os.environ if env is None else env).get(ENV_VAR, "")
    if not value.strip():
        return None
    if "\n" in value.rstrip("\n"):
        text = value if value.endswith("\n") else value + "\n"
        return text.encode(), f"${ENV_VAR} (the note's text)"
    value = value.rstrip("\n")  # a path read from a file keeps its newline
    source = f"${ENV_VAR}={value}"
    return _read(Path(value), source), source


def verify_held(note: bytes, trust: Trust, *, source: str, origin: str | None = None) -> Trusted:
    """The note as a `Trusted` checkpoint from ``source``, its signature verified against
    ``trust.checkpoint_keys`` (`CheckpointError` naming the source and the fix otherwise).

    `UNSAFE_SKIP_SIGNATURES` (``ledger trace`` or ``ledger consistency`` without a trust
    file) checks only its form and origin; the caller says that its signature was not checked.
    """
    root = trust_root(trust, "verify_held")
    try:
        if root is None:
            cp = parse_checkpoint(note)[0]
            want = expected_origin(None, origin)
            if cp.origin != want:
                raise CheckpointError(f"checkpoint is for origin {cp.origin!r}, expected {want!r}")
        else:
            cp = verify_checkpoint(note, root, origin=origin)
    except CheckpointError as exc:
        raise CheckpointError(f"the checkpoint from {source} cannot be used: {exc}; {_FIX}") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"the checkpoint from {source} cannot be verified: {exc}") from None
    return Trusted(cp, note, source)


def load_checkpoint(trust: Trust, *, path: str | os.PathLike[str] | None = None,
                    env: Mapping[str, str] | None = None, origin: str | None = None) -> Trusted | None:
    """The checkpoint configured by ``--checkpoint FILE`` or ``$MLSEAL_CHECKPOINT``, verified
    (`read_note`, `verify_held`); None when none is configured."""
    got = read_note(path, env=env)
    if got is None:
        return None
    note, source = got
    return verify_held(note, trust, source=source, origin=origin)


class CheckpointState:
    """The last checkpoint a long-running reader accepted, kept in one file.

    `read` verifies what the file holds (a file that does not verify is an error: it is
    the reader's own memory, and an attacker who can replace it can also delete it);
    `save` replaces it atomically (temporary file + fsync + ``os.replace``: a crash
    leaves the old note or the new one). The constructor does no I/O.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.source = f"the checkpoint state {self.path}"

    def check(self, trust: TrustRoot) -> None:
        """`ConfigurationError` unless the file's directory exists and is writable, and the
        trust file lists checkpoint keys (else no checkpoint could ever be accepted and kept)."""
        if not trust.checkpoint_keys:
            raise ConfigurationError(f"{self.source}: the trust file {trust.source} lists no checkpoint_keys, so no "
                                     "checkpoint can be accepted and kept; list the witness's public key there")
        d = self.path.parent
        if not d.is_dir():
            raise ConfigurationError(f"{self.source}: directory {d} does not exist; mount a volume there")
        if not os.access(d, os.W_OK | os.X_OK):
            raise ConfigurationError(f"{self.source}: directory {d} is not writable by this user "
                                     f"(uid {os.getuid()})")

    def read(self, trust: TrustRoot, *, origin: str | None = None) -> Trusted | None:
        """The kept checkpoint, verified; None when there is none yet."""
        try:
            with self.path.open("rb") as f:
                note = f.read(MAX_NOTE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigurationError(f"cannot read {self.source}: {exc.strerror or exc}") from None
        if not note:
            return None
        if len(note) > MAX_NOTE:
            raise CheckpointError(f"{self.source} is larger than {MAX_NOTE} bytes: it is not a checkpoint note")
        try:
            return verify_held(note, trust, source=self.source, origin=origin)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}. If the trust file's checkpoint keys were rotated on purpose, delete "
                                  f"{self.path} to start again from the configured and the stored checkpoints") \
                from None

    def save(self, held: Trusted) -> None:
        from mlseal.ledger.witness import write_state

        write_state(self.path, held.note)


__all__ = ["ENV_VAR", "CheckpointState", "load_checkpoint", "read_note", "verify_held"]
