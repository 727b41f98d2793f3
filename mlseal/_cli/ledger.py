"""`mlseal ledger init|verify|log|trace|prove|checkpoint|consistency|witness` (docs/design.md#cli-reference).

Thin: parse, call `mlseal.ledger`, print. Machine output (``--json``) on stdout, human
text on stderr, the verdict in the exit code (0 ok, 1 verification failed, 2 usage or
configuration error).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlseal._cli._options import add_checkpoint, add_json, add_ledger, add_signing_key, emit_json, say

if TYPE_CHECKING:
    from mlseal.ledger import Ledger
    from mlseal.ledger.verify import Report
    from mlseal.signing.trust import TrustRoot


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ledger", help="verify, read and prove the provenance ledger")
    lsub = p.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")

    i = lsub.add_parser(
        "init", help="create or check the ledger schema; grant PostgreSQL client roles their privileges",
        description="Idempotent: creates the ledger schema if there is none, checks its format and schema_version "
        "otherwise (a newer or foreign schema is refused), and gives --grant-writer roles append access "
        "and --grant-reader roles read-only access (PostgreSQL). Run as the schema owner.",
    )
    add_ledger(i)
    i.add_argument("--grant-writer", action="append", default=[], metavar="ROLE",
                   help="PostgreSQL role that may append (repeatable; created NOLOGIN if missing)")
    i.add_argument("--grant-reader", action="append", default=[], metavar="ROLE",
                   help="PostgreSQL role that may only read and verify (repeatable; created NOLOGIN if missing)")
    i.add_argument("--grant-witness", action="append", default=[], metavar="ROLE",
                   help="PostgreSQL role that may read and add checkpoints only, for `ledger witness` "
                   "(repeatable; created NOLOGIN if missing)")
    add_json(i)
    i.set_defaults(func=run, handler=_init)

    v = lsub.add_parser(
        "verify", help="check signatures, hash chain, Merkle root, derived rows (digest index, nodes), "
        "checkpoint, artifacts",
    )
    add_ledger(v)
    v.add_argument("--trust", required=True, metavar="FILE", help="trust file (signers, checkpoint keys)")
    v.add_argument("--artifacts", action="store_true", help="also re-digest every recorded artifact")
    v.add_argument("--checkpoint", metavar="FILE", help="a signed checkpoint the log must extend")
    v.add_argument(
        "--from-checkpoint", action="store_true",
        help="trust --checkpoint (after checking its signature) and read only the records after it",
    )
    v.add_argument("--origin", help="expected checkpoint origin (default: trust file's, or mlseal.local/ledger)")
    add_json(v)
    v.set_defaults(func=run, handler=_verify)

    lg = lsub.add_parser("log", help="records, oldest first")
    add_ledger(lg)
    lg.add_argument("--start", type=int, default=0, metavar="SEQ")
    lg.add_argument("--end", type=int, default=None, metavar="SEQ", help="stop before this seq")
    add_json(lg)
    lg.set_defaults(func=run, handler=_log)

    t = lsub.add_parser("trace", help="lineage of an artifact back to the raw data, and forward")
    t.add_argument("artifact", metavar="ARTIFACT|SHA256")
    add_ledger(t)
    t.add_argument("--trust", metavar="FILE", help="check every record's signature against this trust file")
    add_checkpoint(t)
    add_json(t)
    t.set_defaults(func=run, handler=_trace)

    pr = lsub.add_parser("prove", help="inclusion proof of a record against the current tree")
    pr.add_argument("target", metavar="SEQ|SHA256|PATH",
                    help="a record's seq, or an artifact (its digest, or a file or directory to digest): then the "
                    "record that produced it, chosen from verified entries (needs --trust)")
    pr.add_argument("--trust", metavar="FILE",
                    help="trust file: which record produced an artifact is decided from entries verified with it")
    add_ledger(pr)
    add_json(pr)
    pr.set_defaults(func=run, handler=_prove)

    c = lsub.add_parser("checkpoint", help="signed checkpoint (C2SP signed note) of the current tree")
    add_ledger(c)
    c.add_argument("--out", metavar="FILE", help="write the checkpoint here (default: stdout)")
    c.add_argument("--origin", help="log origin line (default: mlseal.local/ledger)")
    add_signing_key(c)
    add_json(c)
    c.set_defaults(func=run, handler=_checkpoint)

    cs = lsub.add_parser("consistency", help="prove the current log extends an older checkpoint")
    cs.add_argument("old_checkpoint", metavar="OLD_CHECKPOINT")
    add_ledger(cs)
    cs.add_argument("--trust", metavar="FILE", help="also check the old checkpoint's signature")
    cs.add_argument("--origin", help="expected checkpoint origin")
    add_json(cs)
    cs.set_defaults(func=run, handler=_consistency)


    w = lsub.add_parser(
        "witness", help="verify what was appended since the last checkpoint, then sign and store a new one",
        description="Starts from the newest stored checkpoint signed by a trusted checkpoint key and from "
        "--state (the last checkpoint this witness accepted), requires the current log to extend both, "
        "verifies the records appended since (as `ledger verify --from-checkpoint`), then signs a checkpoint "
        "of the current tree and stores it in the ledger (and in --state). A rolled-back or forked log is "
        "refused (exit 1) and nothing is signed.",
    )
    add_ledger(w)
    w.add_argument("--ledger-file", metavar="FILE",
                   help="read the ledger URL from this file (e.g. rendered by Vault Agent): no credential in argv")
    w.add_argument("--trust", required=True, metavar="FILE", help="trust file (signers, checkpoint_keys)")
    w.add_argument("--state", metavar="FILE",
                   help="the last checkpoint this witness accepted; read if present, replaced on success")
    w.add_argument("--origin", help="log origin line (default: trust file's checkpoint_origin, or mlseal.local/ledger)")
    add_signing_key(w)
    add_json(w)
    w.set_defaults(func=run, handler=_witness)


def run(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


# --- helpers ------------------------------------------------------------------------------

def _open(args: argparse.Namespace) -> Ledger:
    from mlseal.ledger import open_ledger

    return open_ledger(args.ledger, create=False)


def _trust(path: str | None) -> TrustRoot | None:
    if path is None:
        return None
    from mlseal.signing.trust import load_trust

    return load_trust(path)


def _sqlite_version(path: str) -> int | None:
    """The schema version an existing SQLite ledger records (None: unreadable; opening says why)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{Path(path).absolute()}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT value FROM mlseal_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else None
    except (sqlite3.Error, ValueError):
        return None


