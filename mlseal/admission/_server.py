"""The webhook's HTTP side: a Starlette app served by uvicorn over TLS only.

Endpoints (docs/design.md#the-webhooks-http-interface): ``POST /validate`` (AdmissionReview v1 in and out),
``GET /healthz`` (liveness), ``GET /readyz`` (200 once the verified ledger view is
built), ``GET /metrics`` (Prometheus text). One background thread keeps the
controller's verified view of the ledger up to date (every 0.1 s); a decision reads
only that view, so reviews up to ``INLINE_MAX`` bytes are decided on the event loop and
larger ones in a small thread pool with a deadline below the API server's
``timeoutSeconds``; a decision that misses it is denied.

The serving certificate is re-read when its files change (cert-manager rotates them in
place): a poller hashes the two files, builds a fresh `ssl.SSLContext` when they
change, and the listening context's SNI callback hands each new handshake the newest
context. A rotation that leaves the pair unreadable or mismatched keeps the old
certificate and counts a failed reload.

Resource bounds (`ServeLimits`), so that slow, large or many clients and a stalled
ledger cannot exhaust the pod:

- the TLS handshake must finish within ``read_timeout``, and a request's headers and
  body within ``read_timeout`` of its first byte (or of the connection opening); a
  slower client's connection is closed;
- a body is capped at ``max_body`` bytes (refused by Content-Length before it is read,
  and while streaming), and all bodies being read at once share ``max_buffered`` bytes:
  beyond it a review is denied with 503 rather than buffered;
- large reviews are decided on exactly ``threads`` daemon threads; at most
  ``decision_backlog`` more wait for one (each within the decision deadline), and beyond
  that a review is denied at once. No decision reads the ledger: one thread and one
  ledger connection follow it, so a stalled ledger makes the server deny (once its last
  verified state is older than ``max_staleness``), never grow;
- uvicorn's ``limit_concurrency`` answers 503 beyond ``max_connections``, idle
  keep-alive connections close after ``keep_alive`` seconds, and SIGTERM stops the
  server within ``graceful_shutdown`` seconds whatever the clients are doing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import queue
import socket
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from mlseal.admission._metrics import CONTENT_TYPE, WebhookMetrics
from mlseal.admission.policy import Policy
from mlseal.admission.webhook import MAX_BODY, MAX_STALENESS, AdmissionController, DecisionCache, audit_log
from mlseal.errors import ConfigurationError, InfrastructureError
from mlseal.ledger.checkpoint import Trusted
from mlseal.ledger.dsn import redact_text
from mlseal.ledger.rollback import CheckpointState

log = logging.getLogger(__name__)

#: below the ValidatingWebhookConfiguration's timeoutSeconds (5), so the API server
#: hears our denial and its reason rather than a timeout
DECISION_TIMEOUT = 4.0
#: bodies up to this size are decided on the event loop (the decision itself reads only
#: memory); larger ones go to the decision pool
INLINE_MAX = 64 * 1024


@dataclasses.dataclass(frozen=True)
class ServeLimits:
    """Bounds on what clients may make the server hold (see the module docstring)."""

    #: largest request body; an AdmissionReview for one workload is a few KiB
    max_body: int = MAX_BODY
    #: bytes of request bodies being read at once, over all connections
    max_buffered: int = 16 * 1024 * 1024
    #: seconds from a request's first byte until its headers and body are complete
    read_timeout: float = 10.0
    #: seconds an idle keep-alive connection stays open
    keep_alive: float = 5.0
    #: connections (and requests in progress) beyond which uvicorn answers 503
    max_connections: int = 256
    #: seconds SIGTERM waits for requests in progress before closing them
    graceful_shutdown: float = 3.0
    #: reviews that may wait for a busy decision thread (a burst); more are denied at once
    decision_backlog: int = 16

    def __post_init__(self) -> None:
        for name in ("max_body", "max_buffered", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.decision_backlog < 0:
            raise ConfigurationError(f"decision_backlog must be at least 0, got {self.decision_backlog}")
        for name in ("read_timeout", "keep_alive", "graceful_shutdown"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")
        if self.max_buffered < self.max_body:
            raise ConfigurationError(f"max_buffered ({self.max_buffered}) must be at least max_body "
                                     f"({self.max_body})")


class DecisionPool:
    """Exactly `size` daemon threads and at most `backlog` jobs waiting for one.

    A job counts from submission until a thread has finished it (or dropped it, if its
    caller gave up while it waited); beyond ``size + backlog`` jobs, submission is
    refused. A job that outlives its caller's deadline keeps its thread busy until it
    returns, so a stalled ledger makes the pool refuse work rather than grow. The
    threads are daemons: a job stuck in the ledger never holds the process at exit.
    """

    def __init__(self, size: int, backlog: int = 0) -> None:
        if size < 1:
            raise ConfigurationError(f"threads must be at least 1, got {size}")
        self.size, self.backlog = size, backlog
        self.busy = 0
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]]
        self._jobs = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def try_submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any] | None:
        """A future for ``fn(*args)``, or None when every thread is busy."""
        with self._lock:
            if self.busy >= self.size + self.backlog:
                return None
            self.busy += 1
            if len(self._threads) < min(self.busy, self.size):
                t = threading.Thread(target=self._work, name=f"mlseal-decide-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while True:
            fut, fn, args = self._jobs.get()
            try:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn(*args))
                    except BaseException as exc:  # handed to the awaiting request
                        fut.set_exception(exc)
            finally:
                with self._lock:
                    self.busy -= 1


class _Budget:
    """Bytes of request bodies the server is holding at once."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class _ReadDeadline:
    """A deadline on reading each request, mixed into uvicorn's HTTP protocols.

    uvicorn bounds idle keep-alive time but not how long a request may take to
    arrive: a client sending a byte every few seconds holds a connection (and its
    buffered body) forever. The deadline starts when the connection opens or the
    first byte of the next request arrives, and ends when the body is complete.
    """

    read_timeout = 10.0
    _read_deadline: asyncio.TimerHandle | None = None
    # provided by the uvicorn protocol this is mixed into
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._read_deadline is None and (self.cycle is None or self.cycle.response_complete
                                            or self.cycle.more_body):
            self._arm()
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not None and not self.cycle.more_body:
            self._disarm()

    def on_response_complete(self) -> None:
        # a pipelined request already buffered starts here, not in data_received
        super().on_response_complete()  # type: ignore[misc]
        if self._read_deadline is None and self.cycle is not None and self.cycle.more_body \
                and not self.cycle.response_complete and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _expired(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            log.warning("closing a connection whose request did not arrive within %gs", self.read_timeout)
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server with a TLS handshake deadline (uvicorn does not set one, and
    asyncio's default lets a client that never completes the handshake hold its
    connection for 60 s, uncounted by ``limit_concurrency``)."""

    handshake_timeout = 10.0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        # uvicorn calls loop.create_server with no handshake deadline and no hook to add one
        loop.create_server = functools.partial(  # type: ignore[method-assign]
            loop.create_server, ssl_handshake_timeout=self.handshake_timeout)
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server


def _bounded_protocol(read_timeout: float, http: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (h11 when httptools is missing or asked for) with a read deadline."""
    base: type[asyncio.Protocol] = H11Protocol
    if http != "h11":
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:
            pass
        else:
            base = HttpToolsProtocol
    return type(f"ReadDeadline{base.__name__}", (_ReadDeadline, base), {"read_timeout": read_timeout})


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
    limits: ServeLimits | None = None,
    inline_max: int | None = None,
) -> Starlette:
    limits = limits or ServeLimits()
    max_body = limits.max_body
    inline_max = INLINE_MAX if inline_max is None else inline_max
    pool = DecisionPool(threads, limits.decision_backlog)
    budget = _Budget(limits.max_buffered)

    async def run(fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """(True, result); (False, None) when the pool is full or the deadline passed."""
        fut = pool.try_submit(fn, *args)
        if fut is None:
            return False, None
        with anyio.move_on_after(decision_timeout):
            return True, await asyncio.wrap_future(fut)
        return True, None

    async def read_body(request: Request) -> bytes | tuple[int, dict[str, Any]]:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body:
            return controller.deny_body(b"", f"request body of {length} bytes exceeds the limit of {max_body}",
                                        status=413)
        body = bytearray()
        held = int(length) if length.isdigit() else 0
        if not budget.take(held):
            return controller.deny_body(b"", "too many request bodies being read at once; denied, retry later",
                                        status=503, internal=True)
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body:
                    return controller.deny_body(b"", f"request body exceeds the limit of {max_body} bytes",
                                                status=413)
                if len(body) > held:
                    if not budget.take(len(body) - held):
                        return controller.deny_body(b"", "too many request bodies being read at once; denied, "
                                                    "retry later", status=503, internal=True)
                    held = len(body)
            return bytes(body)
        finally:
            budget.give(held)

    async def validate(request: Request) -> Response:
        try:
            read = await read_body(request)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening
        if not isinstance(read, bytes):
            return _json(*read)
        data = read
        # A decision reads only the verified in-memory view (no I/O): small reviews are
        # answered here, without a thread hop; large bodies (parsing them takes a while)
        # go to the bounded pool so the event loop stays responsive.
        if len(data) <= inline_max:
            return _json(*controller.review(data))
        started, result = await run(controller.review, data)
        if not started:
            result = controller.deny_body(data, f"all {threads} decision threads are busy and "
                                                f"{limits.decision_backlog} reviews wait; denied because the "
                                                "model could not be verified in time", status=200, internal=True)
        elif result is None:
            result = controller.deny_body(data, f"no decision within {decision_timeout:g}s; denied because the "
                                                "model could not be verified in time", status=200, internal=True)
        return _json(*result)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        # ready once the verified view is built; a view that failed or went stale while
        # serving stays ready, so its denials (which name the reason) reach the API server;
        # one refused at start (a ledger that does not extend a checkpoint held) is not
        if controller.ready:
            return JSONResponse({"status": "ready"})
        failure = controller.start_failure
        if failure is not None:
            return JSONResponse({"status": "ledger refused", "reason": failure.code,
                                 "message": redact_text(str(failure))}, status_code=503)
        return JSONResponse({"status": "verifying the ledger"}, status_code=503)

    async def metrics(request: Request) -> Response:
        return Response(controller.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    def follow(stop: threading.Event) -> None:
        while True:
            controller.follow()
            if stop.wait(head_interval):
                return

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = threading.Event()
        follower = threading.Thread(target=follow, args=(stop,), name="mlseal-ledger-view", daemon=True)
        follower.start()
        tasks = []
        if reloader:
            tasks.append(asyncio.create_task(reloader.watch(reload_interval)))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()

    app = Starlette(
        routes=[
            Route("/validate", validate, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.pool, app.state.budget = pool, budget
    return app


def build_server(
    policy: Policy,
    *,
    cert: str | Path,
    key: str | Path,
    host: str = "0.0.0.0",  # noqa: S104 - a webhook in a pod listens on the pod IP
    port: int = 8443,
    cache_size: int = 4096,
    cache_ttl: float = 60.0,
    max_staleness: float = MAX_STALENESS,
    inline_max: int = INLINE_MAX,
    reload_interval: float = 10.0,
    threads: int = 4,
    ledger_factory: Callable[[], Any] | None = None,
    decision_timeout: float = DECISION_TIMEOUT,
    log_level: str = "warning",
    limits: ServeLimits | None = None,
    http: str = "auto",
    checkpoint: Trusted | None = None,
    checkpoint_state: str | Path | None = None,
) -> tuple[uvicorn.Server, AdmissionController]:
    """A ready-to-run uvicorn server (call ``.run()`` or ``await .serve(sockets)``).

    ``checkpoint``: a signed checkpoint (verified: `mlseal.ledger.rollback.load_checkpoint`)
    the ledger must extend; ``checkpoint_state``: the file where the webhook keeps the
    newest checkpoint it accepted (read now if present; one that does not verify stops
    the start), see `AdmissionController`.
    """
    state = kept = None
    if checkpoint_state is not None:
        state = CheckpointState(checkpoint_state)
        state.check(policy.trust)
        kept = state.read(policy.trust)
    metrics = WebhookMetrics()
    reloader = CertReloader(cert, key, metrics=metrics)
    if ledger_factory is None:
        from mlseal.ledger import open_ledger

        def ledger_factory() -> Any:
            return open_ledger(policy.resolve_ledger_url(), create=False)

    controller = AdmissionController(
        policy, ledger_factory=ledger_factory, cache=DecisionCache(cache_size, cache_ttl), metrics=metrics,
        max_staleness=max_staleness, checkpoint=checkpoint, state=state, kept=kept,
    )
    app = create_app(controller, reloader=reloader, reload_interval=reload_interval, threads=threads,
                     decision_timeout=decision_timeout, limits=limits, inline_max=inline_max)
    limits = limits or ServeLimits()

    def ssl_factory(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return reloader.base

    config = uvicorn.Config(
        app, host=host, port=port, ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_context_factory=ssl_factory,
        http=_bounded_protocol(limits.read_timeout, http), loop="auto", lifespan="on", access_log=False,
        log_level=log_level, server_header=False, timeout_keep_alive=max(1, round(limits.keep_alive)),
        limit_concurrency=limits.max_connections, timeout_graceful_shutdown=max(1, round(limits.graceful_shutdown)),
        h11_max_incomplete_event_size=16 * 1024,
    )
    server = _Server(config)
    server.handshake_timeout = limits.read_timeout
    return server, controller


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
