"""The webhook's HTTP side: a Starlette app served by uvicorn over TLS only.

Endpoints (DESIGN.md, "Admission"): ``POST /validate`` (AdmissionReview v1 in and out),
``GET /healthz``, ``GET /metrics`` (Prometheus text). Decisions run in a small thread
pool (one ledger connection per thread) with a deadline below the API server's
``timeoutSeconds``; a decision that misses it is denied.

The serving certificate is re-read when its files change (cert-manager rotates them in
place): a poller hashes the two files, builds a fresh `ssl.SSLContext` when they
change, and the listening context's SNI callback hands each new handshake the newest
context. A rotation that leaves the pair unreadable or mismatched keeps the old
certificate and counts a failed reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlseal.admission._metrics import CONTENT_TYPE, WebhookMetrics
from mlseal.admission.engine import VerifiedRecords
from mlseal.admission.policy import Policy
from mlseal.admission.webhook import MAX_BODY, AdmissionController, DecisionCache, audit_log
from mlseal.errors import ConfigurationError, InfrastructureError

log = logging.getLogger(__name__)

#: below the ValidatingWebhookConfiguration's timeoutSeconds (5), so the API server
#: hears our denial and its reason rather than a timeout
DECISION_TIMEOUT = 4.0
#: bodies up to this size may be answered on the event loop from the decision cache
INLINE_MAX = 64 * 1024


class CertReloader:
    """A TLS server context whose certificate follows the files on disk."""

    def __init__(self, cert: str | Path, key: str | Path, *, metrics: WebhookMetrics | None = None) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self._metrics = metrics
        self._fingerprint = self._read_fingerprint()
        try:
            self.base = self._build()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load TLS certificate {self.cert} / key {self.key}: {exc}") from None
        self.current = self.base
        self.base.sni_callback = self._sni

    def _read_fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in (self.cert, self.key):
            try:
                h.update(p.read_bytes())
            except OSError as exc:
                raise ConfigurationError(f"cannot read TLS file {p}: {exc.strerror}") from None
            h.update(b"\0")
        return h.hexdigest()

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _sni(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext) -> None:
        current = self.current
        if current is not ctx:
            sslobj.context = current

    def check(self) -> bool:
        """Reload if the files changed; True when a new certificate was loaded."""
        try:
            fingerprint = self._read_fingerprint()
        except ConfigurationError as exc:
            log.warning("TLS reload skipped: %s", exc)
            return False
        if fingerprint == self._fingerprint:
            return False
        try:
            ctx = self._build()
        except (OSError, ssl.SSLError) as exc:
            # cert and key may be caught half-rotated; the next poll sees the pair
            log.warning("TLS reload failed, keeping the current certificate: %s", exc)
            if self._metrics:
                self._metrics.tls_reloads.inc("failed")
            return False
        self.current = ctx
        self._fingerprint = fingerprint
        if self._metrics:
            self._metrics.tls_reloads.inc("ok")
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()


def _json(status: int, obj: Any) -> Response:
    return Response(json.dumps(obj).encode(), status_code=status, media_type="application/json")


def create_app(
    controller: AdmissionController,
    *,
    reloader: CertReloader | None = None,
    reload_interval: float = 10.0,
    decision_timeout: float = DECISION_TIMEOUT,
    threads: int = 4,
    head_interval: float = 0.1,
) -> Starlette:
    limiter = anyio.CapacityLimiter(threads)

    async def validate(request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return _json(*controller.deny_body(b"", f"request body of {length} bytes exceeds {MAX_BODY}",
                                               status=413))
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _json(*controller.deny_body(b"", f"request body exceeds {MAX_BODY} bytes", status=413))
        data = bytes(body)
        # Cache hits and requests that need no ledger are answered here, without a
        # thread hop: pure CPU, no I/O (the ledger head comes from the refresher below).
        result = controller.review(data, cached_only=True) if len(data) <= INLINE_MAX else None
        if result is not None:
            return _json(*result)
        with anyio.move_on_after(decision_timeout):
            result = await anyio.to_thread.run_sync(controller.review, data, limiter=limiter,
                                                    abandon_on_cancel=True)
        if result is None:
            result = controller.deny_body(data, f"no decision within {decision_timeout:g}s (ledger slow or "
                                                "unreachable); denied because the model could not be verified",
                                          status=200, internal=True)
        return _json(*result)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(controller.metrics.render(), media_type=CONTENT_TYPE)

    async def refresh_head() -> None:
        while True:
            with anyio.move_on_after(decision_timeout):
                await anyio.to_thread.run_sync(controller.refresh_head, limiter=limiter, abandon_on_cancel=True)
            await asyncio.sleep(head_interval)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(refresh_head())]
        if reloader:
            tasks.append(asyncio.create_task(reloader.watch(reload_interval)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()

    return Starlette(
        routes=[
            Route("/validate", validate, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def build_server(
    policy: Policy,
    *,
    cert: str | Path,
    key: str | Path,
    host: str = "0.0.0.0",  # noqa: S104 - a webhook in a pod listens on the pod IP
    port: int = 8443,
    cache_size: int = 4096,
    cache_ttl: float = 60.0,
    verified_records: int = 100_000,
    reload_interval: float = 10.0,
    threads: int = 4,
    ledger_factory: Callable[[], Any] | None = None,
    decision_timeout: float = DECISION_TIMEOUT,
    log_level: str = "warning",
) -> tuple[uvicorn.Server, AdmissionController]:
    """A ready-to-run uvicorn server (call ``.run()`` or ``await .serve(sockets)``)."""
    metrics = WebhookMetrics()
    reloader = CertReloader(cert, key, metrics=metrics)
    if ledger_factory is None:
        from mlseal.ledger import open_ledger

        def ledger_factory() -> Any:
            return open_ledger(policy.resolve_ledger_url(), create=False)

    controller = AdmissionController(
        policy, ledger_factory=ledger_factory, cache=DecisionCache(cache_size, cache_ttl),
        verified=VerifiedRecords(verified_records), metrics=metrics,
    )
    app = create_app(controller, reloader=reloader, reload_interval=reload_interval, threads=threads,
                     decision_timeout=decision_timeout)

    def ssl_factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return reloader.base

    config = uvicorn.Config(
        app, host=host, port=port, ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_context_factory=ssl_factory,
        http="auto", loop="auto", lifespan="on", access_log=False, log_level=log_level, server_header=False,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config), controller


def configure_audit_log(stream: Any = None) -> None:
    """Audit lines (JSON, one per decision) to stdout unless the caller set a handler."""
    if audit_log.handlers:
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit_log.addHandler(handler)
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False


def serve(policy: Policy, *, sockets: Sequence[socket.socket] | None = None, **kwargs: Any) -> None:
    """Run the webhook until SIGTERM/SIGINT."""
    configure_audit_log()
    server, _ = build_server(policy, **kwargs)
    try:
        server.run(sockets=list(sockets) if sockets else None)
    except SystemExit:
        # uvicorn exits the process (status 3) when it cannot start, e.g. the address
        # cannot be bound; it has logged why. Report it as mlseal's error (exit 2).
        if server.started:
            raise
        cfg = server.config
        raise InfrastructureError(f"the webhook could not start on {cfg.host}:{cfg.port} (see the error above)"
                                  ) from None
