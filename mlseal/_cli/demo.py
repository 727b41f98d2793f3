"""`mlseal demo [--workdir DIR]`: run the reference pipeline locally, verify, report."""

from __future__ import annotations

import argparse

from mlseal._cli._options import add_json, emit_json, say


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the reference pipeline locally (kfp.local), verify the ledger, write report.html",
        description="Run the sealed reference pipeline with KFP's local runner on a demo dataset, verify "
        "the ledger and every artifact, and write a lineage report. Uses Vault when VAULT_ADDR is set, "
        "otherwise a dev secret store in the workdir.",
    )
    p.add_argument("--workdir", default="mlseal-demo", metavar="DIR", help="where to write (default: mlseal-demo)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlseal.demo import run_demo

    say(f"mlseal demo: workdir {args.workdir}")
    result = run_demo(args.workdir)
    v = result.verification
    if args.json:
        emit_json({
            "ok": result.ok,
            "workdir": str(result.workdir),
            "secrets": result.secrets,
            "stages": [{"seq": r.seq, "stage": r.stage, "component": r.component.name, "status": r.status.value}
                       for r in result.run_records],
            "model_sha256": result.model_sha256,
            "ledger": {"ok": v.ok, "size": v.size, "root": v.root, "problems": list(v.problems),
                       "checkpoint": v.checkpoint} if v else None,
            "report": str(result.workdir / "report.html"),
            "exports": [str(p) for p in result.exports],
            "failed": result.failed,
            "seconds": round(result.seconds, 2),
        })
    say("")
    if result.ok:
        say(f"ok: {len(result.run_records)} stages sealed, signed and recorded in {result.seconds:.1f}s")
        say(f"  model    sha256:{result.model_sha256}")
    else:
        say(f"FAILED: {result.failed or 'ledger verification failed'}")
        say(f"  task logs: {result.log}")
    if v is not None:
        against = f", against the signed checkpoint of {v.checkpoint}" if v.checkpoint is not None else ""
        say(f"  ledger   {result.workdir / 'ledger.db'}: {v.size} entries, "
            f"{'verified' if v.ok else 'NOT verified'}{against} (root {v.root[:16]}…)")
        for p in v.problems[:5]:
            say(f"           {p}")
    say(f"  secrets  {result.secrets}")
    say(f"  report   {result.workdir / 'report.html'}")
    if result.exports:
        say(f"  exports  {', '.join(p.name for p in result.exports)} in {result.exports[0].parent} "
            f"(check the pack: mlseal verify-pack {result.exports[-1]} --trust {result.workdir / 'trust.yaml'})")
    say(f"  check it yourself: mlseal ledger verify --ledger sqlite:///{result.workdir / 'ledger.db'} "
        f"--trust {result.workdir / 'trust.yaml'} --checkpoint {result.workdir / 'checkpoint'} --artifacts")
    return 0 if result.ok else 1