def _read(path: str, what: str) -> bytes:
    from mlseal.errors import ConfigurationError

    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror}") from None


# --- subcommands ----------------------------------------------------------------------------

def _init(args: argparse.Namespace) -> int:
    from mlseal.errors import ConfigurationError
    from mlseal.ledger import DEFAULT_URL, ENV_VAR, open_ledger, redact_url, sqlite_path, url_scheme

    url = args.ledger or os.environ.get(ENV_VAR) or DEFAULT_URL
    display = redact_url(url)
    scheme = url_scheme(url)
    if scheme == "postgresql":
        from mlseal.ledger._postgres import init_schema

        report = init_schema(url, display=display, writers=args.grant_writer, readers=args.grant_reader,
                             witnesses=args.grant_witness)
        out = report.to_json()
    else:
        if args.grant_writer or args.grant_reader or args.grant_witness:
            raise ConfigurationError(
                f"ledger {display}: --grant-writer/--grant-reader/--grant-witness apply to PostgreSQL ledgers only "
                "(a SQLite ledger's access is its file permissions)"
            )
        existed = scheme == "sqlite" and Path(sqlite_path(url)).exists()
        before = _sqlite_version(sqlite_path(url)) if existed else None
        with open_ledger(url, create=True):  # creates, or migrates an older schema
            pass
        from mlseal.ledger._store import SCHEMA_VERSION

        migrated = before if before is not None and before < SCHEMA_VERSION else None
        out = {"schema": None, "schema_version": SCHEMA_VERSION, "created": not existed,
               "changed": not existed or migrated is not None, "migrated_from": migrated,
               "created_roles": [], "granted": [], "revoked": []}
    out = {"ledger": display, **out}
    if args.json:
        emit_json(out)
    state = "created" if out["created"] else "already there"
    if out.get("migrated_from") is not None:
        state = f"(migrated from version {out['migrated_from']})"
    say(f"ledger {display}: schema version {out['schema_version']} {state}")
    for role in out["created_roles"]:
        say(f"  created role {role} (NOLOGIN)")
    for role, obj, priv in out["granted"]:
        say(f"  granted {priv} on {obj} to {role}")
    for role, obj, priv in out["revoked"]:
        say(f"  revoked {priv} on {obj} from {role}")
    if not out["changed"]:
        say("  no change")
    return 0


