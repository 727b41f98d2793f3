"""The webhook's request handling: AdmissionReview bytes in, AdmissionReview out.

`AdmissionController.review(body)` is synchronous and does all the work the HTTP server
delegates to it: parse the ``admission.k8s.io/v1`` AdmissionReview, find the model, run
the engine against the controller's verified, in-memory view of the ledger (through a
bounded cache keyed by digest, URI, policy and the view's size and root), count the
decision, write one JSON audit line. It does no I/O and never raises: any failure,
including a bug, an unreachable ledger or a ledger found rolled back or forked, becomes
a denial with a reason (fail closed). `AdmissionController.follow` keeps the view up to
date; `mlseal.admission._server` calls it from one thread and puts `review` behind TLS.

    >>> from mlseal.admission import Decision
    >>> review_response("uid-1", Decision(allowed=False, reasons=["model sha256 ab… is not in the ledger"]))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'apiVersion': 'admission.k8s.io/v1', 'kind': 'AdmissionReview',
     'response': {'uid': 'uid-1', 'allowed': False, 'status': {'code': 403, 'reason': 'Forbidden',
                  'message': 'mlseal: model sha256 ab… is not in the ledger'}}}
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mlseal import _jsonlog
from mlseal._uris import redact_uri
from mlseal.admission._metrics import WebhookMetrics
from mlseal.admission.decision import Decision, Finding, Reason, denial_line, see_why
from mlseal.admission.engine import apply_mode, check_model
from mlseal.admission.manifest import ManifestError, ModelRef
from mlseal.admission.policy import Policy, Rules
from mlseal.admission.workload import WorkloadDenied, workload_model
from mlseal.errors import Error
from mlseal.ledger.checkpoint import Trusted
from mlseal.ledger.dsn import redact_text
from mlseal.ledger.protocols import LedgerReader
from mlseal.ledger.rollback import CheckpointState
from mlseal.ledger.verified import VerifiedView, ViewFailed

__all__ = [
    "MAX_BODY",
    "MAX_STALENESS",
    "REVIEW_API",
    "AdmissionController",
    "BadReview",
    "DecisionCache",
    "ServedLedger",
    "parse_review",
    "review_response",
]

REVIEW_API = "admission.k8s.io/v1"
#: default cap on a request body (configurable: `mlseal webhook serve --max-body`); bodies
#: above it are denied unread. The reviewed kinds (InferenceService, Deployment,
#: StatefulSet) are a few KiB; an UPDATE carries the object twice, and etcd allows
#: objects up to 1.5 MiB, so a cluster with huge workload objects must raise it.
MAX_BODY = 1024 * 1024
#: seconds the webhook keeps deciding from its last verified state while the ledger cannot
#: be read; beyond that it denies ``ledger_unavailable``
MAX_STALENESS = 30.0
#: Kubernetes shows at most a few KiB of warnings; keep each readable
_MAX_WARNING = 400

audit_log = logging.getLogger("mlseal.audit")
log = logging.getLogger(__name__)


class _RedactCredentials(logging.Filter):
    """Hide DSN credentials in this module's records, tracebacks included.

    The ledger's own errors are redacted where they are raised; this guards the
    tracebacks of unexpected exceptions (a driver error's text can echo its DSN).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        clean = redact_text(text)
        if clean != text:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


log.addFilter(_RedactCredentials())
audit_log.addFilter(_RedactCredentials())


class ServedLedger(LedgerReader, Protocol):
    """What the webhook needs from an open ledger: the engine's view plus head() and close()."""

    def head(self) -> Any: ...

    def close(self) -> None: ...


class BadReview(Exception):
    """The body is not a usable AdmissionReview (answered with HTTP 400, denied)."""


@dataclass(frozen=True)
class _Request:
    uid: str
    operation: str
    namespace: str | None
    dry_run: bool
    kind: str
    name: str
    user: str
    obj: Any
    old: Any


class DecisionCache:
    """A bounded LRU of decisions with a time-to-live, safe across threads.

    The key includes the ledger head, so an append invalidates it; the TTL bounds how
    long an in-place edit of stored entries (which leaves the head as it was) can go
    unseen.
    """

    def __init__(self, max_entries: int = 4096, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._max, self._ttl, self._clock = max_entries, ttl, clock
        self._items: OrderedDict[Hashable, tuple[float, Decision]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Decision | None:
        if self._max <= 0:
            return None
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            if self._clock() - hit[0] > self._ttl:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: Hashable, decision: Decision) -> None:
        if self._max <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock(), decision)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _str(v: object, where: str, *, optional: bool = False, limit: int = 253) -> str:
    if v is None and optional:
        return ""
    if not isinstance(v, str):
        raise BadReview(f"{where} must be a string, got {type(v).__name__}")
    return v[:limit]


def parse_review(body: bytes) -> _Request:
    """Parse an AdmissionReview v1 request; raises BadReview naming the bad field."""
    try:
        review = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadReview("request body is not JSON") from None
    if not isinstance(review, dict):
        raise BadReview(f"AdmissionReview must be a JSON object, got {type(review).__name__}")
    if review.get("apiVersion") != REVIEW_API or review.get("kind") != "AdmissionReview":
        raise BadReview(
            f"expected apiVersion {REVIEW_API} kind AdmissionReview, got "
            f"{str(review.get('apiVersion'))[:60]!r} {str(review.get('kind'))[:60]!r}; "
            "set admissionReviewVersions: [v1] in the webhook configuration"
        )
    req = review.get("request")
    if not isinstance(req, dict):
        raise BadReview(f"request must be an object, got {type(req).__name__}")
    uid = _str(req.get("uid"), "request.uid", limit=128)
    if not uid:
        raise BadReview("request.uid is empty")
    operation = _str(req.get("operation"), "request.operation", limit=16)
    if operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise BadReview(f"request.operation {operation!r} is not CREATE, UPDATE, DELETE or CONNECT")
    dry_run = req.get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise BadReview(f"request.dryRun must be a boolean, got {type(dry_run).__name__}")
    namespace = req.get("namespace")
    if namespace is not None:
        namespace = _str(namespace, "request.namespace", limit=63) or None
    kind = req.get("kind")
    kind_name = _str(kind.get("kind"), "request.kind.kind", optional=True) if isinstance(kind, dict) else ""
    user_info = req.get("userInfo")
    user = user_info.get("username") if isinstance(user_info, dict) else None
    return _Request(
        uid=uid,
        operation=operation,
        namespace=namespace,
        dry_run=dry_run,
        kind=kind_name,
        name=_str(req.get("name"), "request.name", optional=True),
        user=user[:253] if isinstance(user, str) else "",
        obj=req.get("object"),
        old=req.get("oldObject"),
    )


def review_response(uid: str, decision: Decision, commands: list[str] | None = None) -> dict[str, Any]:
    """The AdmissionReview answer; a denial's message is one line: every reason, then the
    `commands` that show why (`mlseal.admission.decision.see_why`)."""
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = {"code": 403, "reason": "Forbidden",
                              "message": "mlseal: " + denial_line(decision, commands or [])}
    if decision.warnings:
        response["warnings"] = ["mlseal: " + w[:_MAX_WARNING] for w in decision.warnings]
    return {"apiVersion": REVIEW_API, "kind": "AdmissionReview", "response": response}


def _detail(exc: BaseException) -> str:
    """What a denial may say about a failure: mlseal's own errors (which carry no secrets by
    rule, and are redacted again before truncation), others by type only."""
    return redact_text(str(exc))[:300] if isinstance(exc, Error) else type(exc).__name__


def _internal(what: str, exc: BaseException) -> Finding:
    detail = _detail(exc)
    return Finding(Reason.INTERNAL_ERROR, f"internal error while {what} ({detail}); the webhook denies "
                                          "when it cannot decide (fail closed); see the webhook's log")


def _log_unexpected(what: str, exc: BaseException) -> None:
    """Log the traceback of an exception that is not one of mlseal's own errors.

    The webhook denies on any failure (fail closed), but a bug must still reach the log
    with its traceback; mlseal's own errors already name what failed in the decision.
    """
    if not isinstance(exc, Error):
        log.error("unexpected error while %s", what, exc_info=exc)


class AdmissionController:
    """Decides AdmissionReviews against one policy, from a verified view of the ledger.

    `follow` (called every ~0.1 s by one background thread of the server) builds a
    `mlseal.ledger.verified.VerifiedView` of the ledger once, reading and verifying every
    entry, then reads only the new entries each time. Decisions read that view alone:
    no ledger connection, no I/O, so `review` can run on the event loop. Until the view
    is built, and once the last successful refresh is older than ``max_staleness``
    seconds (the ledger unreachable), every model is denied ``ledger_unavailable``; a view
    that saw the ledger rolled back or forked denies every model with that reason until
    the process restarts.

    Checkpoints it holds: ``checkpoint`` (a floor from configuration) and what ``state``
    kept from an earlier run (read at start, `mlseal.ledger.rollback.CheckpointState`);
    the view must extend each (`VerifiedView.require`). A view that fails while it is
    first built (a ledger that does not extend them: rolled back or forked) leaves the
    controller not `ready`, with `start_failure` naming why, and every model denied with
    that reason. Whenever the view accepts a newer signed checkpoint than the state holds
    (the newest stored one, checked against the view, or the floor), `follow` replaces the
    state file with it.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        ledger_factory: Callable[[], ServedLedger],
        cache: DecisionCache | None = None,
        metrics: WebhookMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
        max_staleness: float = MAX_STALENESS,
        monotonic: Callable[[], float] = time.monotonic,
        checkpoint: Trusted | None = None,
        state: CheckpointState | None = None,
        kept: Trusted | None = None,
    ) -> None:
        self.policy = policy
        self._open = ledger_factory
        self.cache = cache if cache is not None else DecisionCache()
        self.metrics = metrics or WebhookMetrics()
        self._clock = clock
        self._monotonic = monotonic
        self.max_staleness = max_staleness
        self.view: VerifiedView | None = None
        self._led: ServedLedger | None = None
        self._follow_error: str | None = None
        #: set once the first attempt to build the view has finished (either way)
        self.attempted = threading.Event()
        self._following = threading.Lock()
        #: checkpoints accepted before (the configured floor, the kept state) the view must extend
        self.held = tuple(t for t in (checkpoint, kept) if t is not None)
        self._state = state
        self._kept_size = kept.checkpoint.size if kept is not None else -1
        self._state_error: str | None = None
        #: why the view failed while it was first built (then the controller is not ready)
        self.start_failure: ViewFailed | None = None

    # --- following the ledger (one background thread) ------------------------------
    @property
    def ready(self) -> bool:
        """The view is built and did not fail while it was: decisions come from verified entries.

        A view that fails later (a rollback while serving) stays ready, so that its
        denials, which name the reason, reach the API server; one that failed at start
        (the ledger does not extend a checkpoint held) is not, so that a rolling update
        does not replace serving pods by ones that deny everything."""
        return self.view is not None and self.start_failure is None

    def follow(self) -> None:
        """Build the verified view, or read the ledger's new entries into it. Never raises."""
        with self._following:
            self._follow()

    def _follow(self) -> None:
        try:
            if self._led is None:
                self._led = self._open()
            if self.view is None:
                self.view = self._build(self._led)
            else:
                self.view.ledger = self._led
                self.view.refresh()
            self._follow_error = None
            self._keep()
        except ViewFailed:
            pass  # the view keeps its failure; every decision names it
        except Exception as exc:
            if self._follow_error is None:
                _log_unexpected("reading the ledger", exc)
                log.warning("cannot read the ledger: %s", _detail(exc))
            self._follow_error = _detail(exc)
            self._drop_ledger()
        finally:
            self.attempted.set()

    def _build(self, led: ServedLedger) -> VerifiedView:
        """The first view: every entry verified, and every checkpoint held required of it;
        published only after both (a review never reads an unchecked view)."""
        view = VerifiedView(led, self.policy.trust, clock=self._monotonic)
        for held in self.held:
            with contextlib.suppress(ViewFailed):  # kept by the view: every read raises it
                view.require(held)
        self.start_failure = view.failure
        if view.failure is not None:
            log.error("the ledger was refused at start, not ready: %s", redact_text(str(view.failure)))
        else:
            log.info("verified ledger view built: %d records", view.size())
        return view

    def _keep(self) -> None:
        """Replace the state file when the view accepted a newer checkpoint than it holds."""
        view, state = self.view, self._state
        accepted = view.checkpoint if view is not None and view.failure is None else None
        if state is None or accepted is None or accepted.checkpoint.size <= self._kept_size:
            return
        try:
            state.save(accepted)
        except OSError as exc:
            why = f"{exc.strerror or exc}"
            if self._state_error != why:  # once per cause, not every 0.1 s
                log.warning("cannot keep the accepted checkpoint (size %d) in %s: %s; after a restart the "
                            "webhook holds only the older one", accepted.checkpoint.size, state.path, why)
            self._state_error = why
            return
        self._state_error = None
        self._kept_size = accepted.checkpoint.size
        log.info("kept the accepted checkpoint of %d records in %s", self._kept_size, state.path)

    def _drop_ledger(self) -> None:
        led, self._led = self._led, None
        if led is not None:
            with contextlib.suppress(Exception):  # the connection is being discarded anyway
                led.close()

    def close(self) -> None:
        self._drop_ledger()

    # --- the decision ---------------------------------------------------------------
    def _key(self, ref: ModelRef, rules: Rules, head: Any) -> Hashable:
        return (self.policy.fingerprint, rules, ref.sha256, ref.uri, ref.where, head.size, head.root)

    def _unavailable(self) -> Decision | None:
        """The denial while nothing verified can be read, or None."""
        view = self.view
        if view is None:
            if self._follow_error is not None:
                why = (f"the ledger is unreachable ({self._follow_error}); no model can be verified, so admission "
                       "is denied until the webhook can read the ledger")
            else:
                why = ("the webhook is still reading and verifying the ledger; no model can be verified until it "
                       "has, so admission is denied (retry shortly)")
            return Decision.deny(Finding(Reason.LEDGER_UNAVAILABLE, why))
        failure = view.failure
        if failure is not None:
            return _failed(failure)
        age = self._monotonic() - view.verified_at
        if age > self.max_staleness:
            return Decision.deny(Finding(Reason.LEDGER_UNAVAILABLE, (
                f"the ledger could not be read for {age:.0f}s ({self._follow_error or 'no answer'}); the last "
                f"verified state is older than {self.max_staleness:g}s, so no model is admitted until the "
                "webhook can read the ledger again")))
        return None

    def _decide_model(self, ref: ModelRef, rules: Rules) -> tuple[Decision, bool]:
        """(decision, cache hit) for one model, from the verified view; failures deny."""
        denied = self._unavailable()
        if denied is not None:
            return denied, False
        view = self.view
        assert view is not None
        try:
            head = view.head()
            key = self._key(ref, rules, head)
            cached = self.cache.get(key)
            if cached is not None:
                return cached, True
            findings = check_model(ref, rules, view, self.policy.trust)
        except ViewFailed as exc:
            return _failed(exc), False
        except Exception as exc:
            _log_unexpected("deciding from the verified ledger view", exc)
            return Decision.deny(_internal("deciding from the verified ledger view", exc)), False
        decision = apply_mode(findings, rules)
        self.cache.put(key, decision)
        return decision, False

    def decide_request(self, req: _Request) -> tuple[Decision, ModelRef | None, bool]:
        namespace = req.namespace
        if req.operation in ("DELETE", "CONNECT"):
            return Decision.allow(), None, False  # removing a model deploys nothing
        obj = req.obj
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        if namespace is None and isinstance(meta, dict) and isinstance(meta.get("namespace"), str):
            namespace = meta["namespace"]
        rules = self.policy.rules_for(namespace)
        if obj is None:
            return Decision.deny(Finding(Reason.MALFORMED, f"{req.operation} request carries no object")), None, False
        if req.operation == "UPDATE" and isinstance(meta, dict) and meta.get("deletionTimestamp") \
                and _runs_the_same(obj, req.old):
            # An object being deleted only loses finalizers; blocking that would hang deletion. An
            # update that also changes what runs (spec, annotations, owner) is judged like any other.
            return Decision.allow(), None, False
        try:
            ref = workload_model(obj, rules)  # whole-workload policy first (pure, no ledger)
        except WorkloadDenied as exc:
            return apply_mode(exc.findings, rules), None, False
        except ManifestError as exc:
            return apply_mode([Finding(Reason.MALFORMED, str(exc))], rules), None, False
        if ref is None:
            return Decision.allow(), None, False  # serves no model, and the rules admit that
        decision, hit = self._decide_model(ref, rules)
        return decision, ref, hit

    def review(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, AdmissionReview response). Never raises; failures deny. No I/O."""
        start = self._clock()
        uid = ""
        req: _Request | None = None
        ref: ModelRef | None = None
        hit = False
        status = 200
        try:
            req = parse_review(body)
            uid = req.uid
            decision, ref, hit = self.decide_request(req)
        except BadReview as exc:
            status = 400
            uid = _salvage_uid(body)
            decision = Decision.deny(Finding(Reason.MALFORMED, f"malformed AdmissionReview: {exc}"))
        except Exception as exc:  # fail closed on any bug; the traceback goes to the log
            log.exception("admission review failed")
            decision = Decision.deny(_internal("deciding", exc))
        elapsed = self._clock() - start
        self._account(decision, hit, elapsed)
        self._audit(req, uid, ref, decision, hit, elapsed)
        return status, review_response(uid, decision, self.see_why(decision, ref))

    def deny_body(
        self, body: bytes, message: str, *, status: int, internal: bool = False
    ) -> tuple[int, dict[str, Any]]:
        """Deny a request refused before it was decided (too large, too slow)."""
        decision = Decision.deny(Finding(Reason.INTERNAL_ERROR if internal else Reason.MALFORMED, message))
        uid = _salvage_uid(body)
        self._account(decision, False, 0.0)
        self._audit(None, uid, None, decision, False, 0.0)
        return status, review_response(uid, decision, self.see_why(decision, None))

    def see_why(self, decision: Decision, ref: ModelRef | None) -> list[str]:
        """The commands a kubectl user runs to see why `decision` denied (none if it allowed).

        Paths are the webhook's own (the policy's ConfigMap mounts them at the same place
        in the loader); MANIFEST is the file the user applied."""
        if decision.allowed:
            return []
        return see_why(decision.codes, sha256=ref.sha256 if ref else None, trust=self.policy.trust.source,
                       policy=self.policy.source, manifest="MANIFEST")

    # --- accounting -----------------------------------------------------------------
    def _account(self, decision: Decision, hit: bool, elapsed: float) -> None:
        m = self.metrics
        m.latency.observe(elapsed)
        if hit:
            m.cache.inc("hit")
        result = "denied" if not decision.allowed else ("warned" if decision.warnings else "allowed")
        for code in dict.fromkeys(decision.codes) or ("none",):
            m.decisions.inc(result, str(code))

    def _audit(self, req: _Request | None, uid: str, ref: ModelRef | None, decision: Decision,
               hit: bool, elapsed: float) -> None:
        """One JSON line per decision, every field always present (null when unknown): the
        fields are documented in docs/admission.md, "Audit log"."""
        if not audit_log.isEnabledFor(logging.INFO):
            return
        result = "denied" if not decision.allowed else ("warned" if decision.warnings else "allowed")
        fields: dict[str, Any] = {
            "uid": uid,
            "operation": req.operation if req else None,
            "kind": req.kind if req else None,
            "namespace": req.namespace if req else None,
            "name": req.name if req else None,
            "user": req.user if req else None,
            "dry_run": req.dry_run if req else None,
            "model_sha256": ref.sha256 if ref else None,
            "model_uri": redact_uri(ref.uri) if ref and ref.uri else None,
            "decision": result,
            "allowed": decision.allowed,
            "reasons": decision.reasons,
            "warnings": decision.warnings,
            "codes": [str(c) for c in decision.codes],
            "cached": hit,
            "latency_ms": round(elapsed * 1000, 3),
            "ledger": self._head_fields(),
        }
        audit_log.info(_jsonlog.line("mlseal.audit", "admission", **fields))

    def _head_fields(self) -> dict[str, Any] | None:
        """The verified view's tree the decision read: size and root (hex), or None."""
        view = self.view
        if view is None:
            return None
        try:
            head = view.head()
        except Exception:  # a failed view: the decision's reasons say why
            return None
        return {"size": head.size, "root": head.root.hex()}


