"""An authenticated hvac client that renews, re-logs-in, retries and names failures.

Every Vault call in mlseal goes through `VaultSession.call`, which

1. makes sure the token is fresh: renew it once 2/3 of its TTL has passed; if Vault
   refuses the renewal, log in again (AppRole, Kubernetes) or, for a plain token, keep
   using it until it expires and then fail with `VaultAuthError`;
2. runs the request, retrying with bounded exponential backoff (and jitter) on
   connection errors, 5xx and 429 only — a 4xx means the request itself is wrong and is
   never retried; neither are TLS failures or a sealed Vault (503 "Vault is sealed"),
   which need an operator;
3. translates every failure into a typed `VaultError` that names the operation and the
   path, scrubbed of the token, and logs the token *accessor*, never the token.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac
import hvac.adapters
import hvac.exceptions
import requests

from mlseal.errors import ConfigurationError, VaultError
from mlseal.secrets._vault_config import VaultConfig
from mlseal.secrets.errors import (
    VaultAuthError,
    VaultPermissionDenied,
    VaultRequestRefused,
    VaultResponseError,
    VaultSealed,
    VaultTLSError,
    VaultUnavailable,
)

log = logging.getLogger("mlseal.secrets")

R = TypeVar("R")

#: renew a token once this fraction of its TTL has passed (what Vault Agent does too)
RENEW_AT = 2 / 3


class _StatusAdapter(hvac.adapters.JSONAdapter):  # type: ignore[misc]
    """hvac's JSON adapter, but errors remember the HTTP status (hvac drops it)."""

    def _raise_for_error(self, method: str, url: str, response: requests.Response) -> None:
        try:
            super()._raise_for_error(method, url, response)
        except hvac.exceptions.VaultError as exc:
            exc.status_code = response.status_code
            raise


@dataclass(frozen=True)
class TokenState:
    """What mlseal knows about its current token (never the token itself)."""

    accessor: str
    ttl: int  # seconds at the time it was obtained; 0 = never expires (root tokens)
    renewable: bool
    obtained_at: float
    policies: tuple[str, ...] = ()

    def renew_due(self, now: float) -> bool:
        return self.ttl > 0 and now >= self.obtained_at + self.ttl * RENEW_AT

    def expired(self, now: float) -> bool:
        return self.ttl > 0 and now >= self.obtained_at + self.ttl


