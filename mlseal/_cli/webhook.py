"""`mlseal webhook serve`: the Kubernetes validating admission webhook (TLS only)."""

from __future__ import annotations

import argparse

from mlseal._cli._options import add_checkpoint, add_policy


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("webhook", help="Kubernetes admission webhook")
    wsub = p.add_subparsers(dest="webhook_command", required=True, metavar="ACTION")
    s = wsub.add_parser(
        "serve",
        help="serve POST /validate, /healthz, /metrics over TLS",
        description="Answer admission.k8s.io/v1 AdmissionReviews for KServe InferenceServices and annotated "
        "Deployments/StatefulSets from a verified, in-memory view of the ledger (every entry verified once at "
        "start, /readyz answers 200 once it is built; new entries followed every 0.1 s). Certificate files are "
        "re-read when they change.",
    )
    add_policy(s)
    s.add_argument("--tls-cert", required=True, metavar="PEM", help="serving certificate chain (PEM)")
    s.add_argument("--tls-key", required=True, metavar="PEM", help="serving private key (PEM)")
    s.add_argument("--host", default="0.0.0.0", help="listen address (default: all)")  # noqa: S104
    s.add_argument("--port", type=int, default=8443, help="listen port (default: 8443)")
    s.add_argument("--cache-size", type=int, default=4096, help="decisions kept (0 disables the cache)")
    s.add_argument("--cache-ttl", type=float, default=60.0, help="seconds a cached decision lives")
    s.add_argument("--max-staleness", type=float, default=30.0, metavar="SECONDS",
                   help="while the ledger cannot be read, keep deciding from the last verified state for this long, "
                   "then deny every model (default: 30)")
    s.add_argument("--reload-interval", type=float, default=10.0, help="seconds between certificate checks")
    s.add_argument("--threads", type=int, default=4, help="decision worker threads")
    s.add_argument("--max-body", type=int, default=1024 * 1024, metavar="BYTES",
                   help="largest AdmissionReview body; larger ones are denied with 413 (default: 1 MiB)")
    s.add_argument("--max-buffered", type=int, default=16 * 1024 * 1024, metavar="BYTES",
                   help="request bytes read at once over all connections; beyond it reviews are denied with 503 "
                   "(default: 16 MiB)")
    s.add_argument("--read-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a request's headers and body must arrive within this time, or the connection is closed "
                   "(default: 10)")
    s.add_argument("--max-connections", type=int, default=256,
                   help="connections and requests in progress beyond which the server answers 503 (default: 256)")
    s.add_argument("--inline-max", type=int, default=64 * 1024, metavar="BYTES",
                   help="reviews up to this size are decided on the event loop, larger ones by the decision "
                   "threads (default: 64 KiB; 0: every review on a thread)")
    s.add_argument("--decision-backlog", type=int, default=16, metavar="N",
                   help="reviews that may wait for a busy decision thread; more are denied at once (default: 16)")
    add_checkpoint(s)
    s.add_argument("--checkpoint-state", metavar="FILE",
                   help="keep the newest signed checkpoint the webhook accepted in this file (replaced atomically) "
                   "and require the ledger to extend it at the next start; a start whose ledger does not is not "
                   "ready and denies every model (ledger_rolled_back / ledger_forked)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlseal.admission import load_policy
    from mlseal.admission._server import ServeLimits, serve
    from mlseal.errors import ConfigurationError
    from mlseal.ledger.rollback import load_checkpoint

    if not 0 < args.port < 65536:
        raise ConfigurationError(f"--port must be 1-65535, got {args.port}; e.g. --port 8443")
    for flag, value, least in (("--threads", args.threads, 1), ("--cache-size", args.cache_size, 0),
                               ("--cache-ttl", args.cache_ttl, 0), ("--max-staleness", args.max_staleness, 0),
                               ("--inline-max", args.inline_max, 0)):
        if value < least:
            raise ConfigurationError(f"{flag} must be at least {least}, got {value}; e.g. {flag} {max(least, 1) * 4}")
    if not args.reload_interval > 0:
        raise ConfigurationError(f"--reload-interval must be a positive number of seconds, got {args.reload_interval}; "
                                 "e.g. --reload-interval 60")
    limits = ServeLimits(max_body=args.max_body, max_buffered=args.max_buffered, read_timeout=args.read_timeout,
                         max_connections=args.max_connections, decision_backlog=args.decision_backlog)
    _json_logs()
    policy = load_policy(args.policy)
    held = load_checkpoint(policy.trust, path=args.checkpoint)
    serve(
        policy, cert=args.tls_cert, key=args.tls_key, host=args.host, port=args.port, cache_size=args.cache_size,
        cache_ttl=args.cache_ttl, max_staleness=args.max_staleness, inline_max=args.inline_max,
        reload_interval=args.reload_interval, threads=args.threads, limits=limits, checkpoint=held,
        checkpoint_state=args.checkpoint_state,
    )
    return 0


def _json_logs() -> None:
    """The webhook's own log records (stderr) in the audit line's JSON format (mlseal._jsonlog)."""
    import logging

    from mlseal._jsonlog import JsonFormatter

    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())