def _runs_the_same(obj: Mapping[str, Any], old: object) -> bool:
    """Whether an UPDATE leaves everything the workload policy reads as it was: the spec, the
    annotations (the model's digest and URI, KServe's source, values the downward API passes
    on) and the owner references (which decide whether KServe completes a pod template).
    The webhook's matchConditions send an UPDATE for exactly these changes."""
    if not isinstance(old, Mapping):
        return False
    meta, old_meta = obj.get("metadata"), old.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(old_meta, Mapping):
        return False
    return (obj.get("spec") == old.get("spec")
            and (meta.get("annotations") or {}) == (old_meta.get("annotations") or {})
            and (meta.get("ownerReferences") or []) == (old_meta.get("ownerReferences") or []))


def _failed(exc: ViewFailed) -> Decision:
    return Decision.deny(Finding(Reason(exc.code), (
        f"{redact_text(str(exc))}; the webhook no longer believes this ledger and denies every model until the "
        "ledger is restored from a verified copy (`mlseal ledger verify`) and the webhook is restarted")))


def _salvage_uid(body: bytes) -> str:
    """The request uid if the body is JSON enough to have one (the API server matches it)."""
    try:
        review = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    req = review.get("request") if isinstance(review, Mapping) else None
    uid = req.get("uid") if isinstance(req, Mapping) else None
    return uid[:128] if isinstance(uid, str) else ""