def _verify(args: argparse.Namespace) -> int:
    import contextlib

    from mlseal import _progress
    from mlseal.errors import ConfigurationError, Error
    from mlseal.ledger.artifacts import digest_uri
    from mlseal.ledger.rollback import read_note
    from mlseal.ledger.verify import verify_ledger, verify_ledger_note

    trust = _trust(args.trust)
    assert trust is not None
    if args.from_checkpoint and not args.checkpoint:
        raise ConfigurationError("--from-checkpoint needs --checkpoint FILE, "
                                 "e.g. --checkpoint checkpoint --from-checkpoint")
    options: dict[str, Any] = {"digest_uri": digest_uri if args.artifacts else None, "stored_checkpoints": True,
                               "origin": args.origin}
    show = _progress.wanted(args)
    with _open(args) as led, _progress.shown("verifying the ledger", unit="entries", enabled=show):
        if show:
            with contextlib.suppress(Error):  # the total only sizes the bar; verification reports a bad head
                _progress.expect(led.head().size, "entries")
        if args.checkpoint:
            got = read_note(args.checkpoint, env={})
            assert got is not None
            report = verify_ledger_note(led, trust, got[0], source=args.checkpoint,
                                        from_checkpoint=args.from_checkpoint, **options)
        else:
            report = verify_ledger(led, trust, **options)
    if args.json:
        emit_json(report.to_json())
    if report.ok:
        say(f"ledger OK: {_verified_text(report, args.from_checkpoint, args.artifacts)}")
        return 0
    say(f"ledger verification FAILED: {report.problems[0].detail}")
    for p in report.problems[1:]:
        say(f"  also: {p.detail}")
    if report.omitted:
        say(f"  … and {report.omitted} more problems")
    return 1


def _verified_text(report: Report, from_checkpoint: bool, artifacts: bool) -> str:
    """What a passing `ledger verify` actually checked, in words: no more than was read."""
    checkpoint = report.checkpoint
    what = "signatures, hash chain, Merkle root, digest index, Merkle nodes"
    if artifacts:
        what += ", artifacts"
    if from_checkpoint and checkpoint is not None:
        n = report.checked
        records = f"{n} record{'' if n == 1 else 's'} after the checkpoint at size {checkpoint.size}"
        skipped = (f"records 0..{checkpoint.size - 1} not read: the checkpoint's signature verified and the stored "
                   "tree reproduces its root" if checkpoint.size else "the checkpoint pins an empty log")
        text = (f"{records} ({skipped}); " + (f"their {what} verified" if n else "nothing new to verify"))
    else:
        text = f"{report.size} records read; {what}"
        if checkpoint is not None:
            text += f", extension of the checkpoint at size {checkpoint.size}"
        text += " verified"
    if report.stored_checkpoints is not None:
        n = report.stored_checkpoints
        text += f"; {n} stored checkpoint{'' if n == 1 else 's'} verified"
    return f"{text}; root {report.root.hex()}"


def _log(args: argparse.Namespace) -> int:
    with _open(args) as led:
        try:
            _print_log(led, args)
        except BrokenPipeError:  # `mlseal ledger log | head`: the reader has seen enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print_log(led: Ledger, args: argparse.Namespace) -> None:
    from mlseal.errors import VerificationError
    from mlseal.ledger import merkle
    from mlseal.ledger.entry import split_entry

    for seq, entry in led.entries(args.start, args.end):
        try:
            record: Any = json.loads(split_entry(entry).payload)
        except (VerificationError, ValueError):
            record = None
        if args.json:
            emit_json({
                "seq": seq,
                "leaf": base64.b64encode(entry).decode(),
                "leaf_hash": merkle.leaf_hash(entry).hex(),
                "record": record,
            })
        else:
            say(_log_line(seq, record))


