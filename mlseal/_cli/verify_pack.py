"""`mlseal verify-pack FILE --trust trust.yaml`: check an audit pack offline (no ledger access).

Exit 0 the pack verifies (whatever its admission decision says: it is reported), 1 the
pack is altered or does not prove what it claims, 2 the trust file or pack cannot be read.
"""

from __future__ import annotations

import argparse

from mlseal._cli._options import add_json, emit_json, say


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify-pack", help="check an audit pack (mlseal export pack) offline against a trust file",
        description="Checks that every byte of the pack is covered (the canonical archive of members listed, with "
        "their SHA-256, in a manifest signed by a key granted the model's stage), the checkpoint's signature, each "
        "record's signature and inclusion proof, the lineage, the OMS bundles, the SLSA provenance, the ML-BOM and "
        "the admission decision.",
    )
    p.add_argument("pack", metavar="FILE", help="the pack")
    p.add_argument("--trust", required=True, metavar="FILE", help="trust file (signers, checkpoint_keys)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlseal.errors import VerificationError
    from mlseal.export.pack import verify_pack_file
    from mlseal.signing.trust import load_trust

    trust = load_trust(args.trust)
    try:
        report = verify_pack_file(args.pack, trust)
    except VerificationError as exc:
        if args.json:
            emit_json({"ok": False, "detail": str(exc)})
        say(f"pack REFUSED: {exc}")
        return 1
    if args.json:
        emit_json(report.to_json())
    say(f"pack OK: model {report.model_sha256} (record {report.producer_seq}), {len(report.records)} records proven "
        f"in the checkpoint of {report.checkpoint.size} (root {report.checkpoint.root.hex()[:16]}…), "
        f"{report.bundles} bundles; signed by {report.signer}")
    decision = "allowed" if report.allowed else "DENIED: " + "; ".join(report.reasons)
    say(f"  admission decision in the pack: {decision}")
    return 0
