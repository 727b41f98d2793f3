"""`mlseal sign PATH`: write PATH.sig, an OMS bundle (Sigstore bundle v0.3, DSSE, in-toto)."""

from __future__ import annotations

import argparse

from mlseal._cli._options import add_allow_symlinks, add_json, add_signing_key, emit_json, say


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sign",
        help="sign a file or directory (writes PATH.sig, an OMS bundle)",
        description="Sign a file or model directory as an OpenSSF Model Signing bundle that "
        "model-signing verifies. Key: --key PEM, --vault-transit KEY, $MLSEAL_SIGNING_KEY, or --keyless.",
    )
    p.add_argument("path", metavar="PATH", help="the file or model directory to sign (bundle: PATH.sig, or --out)")
    p.add_argument("--out", metavar="FILE", help="bundle path (default: PATH.sig)")
    add_signing_key(p)
    k = p.add_argument_group("Sigstore keyless")
    k.add_argument("--keyless", action="store_true", help="sign with a Fulcio certificate for an OIDC identity")
    k.add_argument("--identity-token", metavar="FILE",
                   help="file holding the OIDC token (default: $MLSEAL_OIDC_TOKEN_FILE or an ambient credential)")
    k.add_argument("--trust-config", metavar="FILE", help="ClientTrustConfig JSON of a private Sigstore instance")
    k.add_argument("--staging", action="store_true", help="use the public Sigstore staging instance")
    add_allow_symlinks(p)
    p.add_argument("--shard-size", type=int, metavar="BYTES",
                   help="model-signing's shard serialization (digest per piece of each file); default: per file")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlseal import _progress
    from mlseal.errors import ConfigurationError
    from mlseal.signing import oms
    from mlseal.signing.artifact import BundleSigner, read_bundle, sign_path
    from mlseal.signing.keys import Signer

    signer: Signer | BundleSigner
    if args.keyless:
        if args.key or args.vault_transit:
            raise ConfigurationError("--keyless cannot be combined with --key or --vault-transit")
        from mlseal.signing.keyless import KeylessSigner

        signer = KeylessSigner(
            identity_token_file=Path(args.identity_token) if args.identity_token else None,
            trust_config=Path(args.trust_config) if args.trust_config else None,
            staging=args.staging,
        )
    else:
        if args.identity_token or args.trust_config or args.staging:
            raise ConfigurationError("--identity-token, --trust-config and --staging need --keyless")
        from mlseal.secrets.signer import resolve_signer

        signer = resolve_signer(key=args.key, vault_transit=args.vault_transit)
    with _progress.over_path(args, "sign", args.path):
        out = sign_path(args.path, signer, out=args.out, allow_symlinks=args.allow_symlinks,
                        shard_size=args.shard_size)
    # report the digests the bundle just written names
    envelope = read_bundle(out).envelope
    assert envelope is not None
    m = oms.parse_statement(envelope.payload)
    digest = m.artifact_digest if m.shard_size is None else m.subject_digest
    if args.json:
        emit_json({"path": args.path, "bundle": str(out), "sha256": digest, "subject_sha256": m.subject_digest,
                   "files": len(m.resources), "key_id": getattr(signer, "key_id", None)})
    else:
        say(f"signed {args.path} ({len(m.resources)} file(s), sha256 {digest}) -> {out}")
    return 0