class VaultSession:
    """Lazily-authenticated access to Vault. Constructing it does no I/O."""

    def __init__(
        self,
        config: VaultConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._client: hvac.Client | None = None
        self._token: str = ""
        self._state: TokenState | None = None
        self._renewal_refused = False
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        acc = self._state.accessor if self._state else "-"
        return f"VaultSession(addr={self.config.addr!r}, auth={self.config.auth.method}, accessor={acc!r})"

    # -- public -----------------------------------------------------------------------

    @property
    def token_state(self) -> TokenState | None:
        return self._state

    def login(self) -> TokenState:
        """Authenticate now (normally done on first use) and return the token's state."""
        with self._lock:
            return self._login()

    def call(self, what: str, fn: Callable[[hvac.Client], R]) -> R:
        """Run ``fn(client)`` with a fresh token, retries and typed errors.

        ``what`` names the operation and path for messages, e.g. ``read secret/mlseal/db``.
        """
        self._ensure_token()
        try:
            return self._retrying(what, fn)
        except VaultPermissionDenied:
            # A 403 can mean "this path is not allowed" or "the token is dead". Tell
            # them apart so the operator fixes the right thing.
            if self.config.auth.can_relogin:
                log.info("%s: 403; logging in again and retrying once", what)
                with self._lock:
                    self._login()
                return self._retrying(what, fn)
            self._raise_if_token_dead(what)
            raise

    def raw_get(self, path: str) -> tuple[int, Any]:
        """Unauthenticated-style GET that returns (status, JSON or None) without raising on
        HTTP errors (for sys/health, whose status codes are the answer)."""

        def do(client: hvac.Client) -> tuple[int, Any]:
            resp = client.adapter.get(path, raise_exception=False)
            if isinstance(resp, dict):
                return 200, resp
            try:
                body = resp.json()
            except ValueError:
                body = None
            return int(resp.status_code), body

        return self._retrying(f"GET {path}", do, retry_status=False)

    # -- token lifecycle ----------------------------------------------------------------

    def _ensure_token(self) -> None:
        with self._lock:
            if self._state is None:
                self._login()
                return
            now = self._clock()
            if not self._state.renew_due(now):
                return
            if self._state.renewable and not self._renewal_refused and self._renew():
                return
            if self.config.auth.can_relogin:
                self._login()
            elif self._state.expired(now):
                raise VaultAuthError(
                    f"Vault token (accessor {self._state.accessor}) expired after {self._state.ttl}s "
                    "and cannot be renewed; provide a new VAULT_TOKEN"
                )

    def _renew(self) -> bool:
        assert self._state is not None
        acc = self._state.accessor
        try:
            resp = self._retrying("renew token", lambda c: c.auth.token.renew_self())
            auth = _auth_block(resp, "renew token")
        except (VaultRequestRefused, VaultPermissionDenied, VaultAuthError) as exc:
            self._renewal_refused = True
            log.warning("Vault refused to renew token (accessor %s): %s", acc, _first_line(exc))
            return False
        self._state = TokenState(
            accessor=str(auth.get("accessor") or acc),
            ttl=int(auth.get("lease_duration", 0)),
            renewable=bool(auth.get("renewable", False)),
            obtained_at=self._clock(),
            policies=tuple(auth.get("policies") or self._state.policies),
        )
        log.info("renewed Vault token (accessor %s): ttl %ds", self._state.accessor, self._state.ttl)
        return True

    def _login(self) -> TokenState:
        auth = self.config.auth
        client = self._new_client()
        if auth.method == "token":
            assert auth.token is not None
            token = auth.token.reveal()
            client.token = token
            self._client, self._token = client, token
            try:
                resp = self._retrying("look up VAULT_TOKEN", lambda c: c.auth.token.lookup_self())
            except (VaultPermissionDenied, VaultRequestRefused) as exc:
                raise VaultAuthError(
                    f"VAULT_TOKEN was rejected by Vault at {self.config.addr}: expired, revoked or wrong "
                    f"({_first_line(exc).split(': ', 1)[-1]})"
                ) from None
            data = data_block(resp, "look up VAULT_TOKEN")
            state = TokenState(
                accessor=str(data.get("accessor", "")),
                ttl=int(data.get("ttl") or 0),
                renewable=bool(data.get("renewable", False)),
                obtained_at=self._clock(),
                policies=tuple(data.get("policies") or ()),
            )
        else:
            self._client, self._token = client, ""
            if auth.method == "approle":
                assert auth.role_id is not None and auth.secret_id is not None
                role_id, secret_id = auth.role_id, auth.secret_id.reveal()
                what = f"AppRole login at auth/{auth.mount}"
                resp = self._login_call(
                    what, lambda c: c.auth.approle.login(role_id, secret_id, use_token=False, mount_point=auth.mount)
                )
            else:
                assert auth.jwt_path is not None and auth.k8s_role is not None
                jwt = _read_jwt(auth.jwt_path)
                role = auth.k8s_role
                what = f"Kubernetes login as role {role} at auth/{auth.mount}"
                resp = self._login_call(
                    what, lambda c: c.auth.kubernetes.login(role, jwt, use_token=False, mount_point=auth.mount)
                )
            block = _auth_block(resp, what)
            new_token = block.get("client_token")
            if not isinstance(new_token, str) or not new_token:
                raise VaultResponseError(f"{what}: response has no client_token")
            token = new_token
            client.token = token
            self._token = token
            state = TokenState(
                accessor=str(block.get("accessor", "")),
                ttl=int(block.get("lease_duration") or 0),
                renewable=bool(block.get("renewable", False)),
                obtained_at=self._clock(),
                policies=tuple(block.get("policies") or ()),
            )
        self._state = state
        self._renewal_refused = False
        log.info(
            "Vault login (%s) at %s: token accessor %s, ttl %ss, renewable %s, policies %s",
            auth.method,
            self.config.addr,
            state.accessor,
            state.ttl,
            state.renewable,
            ",".join(state.policies),
        )
        return state

    def _login_call(self, what: str, fn: Callable[[hvac.Client], R]) -> R:
        try:
            return self._retrying(what, fn)
        except (VaultPermissionDenied, VaultRequestRefused) as exc:
            raise VaultAuthError(f"{what} failed: {_first_line(exc).split(': ', 1)[-1]}") from None

    def _raise_if_token_dead(self, what: str) -> None:
        acc = self._state.accessor if self._state else "unknown"
        try:
            self._retrying("look up token", lambda c: c.auth.token.lookup_self())
        except (VaultPermissionDenied, VaultAuthError):
            raise VaultAuthError(
                f"{what}: Vault rejected the token (accessor {acc}): it expired or was revoked"
            ) from None
        except VaultError:
            return

    def _new_client(self) -> hvac.Client:
        cfg = self.config
        verify: bool | str = str(cfg.cacert) if cfg.cacert else True
        # token="" (not None): hvac would otherwise read ~/.vault-token or VAULT_TOKEN itself.
        return hvac.Client(
            url=cfg.addr,
            token="",
            verify=verify,
            timeout=cfg.timeout,
            namespace=cfg.namespace,
            adapter=_StatusAdapter,
        )

    # -- retry and error translation -------------------------------------------------

    def _retrying(self, what: str, fn: Callable[[hvac.Client], R], *, retry_status: bool = True) -> R:
        if self._client is None:
            self._client = self._new_client()
        cfg = self.config
        delay = cfg.backoff
        for attempt in range(1, max(cfg.attempts, 1) + 1):
            try:
                return fn(self._client)
            except requests.exceptions.SSLError as exc:
                raise VaultTLSError(
                    f"{what}: TLS with {cfg.addr} failed ({_tls_reason(exc)}); "
                    "set VAULT_CACERT to the CA that signed Vault's certificate"
                ) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                if attempt >= cfg.attempts:
                    kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "connection failed"
                    raise VaultUnavailable(
                        f"{what}: cannot reach Vault at {cfg.addr} ({kind}, {attempt} attempts)"
                    ) from None
                reason = "timeout" if isinstance(exc, requests.exceptions.Timeout) else "connection failed"
            except hvac.exceptions.VaultError as exc:
                status = int(getattr(exc, "status_code", 0) or 0)
                sealed = status == 503 and any("sealed" in str(e).lower() for e in (exc.errors or []))
                # A sealed Vault needs an operator to unseal it: fail fast instead of waiting.
                retryable = retry_status and not sealed and (status >= 500 or status == 429)
                if not retryable or attempt >= cfg.attempts:
                    raise self._translate(what, exc, status, attempt) from None
                reason = f"HTTP {status}"
            except (KeyError, TypeError, ValueError) as exc:
                # hvac indexes into responses (e.g. login ["auth"]); a malformed body lands here.
                raise VaultResponseError(f"{what}: malformed response from Vault ({type(exc).__name__})") from None
            pause = delay * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not crypto)
            log.warning("%s: %s; retry %d of %d in %.2fs", what, reason, attempt, cfg.attempts - 1, pause)
            self._sleep(pause)
            delay = min(delay * 2, cfg.backoff_max)
        raise AssertionError("unreachable")

    def _translate(self, what: str, exc: hvac.exceptions.VaultError, status: int, attempts: int) -> VaultError:
        errors = self._scrub(", ".join(str(e) for e in (exc.errors or [])) or "no error text")
        acc = self._state.accessor if self._state else "none"
        if status == 503 and "sealed" in errors.lower():
            return VaultSealed(f"{what}: Vault at {self.config.addr} is sealed")
        if status >= 500 or status == 429:
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            return VaultUnavailable(f"{what}: Vault answered {status}{tries}: {errors}")
        if status == 403:
            return VaultPermissionDenied(f"{what}: permission denied (403) for token accessor {acc}: {errors}")
        if status == 401:
            return VaultAuthError(f"{what}: not authenticated (401): {errors}")
        if status == 0:
            return VaultResponseError(f"{what}: unexpected response from Vault: {errors}")
        return VaultRequestRefused(f"{what}: Vault refused the request ({status}): {errors}", status=status)

    def _scrub(self, text: str) -> str:
        """Server error text, without the token or credentials if a server echoes them."""
        auth = self.config.auth
        known = (
            self._token,
            auth.token.reveal() if auth.token else "",
            auth.secret_id.reveal() if auth.secret_id else "",
        )
        for s in known:
            if s:
                text = text.replace(s, "***")
        return text[:300]


def _read_jwt(path: Any) -> str:
    try:
        jwt = str(path.read_text()).strip()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the Kubernetes service-account token {path}: {exc.strerror}"
        ) from None
    if not jwt:
        raise ConfigurationError(f"Kubernetes service-account token file {path} is empty")
    return jwt


def _auth_block(resp: Any, what: str) -> dict[str, Any]:
    if not isinstance(resp, dict) or not isinstance(resp.get("auth"), dict):
        raise VaultResponseError(f"{what}: malformed response from Vault (no 'auth' object)")
    return dict(resp["auth"])


def data_block(resp: Any, what: str) -> dict[str, Any]:
    """The ``data`` object of a Vault response, or `VaultResponseError` naming `what`."""
    if not isinstance(resp, dict) or not isinstance(resp.get("data"), dict):
        raise VaultResponseError(f"{what}: malformed response from Vault (no 'data' object)")
    return dict(resp["data"])


def _tls_reason(exc: Exception) -> str:
    text = str(exc)
    for marker, reason in (
        ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed: unknown CA or wrong host"),
        ("WRONG_VERSION_NUMBER", "the server does not speak TLS"),
        ("hostname", "certificate does not match the host name"),
    ):
        if marker in text:
            return reason
    return type(exc).__name__


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