def _log_line(seq: int, record: Any) -> str:
    if not isinstance(record, dict):
        return f"{seq:>6}  (unreadable entry)"
    outs = ", ".join(
        f"{o.get('name')}={str(o.get('digest', {}).get('sha256', ''))[:12]}"
        for o in record.get("outputs", []) if isinstance(o, dict)
    )
    signer = record.get("signer", {}).get("name") if isinstance(record.get("signer"), dict) else None
    return f"{seq:>6}  {record.get('time', '')}  {record.get('stage', '?'):<10} {signer or '?':<12} {outs}"


def _target_digest(text: str) -> str:
    from mlseal.ledger.record import is_sha256_hex
    from mlseal.signing.digest import digest_path

    t = text.removeprefix("sha256:")
    if is_sha256_hex(t):
        return t
    return digest_path(text)


def _trace(args: argparse.Namespace) -> int:
    from mlseal.ledger import UNSAFE_SKIP_SIGNATURES
    from mlseal.ledger.lineage import trace
    from mlseal.ledger.rollback import load_checkpoint
    from mlseal.ledger.verified import VerifiedView, ViewFailed

    sha = _target_digest(args.artifact)
    trust = _trust(args.trust) or UNSAFE_SKIP_SIGNATURES  # without --trust: said below, and on stderr
    unchecked = args.trust is None
    held = load_checkpoint(trust, path=args.checkpoint)
    if held is not None and unchecked:
        say(f"warning: checkpoint signature NOT checked (pass --trust FILE); the ledger must still extend the "
            f"checkpoint from {held.source}")
    with _open(args) as led:
        view = VerifiedView(led, trust)  # reads and verifies every entry once
        try:
            if held is not None:
                view.require(held)
            lin = trace(view, sha, trust)
        except ViewFailed as exc:
            if args.json:
                emit_json({"sha256": sha, "ok": False, "code": exc.code, "error": str(exc),
                           "signatures_checked": not unchecked})
            say(f"ledger refused: {exc}; its lineage is not shown: restore the ledger from a verified copy "
                "(`mlseal ledger verify --checkpoint`)")
            return 1
    if args.json:
        emit_json(lin.to_json() | {"signatures_checked": not unchecked})
    if unchecked:
        say("warning: signatures NOT checked (pass --trust FILE)")
    if lin.producer is None:
        say(f"no record produced sha256 {sha}")
    else:
        say(f"artifact {sha[:16]}… produced by record {lin.producer.seq} ({lin.producer.stage})")
        for r in lin.ancestors:
            say(f"  <- record {r.seq} ({r.stage}) {', '.join(o.name for o in r.outputs)}")
        for r in lin.descendants:
            say(f"  -> record {r.seq} ({r.stage}) {', '.join(o.name for o in r.outputs)}")
    for p in lin.problems:
        say(f"problem: {p.detail}")
    return 0 if lin.ok else 1


def _prove(args: argparse.Namespace) -> int:
    from mlseal.errors import ConfigurationError, VerificationError
    from mlseal.ledger import merkle
    from mlseal.ledger.trusted import TrustedReader
    from mlseal.signing.trust import load_trust

    if not args.target.isdigit() and not args.trust:
        raise ConfigurationError(
            f"which record produced {args.target} is decided from verified entries: pass --trust FILE "
            "(or name the record by its seq), e.g. --trust trust.yaml"
        )
    with _open(args) as led:
        head = led.head()
        if args.target.isdigit():
            seq = int(args.target)
        else:
            # the deciding producer by the trusted-record rule, never the unsigned digest index
            answer = TrustedReader(led, load_trust(args.trust)).producer_of(_target_digest(args.target))
            if answer.record is None:
                why = "; ".join(f"record {p.seq}: {p}" for p in answer.problems)
                raise VerificationError(f"no trusted record in the ledger outputs {args.target}"
                                        + (f" ({why})" if why else ""))
            seq = answer.record.seq
        entry = led.entry(seq)
        proof = led.inclusion_proof(seq, head.size)
    leaf = merkle.leaf_hash(entry)
    merkle.verify_inclusion(leaf, seq, head.size, proof, head.root)  # never print a wrong proof
    if args.json:
        emit_json({
            "seq": seq,
            "leaf_index": seq,
            "tree_size": head.size,
            "leaf_hash": leaf.hex(),
            "root": head.root.hex(),
            "path": [p.hex() for p in proof],
        })
    say(f"record {seq} is leaf {seq} of the tree of size {head.size} with root {head.root.hex()} "
        f"({len(proof)} proof hashes)")
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    from mlseal.errors import ConfigurationError
    from mlseal.ledger.checkpoint import DEFAULT_ORIGIN, Checkpoint, sign_checkpoint

    if not args.key and not args.vault_transit:
        raise ConfigurationError("a checkpoint needs a signing key: --key PEM or --vault-transit KEY, "
                                 "e.g. --vault-transit mlseal-checkpoint")
    signer = _resolve_signer(args.key, args.vault_transit)
    with _open(args) as led:
        head = led.head()
    cp = Checkpoint(origin=args.origin or DEFAULT_ORIGIN, size=head.size, root=head.root)
    note = sign_checkpoint(cp, signer)
    if args.out:
        Path(args.out).write_bytes(note)
        say(f"checkpoint of {cp.size} records written to {args.out}")
    if args.json:
        emit_json(cp.to_json() | {"checkpoint": note.decode()})
    elif not args.out:
        sys.stdout.write(note.decode())
    return 0


