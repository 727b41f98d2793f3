"""Helpers the subcommands share: --json output, the options several commands take, say/emit_json."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def add_ledger(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledger", metavar="URL", help="ledger URL (default: $MLSEAL_LEDGER or sqlite:///.mlseal/ledger.db)")


def add_checkpoint(p: argparse.ArgumentParser, what: str = "the ledger") -> None:
    p.add_argument(
        "--checkpoint", metavar="FILE",
        help=f"a signed checkpoint accepted before: {what} must extend it, else it is refused as rolled back or "
        "forked (default: $MLSEAL_CHECKPOINT, the note's text if it spans lines, else a file's path)",
    )


def add_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, metavar="FILE", help="admission policy (policy.yaml)")


def add_allow_symlinks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-symlinks", action="store_true", help="follow symbolic links instead of refusing them")


def add_signing_key(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--key", metavar="PEM", help="local EC P-256 private key (PEM)")
    g.add_argument("--vault-transit", metavar="KEY", help="Vault Transit key name (the key never leaves Vault)")


def say(text: str) -> None:
    """Human text: always stderr, so stdout stays machine-readable."""
    print(text, file=sys.stderr)


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    sys.stdout.flush()
