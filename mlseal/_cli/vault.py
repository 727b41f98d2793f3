"""`mlseal vault check`: is the configured secret source usable? One line per check.

Human output (stderr) is one line per check, ``ok`` or ``failed`` with the reason;
``--json`` prints ``{"ok", "source", "checks": [{"name", "ok", "detail"}]}`` on stdout.
Exit 0 when every check passed, 2 (environment error) otherwise.
"""

from __future__ import annotations

import argparse

from mlseal._cli._options import add_json, emit_json, say


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("vault", help="check the Vault (or dev) secret source")
    vsub = p.add_subparsers(dest="vault_command", required=True, metavar="SUBCOMMAND")
    c = vsub.add_parser(
        "check",
        help="check address, auth, mounts, keys and policies; each line ok or failed",
        description="Checks the secret source mlseal would use here: Vault when VAULT_ADDR is set "
        "(auth from VAULT_TOKEN, VAULT_ROLE_ID/VAULT_SECRET_ID or MLSEAL_VAULT_K8S_ROLE), else the dev store.",
    )
    c.add_argument("--dev-dir", metavar="DIR", help="dev secret store (default .mlseal/secrets)")
    c.add_argument("--path", action="append", default=[], metavar="PATH", help="also check this KV path is readable")
    c.add_argument("--signing-key", default="mlseal-signing", metavar="NAME", help="Transit signing key name")
    c.add_argument("--data-key", default="mlseal-data", metavar="NAME", help="Transit data key name")
    add_json(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlseal.secrets import open_secret_source
    from mlseal.secrets.check import run_checks

    src = open_secret_source(dev_dir=args.dev_dir)
    checks = run_checks(src, paths=args.path, signing_key=args.signing_key, data_key=args.data_key)
    ok = all(c.ok for c in checks)
    if args.json:
        emit_json({"ok": ok, "source": src.kind, "checks": [c.to_obj() for c in checks]})
    width = max(len(c.name) for c in checks)
    for c in checks:
        say(f"{'ok    ' if c.ok else 'failed'}  {c.name.ljust(width)}  {c.detail}")
    say("all checks passed" if ok else f"{sum(not c.ok for c in checks)} check(s) failed")
    return 0 if ok else 2
