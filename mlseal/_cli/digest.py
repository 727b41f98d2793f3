"""`mlseal digest` (being built; see the issue tracker)."""

from __future__ import annotations

import argparse

from mlseal.errors import ConfigurationError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("digest", help="(not yet available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise ConfigurationError("'mlseal digest' is not available in this build yet")
