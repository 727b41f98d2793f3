"""`mlseal export slsa|mlbom|openlineage|pack`: the ledger's verified records in the ecosystem's formats.

Thin: parse, call `mlseal.export`, write (atomically, and only once everything verified),
print. Exit 0 ok, 1 the ledger does not prove what the export would say (unknown digest,
untrusted or tampered record, broken lineage), 2 usage, configuration or environment error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlseal._cli._options import add_json, add_ledger, add_signing_key, emit_json, say

if TYPE_CHECKING:
    from mlseal.export import ModelSource
    from mlseal.signing.trust import TrustRoot

TRUST_ENV = "MLSEAL_TRUST"


def _add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust", metavar="FILE", help=f"trust file (default: ${TRUST_ENV}); every record is verified "
                   "against it")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_SHA256", help="the model's digest (as `mlseal digest` prints it)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export", help="SLSA provenance, CycloneDX ML-BOM, OpenLineage events, audit packs from the verified ledger",
        description="Every export reads only records that verify against the trust file; an unknown digest, an "
        "untrusted or tampered record or a broken lineage is refused (exit 1) and nothing is written.",
    )
    esub = p.add_subparsers(dest="export_command", required=True, metavar="FORMAT")

    s = esub.add_parser("slsa", help="SLSA Provenance v1 (in-toto Statement v1, DSSE-signed) for a model",
                        description="Signed with --key/--vault-transit, which the trust file must grant the stage "
                        "that produced the model (e.g. train).")
    _add_model(s)
    add_ledger(s)
    _add_trust(s)
    add_signing_key(s)
    s.add_argument("--pipeline", metavar="FILE", help="the compiled pipeline (KFP IR) the run used: its SHA-256 "
                   "goes into the build definition")
    s.add_argument("--bundle", action="store_true", help="write a Sigstore bundle v0.3 wrapping the envelope "
                   "instead of the bare DSSE envelope (.intoto.jsonl)")
    s.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    add_json(s)
    s.set_defaults(func=run, handler=_slsa)

    b = esub.add_parser("mlbom", help="CycloneDX 1.6 ML-BOM (model card, datasets) for a model")
    _add_model(b)
    add_ledger(b)
    _add_trust(b)
    b.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    add_json(b)
    b.set_defaults(func=run, handler=_mlbom)

    o = esub.add_parser("openlineage", help="one OpenLineage RunEvent per stage run (JSON Lines), or post them",
                        description="All records of the ledger, of one KFP run (--run), or of one model's lineage "
                        "(MODEL_SHA256). --emit posts them to a Marquez-compatible server "
                        "(URL/api/v1/lineage when URL has no path; a bearer token from $OPENLINEAGE_API_KEY).")
    o.add_argument("model", metavar="MODEL_SHA256", nargs="?", help="only this model's lineage")
    add_ledger(o)
    _add_trust(o)
    o.add_argument("--run", metavar="RUN_ID", help="only the records of this KFP run")
    o.add_argument("--namespace", default="mlseal", help="OpenLineage job namespace (default: mlseal)")
    o.add_argument("--out", metavar="FILE", help="write the events here (default: stdout, unless --emit)")
    o.add_argument("--emit", metavar="URL", help="POST each event to this lineage server")
    add_json(o)
    o.set_defaults(func=run, handler=_openlineage)

    k = esub.add_parser("pack", help="an audit pack: records, proofs, checkpoint, bundles, provenance, ML-BOM, "
                        "policy and decision in one file",
                        description="Check it anywhere with `mlseal verify-pack FILE --trust trust.yaml`.")
    _add_model(k)
    add_ledger(k)
    _add_trust(k)
    add_signing_key(k)
    k.add_argument("--out", metavar="FILE", required=True, help="the pack file to write (atomically)")
    k.add_argument("--policy", metavar="FILE", required=True, help="admission policy whose decision goes in the pack")
    k.add_argument("--namespace", metavar="NS", help="namespace whose policy rules apply")
    k.add_argument("--checkpoint", metavar="FILE", help="the signed checkpoint to prove records against "
                   "(default: the newest trusted one stored in the ledger)")
    k.add_argument("--pipeline", metavar="FILE", help="the compiled pipeline, for the provenance")
    add_json(k)
    k.set_defaults(func=run, handler=_pack)


def run(args: argparse.Namespace) -> int:
    from mlseal import _progress

    handler: Callable[[argparse.Namespace], int] = args.handler
    # the long part is verifying every ledger entry (mlseal.ledger.verified)
    with _progress.shown(f"export {args.export_command}" if hasattr(args, "export_command") else "export",
                         unit="entries", enabled=_progress.wanted(args)):
        return handler(args)


# --- helpers ---------------------------------------------------------------------------------------

def _trust(args: argparse.Namespace) -> TrustRoot:
    from mlseal.errors import ConfigurationError
    from mlseal.signing.trust import load_trust

    path = args.trust or os.environ.get(TRUST_ENV)
    if not path:
        raise ConfigurationError(f"exports read only verified records: pass --trust FILE (or set ${TRUST_ENV}), "
                                 "e.g. --trust /etc/mlseal/trust.yaml")
    return load_trust(path)


def _signer(args: argparse.Namespace) -> Any:
    from mlseal.errors import ConfigurationError
    from mlseal.secrets.signer import resolve_signer

    if not args.key and not args.vault_transit:
        raise ConfigurationError("this export is signed: pass --key PEM or --vault-transit KEY (a key the trust file "
                                 "grants the stage that produced the model)")
    return resolve_signer(key=args.key, vault_transit=args.vault_transit)


def _model(led: Any, args: argparse.Namespace, trust: TrustRoot) -> ModelSource:
    from mlseal.export import load_model

    return load_model(led, args.model, trust)


def _pipeline(path: str | None) -> tuple[str | None, str | None]:
    if path is None:
        return None, None
    from mlseal.errors import ConfigurationError
    from mlseal.signing.digest import file_sha256

    if not Path(path).is_file():
        raise ConfigurationError(f"--pipeline {path} is not a file")
    return file_sha256(path), Path(path).name


def _write(out: str | None, data: bytes) -> None:
    """To `out` atomically (temp file + rename), or to stdout."""
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    from mlseal._files import write_atomic
    from mlseal.errors import ConfigurationError

    dest = Path(out)
    if not dest.parent.is_dir():
        raise ConfigurationError(f"--out {out}: directory {dest.parent} does not exist")
    write_atomic(dest, data)


def _open(args: argparse.Namespace) -> Any:
    from mlseal.ledger import open_ledger

    return open_ledger(args.ledger, create=False)


# --- formats -----------------------------------------------------------------------------------------

def _slsa(args: argparse.Namespace) -> int:
    from mlseal.export.slsa import bundle_of, provenance, sign_provenance
    from mlseal.signing.keys import public_pem

    trust = _trust(args)
    signer = _signer(args)
    digest, name = _pipeline(args.pipeline)
    with _open(args) as led:
        src = _model(led, args, trust)
    envelope = sign_provenance(provenance(src, pipeline_sha256=digest, pipeline_uri=name), signer, trust)
    data = bundle_of(envelope, public_pem(signer.public_key())) + b"\n" if args.bundle else envelope
    if args.json and args.out is None:
        from mlseal.errors import ConfigurationError

        raise ConfigurationError("--json needs --out FILE (stdout carries the export)")
    _write(args.out, data)
    if args.json:
        emit_json({"ok": True, "model_sha256": src.model_sha256, "record": src.producer.seq, "out": args.out,
                   "signer": trust.signer_name(signer.key_id), "format": "sigstore-bundle" if args.bundle else "dsse"})
    say(f"SLSA provenance of model {src.model_sha256[:16]}… (record {src.producer.seq}, {src.producer.stage}) "
        f"signed by {trust.signer_name(signer.key_id)}" + (f", written to {args.out}" if args.out else ""))
    return 0


def _mlbom(args: argparse.Namespace) -> int:
    from mlseal.export.mlbom import mlbom_bytes

    trust = _trust(args)
    with _open(args) as led:
        src = _model(led, args, trust)
    data = mlbom_bytes(src)
    if args.json and args.out is None:
        from mlseal.errors import ConfigurationError

        raise ConfigurationError("--json needs --out FILE (stdout carries the export)")
    _write(args.out, data)
    if args.json:
        emit_json({"ok": True, "model_sha256": src.model_sha256, "records": [r.seq for r in src.records],
                   "out": args.out})
    say(f"CycloneDX 1.6 ML-BOM of model {src.model_sha256[:16]}… from {len(src.records)} verified records"
        + (f", written to {args.out}" if args.out else ""))
    return 0


def _openlineage(args: argparse.Namespace) -> int:
    from mlseal.errors import ConfigurationError
    from mlseal.export.openlineage import emit, events_for_ledger, events_for_model, jsonl, lineage_url

    trust = _trust(args)
    if args.model and args.run:
        raise ConfigurationError("pass a model digest or --run, not both")
    if args.emit:
        lineage_url(args.emit)  # a bad URL is refused before anything is read
    with _open(args) as led:
        if args.model:
            events = events_for_model(_model(led, args, trust), namespace=args.namespace)
        else:
            events = events_for_ledger(led, trust, run=args.run, namespace=args.namespace)
    if args.out or not args.emit:
        if args.json and args.out is None:
            raise ConfigurationError("--json needs --out FILE or --emit URL (stdout carries the events)")
        _write(args.out, jsonl(events))
    sent = None
    if args.emit:
        sent = emit(events, args.emit)
    if args.json:
        emit_json({"ok": True, "events": len(events), "out": args.out,
                   "emitted": {"url": sent.url, "sent": sent.sent} if sent else None})
    say(f"{len(events)} OpenLineage run events from verified records"
        + (f", written to {args.out}" if args.out else "")
        + (f", posted to {sent.url}" if sent else ""))
    return 0


def _pack(args: argparse.Namespace) -> int:
    from mlseal.export.mlbom import mlbom_bytes
    from mlseal.export.pack import admission, build_pack, write_pack
    from mlseal.export.slsa import provenance, sign_provenance

    trust = _trust(args)
    signer = _signer(args)
    digest, name = _pipeline(args.pipeline)
    note = None
    if args.checkpoint:
        from mlseal.errors import ConfigurationError

        try:
            note = Path(args.checkpoint).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read checkpoint {args.checkpoint}: {exc.strerror}") from None
    dest = Path(args.out)
    if not dest.parent.is_dir():
        from mlseal.errors import ConfigurationError

        raise ConfigurationError(f"--out {args.out}: directory {dest.parent} does not exist")
    with _open(args) as led:
        src = _model(led, args, trust)
        policy_bytes, decision = admission(src, args.policy, namespace=args.namespace)
        envelope = sign_provenance(provenance(src, pipeline_sha256=digest, pipeline_uri=name), signer, trust)
        built = build_pack(src, led, signer, provenance=envelope, mlbom=mlbom_bytes(src), policy_bytes=policy_bytes,
                           decision=decision, checkpoint=note)
    write_pack(dest, built, trust)
    if args.json:
        emit_json({"ok": True, "out": str(dest), "model_sha256": src.model_sha256, "members": list(built.members),
                   "checkpoint": built.checkpoint.to_json(), "admission": {"allowed": built.allowed}})
    say(f"audit pack of model {src.model_sha256[:16]}… written to {dest}: {len(src.records)} records with inclusion "
        f"proofs against the checkpoint of {built.checkpoint.size}, {len(built.members)} members; admission "
        + ("allowed" if built.allowed else "DENIED") + f" by {Path(args.policy).name}")
    return 0