def _resolve_signer(key: str | None, vault_transit: str | None) -> Any:
    from mlseal.secrets.signer import resolve_signer

    return resolve_signer(key=key, vault_transit=vault_transit)


def _consistency(args: argparse.Namespace) -> int:
    from mlseal.ledger import UNSAFE_SKIP_SIGNATURES
    from mlseal.ledger.checkpoint import check_consistency
    from mlseal.ledger.rollback import read_note, verify_held

    got = read_note(args.old_checkpoint, env={}, option="OLD_CHECKPOINT")
    assert got is not None
    old = verify_held(got[0], _trust(args.trust) or UNSAFE_SKIP_SIGNATURES, source=got[1], origin=args.origin)
    if args.trust is None:
        say("warning: checkpoint signature NOT checked (pass --trust FILE)")
    with _open(args) as led:
        answer = check_consistency(led, old.checkpoint)
    if args.json:
        emit_json(answer.to_json())
    if answer.ok:
        say(f"consistent: the log of {answer.size} records extends the checkpoint of {old.checkpoint.size}")
        return 0
    say(f"NOT consistent: {answer.error}")
    return 1


def _witness(args: argparse.Namespace) -> int:
    from mlseal.errors import ConfigurationError, VerificationError
    from mlseal.ledger.checkpoint import RollbackError
    from mlseal.ledger.witness import run_witness

    if not args.key and not args.vault_transit:
        raise ConfigurationError("the witness needs the checkpoint signing key: --key PEM or --vault-transit KEY, "
                                 "e.g. --vault-transit mlseal-checkpoint")
    if args.ledger_file:
        if args.ledger:
            raise ConfigurationError("pass either --ledger or --ledger-file, not both")
        text = _read(args.ledger_file, "ledger URL file").decode("utf-8", "replace").strip()
        if not text:
            raise ConfigurationError(f"the ledger URL file {args.ledger_file} is empty (not rendered yet?)")
        args.ledger = text
    trust = _trust(args.trust)
    assert trust is not None
    signer = _resolve_signer(args.key, args.vault_transit)
    with _open(args) as led:
        try:
            done = run_witness(led, trust, signer, state_path=Path(args.state) if args.state else None,
                               origin=args.origin)
        except RollbackError as exc:
            if args.json:
                emit_json({"ok": False, "kind": "rollback", "detail": str(exc)})
            say(f"witness REFUSED: {exc}")
            return 1
        except VerificationError as exc:
            if args.json:
                emit_json({"ok": False, "kind": "verification", "detail": str(exc)})
            say(f"witness REFUSED: {exc}")
            return 1
    for why in done.skipped:
        say(f"warning: {why}")
    if args.json:
        emit_json(done.to_json())
    start = f"checkpoint of {done.old.size} records" if done.old else "the first record (no checkpoint yet)"
    say(f"witnessed: {done.checked} records verified from {start}; "
        f"checkpoint of {done.new.size} records, root {done.new.root.hex()} "
        + ("signed and stored" if done.stored else "already stored"))
    return 0
