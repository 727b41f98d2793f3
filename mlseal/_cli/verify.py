"""`mlseal verify PATH`: check an OMS bundle's signer and every file it covers."""

from __future__ import annotations

import argparse

from mlseal._cli._options import add_json, emit_json, say


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="verify a file or directory against its OMS bundle (exit 1 on any mismatch)",
        description="Verify a signed file or model directory. Exit 0 if a trusted signer signed "
        "exactly these bytes; exit 1 naming the file that differs or why the signature is refused.",
    )
    p.add_argument("path", metavar="PATH", help="the signed file or model directory (bundle: PATH.sig, or --bundle)")
    p.add_argument("--bundle", metavar="FILE", help="bundle path (default: PATH.sig)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--key", metavar="PUB_PEM", help="the signer's EC P-256 public key (PEM)")
    g.add_argument("--trust", metavar="FILE", help="trust file listing keys and keyless identities")
    g.add_argument("--identity", metavar="SAN", help="keyless: the signer's certificate identity (needs --issuer)")
    p.add_argument("--issuer", metavar="URL", help="keyless: the OIDC issuer that vouched for --identity")
    p.add_argument("--trusted-root", metavar="FILE", help="keyless: trusted_root.json of a private Sigstore instance")
    p.add_argument("--staging", action="store_true", help="keyless: trust the public staging instance")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlseal import _progress
    from mlseal.errors import ConfigurationError, VerificationError
    from mlseal.signing.artifact import verify_path
    from mlseal.signing.authenticated import BundlePolicy
    from mlseal.signing.keyless import IdentityPolicy
    from mlseal.signing.keys import PublicKeyVerifier
    from mlseal.signing.policy import KeyPolicy, policy_from_trust
    from mlseal.signing.trust import load_trust

    policy: BundlePolicy
    if args.key:
        policy = KeyPolicy(PublicKeyVerifier.from_file(args.key, name=Path(args.key).name))
    elif args.trust:
        policy = policy_from_trust(load_trust(args.trust))
    else:
        if not args.issuer:
            raise ConfigurationError("--identity needs --issuer (the OIDC issuer URL), "
                                     "e.g. --issuer https://token.actions.githubusercontent.com")
        policy = IdentityPolicy(
            args.identity, args.issuer,
            trusted_root=Path(args.trusted_root) if args.trusted_root else None, staging=args.staging,
        )
    try:
        with _progress.over_path(args, "verify", args.path):
            v = verify_path(args.path, args.bundle, policy)
    except VerificationError as exc:
        if args.json:
            emit_json({"ok": False, "path": args.path, "reason": str(exc)})
        raise
    if args.json:
        emit_json({"ok": True, "path": args.path, "sha256": v.digest, "subject_sha256": v.subject_digest,
                   "files": v.files, "signer": v.signer_name, "key_id": v.key_id,
                   "identity": v.signer.identity, "issuer": v.signer.issuer})
    else:
        say(f"OK: {args.path} ({v.files} file(s), sha256 {v.digest}) signed by {v.signer}")
    return 0
