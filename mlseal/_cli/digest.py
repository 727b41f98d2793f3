"""`mlseal digest PATH`: sha256 of a file, or the name-binding digest of a directory."""

from __future__ import annotations

import argparse

from mlseal._cli._options import add_allow_symlinks, add_json, emit_json


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "digest",
        help="sha256 of a file, or the digest of a directory (binds file names)",
        description="Print the digest the ledger records: the sha256 of a file's bytes, or the sha256 of a "
        "directory's manifest (each file's relative path and sha256). Directories ignore .git & co. "
        "--json also prints a directory's OMS subject digest (subject_sha256) and its files.",
    )
    p.add_argument("path", metavar="PATH", help="a file or a model directory")
    p.add_argument("--ignore", action="append", default=[], metavar="REL",
                   help="also ignore this path inside a directory (repeatable)")
    add_allow_symlinks(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from mlseal import _progress
    from mlseal.signing.digest import digest_path, manifest_of

    if os.path.isdir(args.path) and args.json:
        m = manifest_of(args.path, ignore=args.ignore, allow_symlinks=args.allow_symlinks)  # --json: no bar
        emit_json({
            "path": args.path, "kind": "directory", "sha256": m.artifact_digest,
            "subject_sha256": m.subject_digest,
            "files": [{"name": r.name, "sha256": r.sha256} for r in m.resources],
        })
        return 0
    with _progress.over_path(args, "digest", args.path):
        digest = digest_path(args.path, ignore=args.ignore, allow_symlinks=args.allow_symlinks)
    if args.json:
        emit_json({"path": args.path, "kind": "file", "sha256": digest})
    else:
        print(f"{digest}  {args.path}")
    return 0
