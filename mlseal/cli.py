"""The `mlseal` command: parses arguments, calls the library, prints.

Each subcommand lives in its own module under `mlseal._cli` and exposes
``add_parser(subparsers)``; the module registers a handler ``run(args) -> int`` that
imports the heavy library code only when it runs, so that `mlseal digest` on a large
file starts in milliseconds.

Exit codes (docs/design.md#exit-codes): 0 ok, 1 verification failed or policy denied, 2 usage,
configuration or environment error. Only mlseal's own errors are caught here; a bug
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mlseal import __version__
from mlseal.errors import Error

__all__ = ["COMMANDS", "build_parser", "main"]

#: subcommand -> module that defines it (the dispatch table)
COMMANDS: dict[str, str] = {
    "demo": "mlseal._cli.demo",
    "record": "mlseal._cli.record",
    "digest": "mlseal._cli.digest",
    "ledger": "mlseal._cli.ledger",
    "sign": "mlseal._cli.sign",
    "verify": "mlseal._cli.verify",
    "admit": "mlseal._cli.admit",
    "fetch": "mlseal._cli.fetch",
    "webhook": "mlseal._cli.webhook",
    "vault": "mlseal._cli.vault",
    "export": "mlseal._cli.export",
    "verify-pack": "mlseal._cli.verify_pack",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlseal",
        description="Provable ML pipelines: signed artifacts, Vault secrets, a verifiable lineage ledger.",
    )
    parser.add_argument("--version", action="version", version=f"mlseal {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (stderr)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (they are drawn only when stderr is a terminal, never with --json)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="mlseal: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except Error as exc:
        print(f"mlseal: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
