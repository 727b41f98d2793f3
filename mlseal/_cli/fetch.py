"""`mlseal fetch SRC DEST`: the verifying model loader (KServe storage initializer or init container).

    mlseal fetch s3://models/churn/model /mnt/models            # digest from $MLSEAL_MODEL_SHA256
    mlseal fetch SRC DEST --sha256 HEX --policy policy.yaml --record --json

Downloads the model at SRC (s3://, gs://, https://, pvc://, file://) through fsspec,
verifies it while streaming — admission policy (trusted producer, recorded URI,
lineage, gates), the OMS bundle (SRC.sig) signed by a key granted the producing stage,
every file's digest and the model digest — and only then moves it into DEST, which
must be an existing, empty directory. With --checkpoint FILE or $MLSEAL_CHECKPOINT (a
signed checkpoint note: its text, or a file's path) the ledger must extend that
checkpoint, else the model is refused as rolled back or forked. Exit 0 published, 1
refused (nothing in DEST), 2 configuration error (nothing in DEST).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from mlseal._cli._options import add_checkpoint, add_json, emit_json, say

if TYPE_CHECKING:
    from mlseal.fetch import FetchResult

DEFAULT_POLICY = "/etc/mlseal/policy.yaml"
#: ``json``: one JSON log line per run on stderr (docs/fetch.md); default ``text``
LOG_FORMAT_ENV = "MLSEAL_LOG_FORMAT"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fetch",
        help="verifying model loader: download, verify while streaming, publish only what verified",
        description=(__doc__ or "").split("\n\n")[-1].replace("\n", " "),
    )
    p.add_argument("src", metavar="SRC", help="the model's storage URI (KServe passes storageUri)")
    p.add_argument("dest", metavar="DEST", help="the model volume's mount point, an empty directory (/mnt/models)")
    p.add_argument("--sha256", metavar="HEX",
                   help="the model digest to verify (default: $MLSEAL_MODEL_SHA256; required one way or the other)")
    p.add_argument("--policy", metavar="FILE",
                   help=f"admission policy (default: $MLSEAL_POLICY, else {DEFAULT_POLICY})")
    p.add_argument("--bundle", metavar="URI", help="the model's OMS bundle (default: SRC.sig)")
    p.add_argument("--record", action="store_true",
                   help="append a signed 'serve' record of what was served where (POD_NAMESPACE, POD_NAME, "
                        "MLSEAL_WORKLOAD), with the loader's own key")
    p.add_argument("--ledger", metavar="URL",
                   help="ledger to append the --record to (default: $MLSEAL_LEDGER, else the policy's ledger)")
    add_checkpoint(p, "the policy's ledger")
    p.add_argument("--metrics-file", metavar="FILE",
                   help="write this run's Prometheus metrics here, textfile format (default: $MLSEAL_METRICS_FILE)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from mlseal.errors import Error
    from mlseal.fetch import guard_logs

    guard_logs()
    start = time.monotonic()
    try:
        result = _run(args)
    except Error as exc:
        from mlseal.fetch import scrub

        text = scrub(str(exc))
        codes = tuple(str(c) for c in getattr(exc, "codes", ()))
        _account(args, "refused" if exc.exit_code == 1 else "error", codes, None, text, time.monotonic() - start)
        if args.json:
            out: dict[str, Any] = {"ok": False, "error": text, "exit": exc.exit_code}
            if codes:  # why, as the admission reason codes (ledger_rolled_back, gate_failed, ...)
                out["codes"] = list(codes)
            emit_json(out)
        say(f"mlseal fetch: refused, nothing published: {text}")
        return exc.exit_code
    _account(args, "published", (), result, None, time.monotonic() - start)
    if args.json:
        emit_json(result.to_json())
    say(f"mlseal fetch: {result.uri} verified (sha256 {result.sha256[:16]}…, {result.files} file(s), "
        f"{result.bytes} bytes, producer record {result.producer_seq}, signed by {result.signer}); "
        f"published to {result.dest}")
    for w in result.warnings:
        say(f"  warning: {w}")
    if result.record_seq is not None:
        say(f"  served record: ledger entry {result.record_seq}")
    return 0


def _account(args: argparse.Namespace, decision: str, codes: tuple[str, ...], result: FetchResult | None,
             error: str | None, seconds: float) -> None:
    """The run's metrics file (--metrics-file / $MLSEAL_METRICS_FILE) and, with
    MLSEAL_LOG_FORMAT=json, its one JSON log line on stderr (docs/fetch.md)."""
    import sys

    from mlseal import _jsonlog
    from mlseal.errors import ConfigurationError
    from mlseal.fetch import Placement
    from mlseal.fetch._metrics import LoaderMetrics, metrics_path

    path = metrics_path(args.metrics_file)
    if path is not None:
        m = LoaderMetrics()
        m.observe(decision, codes, result.bytes if result else 0, seconds)
        try:
            m.write(path)
        except ConfigurationError as exc:  # metrics never change the verdict, nor fail a published model
            say(f"mlseal fetch: warning: {exc}")
    if os.environ.get(LOG_FORMAT_ENV, "text") != "json":
        return
    where = Placement.from_env()
    sha = result.sha256 if result else (args.sha256 or os.environ.get("MLSEAL_MODEL_SHA256"))
    fields: dict[str, Any] = {
        "uri": result.uri if result else _shown_uri(args.src),
        "dest": str(result.dest) if result else args.dest,
        "model_sha256": sha.removeprefix("sha256:") if sha else None,
        "decision": decision,
        "reasons": [error] if error else [],
        "codes": list(codes),
        "warnings": list(result.warnings) if result else [],
        "files": result.files if result else None,
        "bytes": result.bytes if result else None,
        "producer_seq": result.producer_seq if result else None,
        "signer": result.signer if result else None,
        "record_seq": result.record_seq if result else None,
        "namespace": where.namespace,
        "pod": where.pod,
        "duration_ms": round(seconds * 1000, 3),
    }
    level = "info" if decision == "published" else "error"
    print(_jsonlog.line("mlseal.fetch", "fetch", level=level, **fields), file=sys.stderr, flush=True)


def _shown_uri(uri: str) -> str:
    from mlseal._uris import redact_uri

    return redact_uri(uri)


def _run(args: argparse.Namespace) -> FetchResult:
    from mlseal import _progress
    from mlseal.admission import load_policy
    from mlseal.fetch import fetch_model
    from mlseal.ledger.rollback import load_checkpoint

    sha = args.sha256 if args.sha256 is not None else os.environ.get("MLSEAL_MODEL_SHA256")
    policy = load_policy(args.policy or os.environ.get("MLSEAL_POLICY") or DEFAULT_POLICY)
    held = load_checkpoint(policy.trust, path=args.checkpoint)
    with _progress.shown("fetch", unit="bytes", enabled=_progress.wanted(args)):
        return fetch_model(
            args.src, args.dest, sha256=sha, policy=policy, bundle_uri=args.bundle, record=args.record,
            record_ledger=args.ledger or os.environ.get("MLSEAL_LEDGER") or None, checkpoint=held,
        )
