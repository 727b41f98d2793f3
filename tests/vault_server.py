"""A Vault-API-compatible HTTP server for tests: exactly the endpoints mlseal uses.

It follows the documented Vault HTTP API (developer.hashicorp.com/vault/api-docs) for:

- ``sys/health`` (200 active, 429 standby, 503 sealed; ``standbyok``/``*code`` query
  parameters), ``sys/seal-status``, ``sys/mounts/:path``, ``sys/auth/:path``,
  ``sys/policies/acl/:name``, ``sys/capabilities-self``, ``sys/internal/ui/mounts/:path``,
  ``sys/namespaces/:name``;
- token auth: ``auth/token/create``, ``lookup-self``, ``renew-self`` (TTLs, max TTL,
  non-renewable tokens), AppRole (``role/:name``, ``role-id``, ``secret-id``, ``login``),
  Kubernetes (``role/:name``, ``login`` with a service-account JWT);
- KV v2: ``:mount/data/:path`` (read latest or ``?version=``, write with ``cas``),
  ``metadata/:path``, ``delete/:path``, ``destroy/:path``;
- Transit: ``keys/:name`` (create, read, ``rotate``), ``sign`` / ``verify`` (ECDSA P-256,
  ``asn1`` or ``jws`` marshaling, ``vault:vN:`` signatures), ``datakey/:type/:name``,
  ``decrypt``, ``export/:type/:name``.

Every error is ``{"errors": [...]}`` with Vault's status code: 400 invalid request,
403 permission denied (ACL policies in HCL are parsed and enforced per path, deny wins,
most specific path wins), 404 unknown path, 503 "Vault is sealed". Namespaces are
honoured through ``X-Vault-Namespace``. Tests steer it directly: `FakeVault.seal`,
`advance` (its clock), `inject` (5xx/429, malformed bodies, dropped connections),
`refuse_renewal`, `standby`, and a request log without tokens.

    >>> with FakeVault() as v:
    ...     import hvac
    ...     c = hvac.Client(url=v.addr, token=v.root_token)
    ...     c.sys.read_health_status(method="GET")["sealed"]
    False
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

VERSION = "1.17.0+mlseal-test"
DEFAULT_TOKEN_TTL = 768 * 3600

DEFAULT_POLICY = """
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
"""

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha2-224": hashes.SHA224,
    "sha2-256": hashes.SHA256,
    "sha2-384": hashes.SHA384,
    "sha2-512": hashes.SHA512,
}
_SIGNING_TYPES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1}
_ENCRYPTION_TYPES = {"aes256-gcm96": 32, "aes128-gcm96": 16}


class VaultHTTPError(Exception):
    """Raised inside handlers: becomes ``{"errors": [...]}`` with this status."""

    def __init__(self, status: int, *errors: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = list(errors)
        self.body = body


def _denied() -> VaultHTTPError:
    return VaultHTTPError(403, "permission denied")


def parse_duration(value: Any, default: int = 0) -> int:
    """Vault durations: an int of seconds or "90", "30s", "15m", "1h", "2d"."""
    if value in (None, ""):
        return default
    if isinstance(value, int | float):
        return int(value)
    m = re.fullmatch(r"(\d+)([smhd]?)", str(value).strip())
    if not m:
        raise VaultHTTPError(400, f"invalid duration {value!r}")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


# -- ACL policies (HCL subset: path "..." { capabilities = [...] }) -----------------------


def parse_policy(text: str) -> dict[str, set[str]]:
    lines = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)(#|//).*$", "", line)
        lines.append(line)
    src = "\n".join(lines)
    rules: dict[str, set[str]] = {}
    pos = 0
    for m in re.finditer(r'path\s+"([^"]+)"\s*\{(.*?)\}', src, re.S):
        if src[pos : m.start()].strip():
            raise VaultHTTPError(400, f"failed to parse policy: unexpected {src[pos:m.start()].strip()[:40]!r}")
        pos = m.end()
        caps_m = re.search(r"capabilities\s*=\s*\[(.*?)\]", m.group(2), re.S)
        if not caps_m:
            raise VaultHTTPError(400, f"failed to parse policy: path {m.group(1)!r} has no capabilities")
        caps = {c for c in re.findall(r'"([^"]*)"', caps_m.group(1))}
        bad = caps - {"create", "read", "update", "patch", "delete", "list", "sudo", "deny", "subscribe"}
        if bad:
            raise VaultHTTPError(400, f"failed to parse policy: invalid capabilities {sorted(bad)}")
        rules.setdefault(m.group(1), set()).update(caps)
    if src[pos:].strip():
        raise VaultHTTPError(400, f"failed to parse policy: unexpected {src[pos:].strip()[:40]!r}")
    return rules


def _pattern_matches(pattern: str, path: str) -> bool:
    glob = pattern.endswith("*")
    body = pattern[:-1] if glob else pattern
    if "+" not in body:
        return path.startswith(body) if glob else path == body
    psegs, segs = body.split("/"), path.split("/")
    if glob:
        if len(segs) < len(psegs):
            return False
        last = psegs[-1]
        for p, s in zip(psegs[:-1], segs[: len(psegs) - 1], strict=True):
            if p != "+" and p != s:
                return False
        tail = "/".join(segs[len(psegs) - 1 :])
        return last == "+" or tail.startswith(last)
    if len(psegs) != len(segs):
        return False
    return all(p == "+" or p == s for p, s in zip(psegs, segs, strict=True))


def _priority(pattern: str) -> tuple[int, int, int, int, str]:
    """Vault's policy-path priority (higher wins): later first wildcard, no trailing
    glob, fewer ``+`` segments, longer, then lexicographic."""
    wild = [i for i in (pattern.find("+"), pattern.find("*")) if i >= 0]
    return (min(wild) if wild else len(pattern) + 1, 0 if pattern.endswith("*") else 1, -pattern.count("+"),
            len(pattern), pattern)


def capabilities(rules: dict[str, set[str]], path: str) -> set[str]:
    matches = [p for p in rules if _pattern_matches(p, path)]
    if not matches:
        return {"deny"}
    caps = rules[max(matches, key=_priority)]
    return {"deny"} if "deny" in caps else set(caps)


# -- state ------------------------------------------------------------------------------


@dataclass
class Token:
    id: str
    accessor: str
    policies: list[str]
    namespace: str
    ttl: int  # 0 = never expires
    max_ttl: int
    renewable: bool
    created: float
    expires: float | None
    path: str = "auth/token/create"
    display_name: str = "token"
    meta: dict[str, str] | None = None


@dataclass
class TransitKey:
    type: str
    exportable: bool = False
    versions: dict[int, Any] = field(default_factory=dict)  # version -> private key / AES key bytes
    created: dict[int, float] = field(default_factory=dict)
    latest: int = 0


@dataclass
class Namespace:
    mounts: dict[str, dict[str, Any]] = field(default_factory=dict)  # "secret/" -> {"type", "options"}
    auth: dict[str, dict[str, Any]] = field(default_factory=dict)  # "approle/" -> {"type"}
    policies: dict[str, str] = field(default_factory=dict)
    kv: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # mount -> path -> entry
    transit: dict[str, dict[str, TransitKey]] = field(default_factory=dict)  # mount -> name -> key
    approle: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # mount -> role -> cfg
    k8s: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # mount -> role -> cfg


@dataclass
class Fault:
    path: str | None
    method: str | None
    status: int
    times: int
    errors: list[str]
    raw: bytes | None
    drop: bool
    delay: float


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    namespace: str
    status: int


class FakeVault:
    """The server. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, *, tls: bool = False, workdir: str | Path | None = None) -> None:
        self.tls = tls
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fakevault-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.lock = threading.RLock()
        self.offset = 0.0
        self.sealed = False
        self.standby = False
        self.refuse_renewal = False
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.logins: dict[str, int] = {}
        self.namespaces: dict[str, Namespace] = {"": self._new_namespace()}
        self.tokens: dict[str, Token] = {}
        self._jwt_key = secrets.token_bytes(32)
        self.root_token = "hvs.root-" + secrets.token_urlsafe(18)
        self.tokens[self.root_token] = Token(
            self.root_token, self._accessor(), ["root"], "", 0, 0, False, self.clock(), None,
            path="auth/token/root", display_name="root",
        )
        self.ca_cert_path: Path | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.addr = ""

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeVault:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        scheme = "http"
        if self.tls:
            ctx = self._tls_context()
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        self._server = server
        self.addr = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-vault", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakeVault:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls ----------------------------------------------------------------------

    def clock(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the server's clock forward (token TTLs expire)."""
        with self.lock:
            self.offset += seconds

    def seal(self) -> None:
        with self.lock:
            self.sealed = True

    def unseal(self) -> None:
        with self.lock:
            self.sealed = False

    def inject(
        self,
        path: str | None = None,
        *,
        status: int = 500,
        times: int = 1,
        errors: list[str] | None = None,
        raw: bytes | None = None,
        drop: bool = False,
        method: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Make the next ``times`` requests whose path starts with ``path`` fail.

        ``raw`` answers 200 with these bytes as an ``application/json`` body (malformed);
        ``drop`` closes the connection without answering; ``delay`` sleeps first.
        """
        with self.lock:
            self.faults.append(
                Fault(path, method, status, times, errors if errors is not None else ["internal error"], raw, drop,
                      delay)
            )

    def count(self, prefix: str, method: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path.startswith(prefix) and (method in (None, r.method)))

    def k8s_jwt(self, service_account: str, namespace: str = "default", *, expires_in: int = 3600,
                audience: str | list[str] = "vault") -> str:
        """A service-account JWT this server's Kubernetes auth accepts (it stands in for
        the TokenReview API a real Vault would call). ``audience`` becomes the ``aud``
        claim: ``vault`` (what mlseal's roles bind) unless a test asks for another, e.g.
        ``https://kubernetes.default.svc.cluster.local`` for a pod's default token."""
        def b64(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

        head = b64({"alg": "HS256", "typ": "JWT"})
        body = b64({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": service_account,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "aud": [audience] if isinstance(audience, str) else list(audience),
            "exp": int(self.clock()) + expires_in,
        })
        sig = hmac.new(self._jwt_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"

    def token_info(self, token: str) -> Token:
        return self.tokens[token]

    # -- setup shortcuts (in-process, through the same handlers the HTTP API uses) -------

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None, *, namespace: str = "") -> Any:
        headers = {"x-vault-token": self.root_token}
        if namespace:
            headers["x-vault-namespace"] = namespace
        status, out = self.handle(method, "/v1/" + path, headers, json.dumps(body or {}).encode())
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {out}")
        return out

    def create_token(self, policies: list[str], *, ttl: str | int = "1h", renewable: bool = True,
                     explicit_max_ttl: str | int | None = None, namespace: str = "") -> str:
        body: dict[str, Any] = {"policies": policies, "ttl": ttl, "renewable": renewable}
        if explicit_max_ttl is not None:
            body["explicit_max_ttl"] = explicit_max_ttl
        return str(self.admin("POST", "auth/token/create", body, namespace=namespace)["auth"]["client_token"])

    def write_policy(self, name: str, hcl: str, *, namespace: str = "") -> None:
        self.admin("PUT", f"sys/policies/acl/{name}", {"policy": hcl}, namespace=namespace)

    def approle_creds(self, role: str, policies: list[str], *, ttl: str | int = "1h",
                      mount: str = "approle") -> tuple[str, str]:
        """Enable AppRole (once), create ``role`` and return (role_id, secret_id)."""
        if f"{mount}/" not in self.namespaces[""].auth:
            self.admin("POST", f"sys/auth/{mount}", {"type": "approle"})
        self.admin("POST", f"auth/{mount}/role/{role}", {"token_policies": policies, "token_ttl": ttl})
        role_id = self.admin("GET", f"auth/{mount}/role/{role}/role-id")["data"]["role_id"]
        secret_id = self.admin("POST", f"auth/{mount}/role/{role}/secret-id")["data"]["secret_id"]
        return str(role_id), str(secret_id)

    def put_kv(self, path: str, data: dict[str, str], *, mount: str = "secret") -> int:
        return int(self.admin("POST", f"{mount}/data/{path}", {"data": data})["data"]["version"])

    def create_transit_key(self, name: str, key_type: str = "ecdsa-p256", *, exportable: bool = False,
                           mount: str = "transit") -> None:
        self.admin("POST", f"{mount}/keys/{name}", {"type": key_type, "exportable": exportable})

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _new_namespace() -> Namespace:
        ns = Namespace()
        ns.mounts["secret/"] = {"type": "kv", "options": {"version": "2"}}
        ns.mounts["transit/"] = {"type": "transit", "options": {}}
        ns.mounts["cubbyhole/"] = {"type": "cubbyhole", "options": {}}
        ns.auth["token/"] = {"type": "token"}
        ns.kv["secret/"] = {}
        ns.transit["transit/"] = {}
        return ns

    @staticmethod
    def _accessor() -> str:
        return secrets.token_urlsafe(18)

    def _tls_context(self) -> ssl.SSLContext:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlseal test Vault CA")])
        ca = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vault.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_cert_path = self.workdir / "vault-ca.pem"
        self.ca_cert_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        cert_path, key_path = self.workdir / "vault-cert.pem", self.workdir / "vault-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_path, key_path)
        return ctx

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.times > 0 and (f.path is None or path.startswith(f.path)) and f.method in (None, method):
                    f.times -= 1
                    return f
        return None

    # -- request handling -----------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """(status, JSON body or None) for one request; raises nothing."""
        parts = urlsplit(raw_path)
        if not parts.path.startswith("/v1/"):
            return 404, {"errors": []}
        path = parts.path[len("/v1/") :].strip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if method == "LIST" or query.get("list") == "true":
            method = "LIST"
        try:
            payload: dict[str, Any] = {}
            if body.strip():
                try:
                    payload = json.loads(body)
                except ValueError:
                    raise VaultHTTPError(400, "failed to parse JSON input: invalid character") from None
                if not isinstance(payload, dict):
                    raise VaultHTTPError(400, "failed to parse JSON input: not an object")
            with self.lock:
                return self._dispatch(method, path, query, headers, payload)
        except VaultHTTPError as exc:
            out = dict(exc.body or {})
            out["errors"] = exc.errors
            return exc.status, out
        except Exception as exc:  # a bug in this server: answer like Vault does, 500
            return 500, {"errors": [f"internal error: {type(exc).__name__}: {exc}"]}

    def _dispatch(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                  payload: dict[str, Any]) -> tuple[int, Any]:
        if path == "sys/health":
            return self._health(query)
        if path == "sys/seal-status":
            return 200, self._seal_status()
        if self.sealed:
            raise VaultHTTPError(503, "Vault is sealed")
        ns_name = headers.get("x-vault-namespace", "").strip("/")
        ns = self.namespaces.get(ns_name)
        if ns is None:
            raise VaultHTTPError(404, f'no handler for route "{path}". route entry not found.')

        # Unauthenticated login endpoints.
        mount, rest = _split_mount(path, ["auth/" + a for a in ns.auth])
        if mount is not None and rest == "login" and method in ("POST", "PUT"):
            return self._login(ns, ns_name, mount, payload)

        token = self._authenticate(headers, ns_name)
        if path.startswith("sys/internal/ui/mounts/"):
            return self._ui_mount(token, ns, path[len("sys/internal/ui/mounts/") :])
        self._authorize(token, ns, path, method)
        return self._route(token, ns, ns_name, method, path, query, payload)

    def _authenticate(self, headers: dict[str, str], ns_name: str) -> Token:
        value = headers.get("x-vault-token") or ""
        auth = headers.get("authorization", "")
        if not value and auth.lower().startswith("bearer "):
            value = auth[7:].strip()
        if not value:
            raise VaultHTTPError(403, "permission denied")  # Vault: missing client token -> 403
        tok = self.tokens.get(value)
        if tok is None:
            raise _denied()
        if tok.expires is not None and self.clock() >= tok.expires:
            del self.tokens[value]
            raise _denied()
        if tok.namespace != ns_name and "root" not in tok.policies:
            raise _denied()
        return tok

    def _rules(self, token: Token, ns: Namespace) -> dict[str, set[str]] | None:
        if "root" in token.policies:
            return None
        rules: dict[str, set[str]] = {}
        for name in token.policies:
            text = DEFAULT_POLICY if name == "default" else ns.policies.get(name)
            if text is None:
                continue
            for p, caps in parse_policy(text).items():
                rules.setdefault(p, set()).update(caps)
        return rules

    def _authorize(self, token: Token, ns: Namespace, path: str, method: str) -> None:
        rules = self._rules(token, ns)
        if rules is None:
            return
        caps = capabilities(rules, path)
        if "deny" in caps:
            raise _denied()
        need = {"GET": {"read"}, "LIST": {"list"}, "DELETE": {"delete"}, "POST": {"create", "update"},
                "PUT": {"create", "update"}, "PATCH": {"patch"}}.get(method, set())
        if not caps & need:
            raise _denied()

    def _route(self, token: Token, ns: Namespace, ns_name: str, method: str, path: str, query: dict[str, str],
               payload: dict[str, Any]) -> tuple[int, Any]:
        if path == "auth/token/lookup-self" and method == "GET":
            return 200, _resp(data=self._token_data(token))
        if path == "auth/token/renew-self" and method in ("POST", "PUT"):
            return self._renew(token, payload)
        if path == "auth/token/create" and method in ("POST", "PUT"):
            return self._create_token(token, ns_name, payload)
        if path == "sys/capabilities-self" and method in ("POST", "PUT"):
            paths = payload.get("paths") or ([payload["path"]] if payload.get("path") else [])
            rules = self._rules(token, ns)
            out = {p: sorted(["root"] if rules is None else capabilities(rules, p)) for p in paths}
            if len(paths) == 1:
                out["capabilities"] = out[paths[0]]
            return 200, {**out, **_resp(data=dict(out))}
        if path.startswith("sys/policies/acl/") or path.startswith("sys/policy/"):
            name = path.split("/")[-1]
            if method in ("POST", "PUT"):
                text = payload.get("policy", "")
                parse_policy(text)
                ns.policies[name] = text
                return 204, None
            if method == "GET":
                if name not in ns.policies:
                    raise VaultHTTPError(404, f"policy {name!r} not found")
                return 200, _resp(data={"name": name, "policy": ns.policies[name]})
        if path.startswith("sys/mounts/") and method in ("POST", "PUT"):
            return self._enable_mount(ns, path[len("sys/mounts/") :], payload)
        if path.startswith("sys/auth/") and method in ("POST", "PUT"):
            new_mount = path[len("sys/auth/") :].strip("/") + "/"
            if new_mount in ns.auth:
                raise VaultHTTPError(400, f"path is already in use at {new_mount}")
            kind = payload.get("type")
            if kind not in ("approle", "kubernetes"):
                raise VaultHTTPError(400, f"unknown auth method type {kind!r}")
            ns.auth[new_mount] = {"type": kind}
            (ns.approle if kind == "approle" else ns.k8s)["auth/" + new_mount] = {}
            return 204, None
        if path.startswith("sys/namespaces/") and method in ("POST", "PUT"):
            name = path[len("sys/namespaces/") :].strip("/")
            full = f"{ns_name}/{name}" if ns_name else name
            self.namespaces.setdefault(full, self._new_namespace())
            return 200, _resp(data={"path": full + "/", "id": uuid.uuid4().hex[:5]})

        mount, rest = _split_mount(path, ["auth/" + a for a in ns.auth])
        if mount is not None:
            kind = ns.auth[mount[len("auth/") :]]["type"]
            if kind == "approle":
                return self._approle_admin(ns, mount, rest, method, payload)
            if kind == "kubernetes":
                return self._k8s_admin(ns, mount, rest, method, payload)
        mount, rest = _split_mount(path, list(ns.mounts))
        if mount is not None:
            kind = ns.mounts[mount]["type"]
            if kind == "kv" and ns.mounts[mount]["options"].get("version") == "2":
                return self._kv(ns, mount, rest, method, query, payload)
            if kind == "transit":
                return self._transit(ns, mount, rest, method, payload)
        raise VaultHTTPError(404, f'no handler for route "{path}". route entry not found.')

    # -- sys ---------------------------------------------------------------------------------

    def _health(self, query: dict[str, str]) -> tuple[int, Any]:
        body = {
            "initialized": True,
            "sealed": self.sealed,
            "standby": self.standby and not self.sealed,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(self.clock()),
            "version": VERSION,
            "cluster_name": "vault-cluster-mlseal-test",
            "cluster_id": "00000000-0000-0000-0000-000000000000",
        }
        if self.sealed:
            code = int(query.get("sealedcode", 503))
        elif self.standby:
            code = 200 if query.get("standbyok") == "true" else int(query.get("standbycode", 429))
        else:
            code = int(query.get("activecode", 200))
        return code, body

    def _seal_status(self) -> dict[str, Any]:
        return {"type": "shamir", "initialized": True, "sealed": self.sealed, "t": 1, "n": 1,
                "progress": 0, "nonce": "", "version": VERSION, "build_date": "2026-01-01T00:00:00Z",
                "migration": False, "recovery_seal": False, "storage_type": "inmem"}

    def _ui_mount(self, token: Token, ns: Namespace, path: str) -> tuple[int, Any]:
        # Authenticated; allowed when the token has some capability on a path in the mount
        # (api-docs/system/internal-ui-mounts), not through a policy on this endpoint.
        mount, _ = _split_mount(path.strip("/"), list(ns.mounts))
        if mount is None:
            raise _denied()
        rules = self._rules(token, ns)
        if rules is not None and not any(p.startswith(mount) and "deny" not in caps and caps
                                         for p, caps in rules.items()):
            raise _denied()
        info = ns.mounts[mount]
        return 200, _resp(data={"path": mount, "type": info["type"], "options": info["options"],
                                "description": "", "accessor": f"{info['type']}_0000"})

    def _enable_mount(self, ns: Namespace, mount_path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        mount = mount_path.strip("/") + "/"
        if mount in ns.mounts:
            raise VaultHTTPError(400, f"path is already in use at {mount}")
        kind = payload.get("type")
        options = dict(payload.get("options") or {})
        if kind == "kv-v2":
            kind, options["version"] = "kv", "2"
        if kind not in ("kv", "transit"):
            raise VaultHTTPError(400, f"plugin not found in the catalog: {kind}")
        ns.mounts[mount] = {"type": kind, "options": options}
        if kind == "kv":
            ns.kv[mount] = {}
        else:
            ns.transit[mount] = {}
        return 204, None

    # -- tokens ----------------------------------------------------------------------------

    def _token_data(self, tok: Token) -> dict[str, Any]:
        now = self.clock()
        ttl = 0 if tok.expires is None else max(0, round(tok.expires - now))
        return {
            "accessor": tok.accessor, "creation_time": int(tok.created), "creation_ttl": tok.ttl,
            "display_name": tok.display_name, "entity_id": "",
            "expire_time": None if tok.expires is None else _iso(tok.expires),
            "explicit_max_ttl": tok.max_ttl, "id": tok.id, "issue_time": _iso(tok.created),
            "meta": tok.meta, "num_uses": 0, "orphan": tok.path != "auth/token/create", "path": tok.path,
            "policies": sorted(tok.policies), "renewable": tok.renewable, "ttl": ttl, "type": "service",
        }

    def _auth_block(self, tok: Token) -> dict[str, Any]:
        return {"client_token": tok.id, "accessor": tok.accessor, "policies": sorted(tok.policies),
                "token_policies": sorted(tok.policies), "metadata": tok.meta, "lease_duration": tok.ttl,
                "renewable": tok.renewable, "entity_id": "", "token_type": "service", "orphan": True}

    def _issue(self, ns_name: str, policies: list[str], ttl: int, max_ttl: int, renewable: bool, path: str,
               display: str, meta: dict[str, str] | None = None, no_default: bool = False) -> Token:
        pol = sorted(set(policies) | (set() if no_default or "root" in policies else {"default"}))
        now = self.clock()
        if max_ttl and (ttl == 0 or ttl > max_ttl):
            ttl = max_ttl
        tok = Token("hvs." + secrets.token_urlsafe(24), self._accessor(), pol, ns_name, ttl, max_ttl, renewable,
                    now, None if ttl == 0 else now + ttl, path=path, display_name=display, meta=meta)
        self.tokens[tok.id] = tok
        return tok

    def _create_token(self, parent: Token, ns_name: str, p: dict[str, Any]) -> tuple[int, Any]:
        policies = list(p.get("policies") or parent.policies)
        if "root" in policies and "root" not in parent.policies:
            raise VaultHTTPError(400, "root tokens may not be created without parent token being root")
        ttl = parse_duration(p.get("ttl"), DEFAULT_TOKEN_TTL)
        tok = self._issue(ns_name, policies, ttl, parse_duration(p.get("explicit_max_ttl"), 0),
                          bool(p.get("renewable", True)), "auth/token/create",
                          "token-" + str(p.get("display_name", "")),
                          meta=p.get("meta"), no_default=bool(p.get("no_default_policy")))
        return 200, _resp(auth=self._auth_block(tok))

    def _renew(self, tok: Token, p: dict[str, Any]) -> tuple[int, Any]:
        if tok.expires is None:
            raise VaultHTTPError(400, "lease is not renewable")
        if not tok.renewable or self.refuse_renewal:
            raise VaultHTTPError(400, "lease is not renewable")
        now = self.clock()
        inc = parse_duration(p.get("increment"), tok.ttl)
        new_exp = now + inc
        warnings = None
        if tok.max_ttl and new_exp > tok.created + tok.max_ttl:
            new_exp = tok.created + tok.max_ttl
            warnings = [f"TTL of {inc}s exceeded the effective max_ttl; TTL value is capped accordingly"]
        tok.expires = new_exp
        block = self._auth_block(tok)
        block["lease_duration"] = round(new_exp - now)
        out = _resp(auth=block)
        out["warnings"] = warnings
        return 200, out

    def _login(self, ns: Namespace, ns_name: str, mount: str, p: dict[str, Any]) -> tuple[int, Any]:
        kind = ns.auth[mount[len("auth/") :]]["type"]
        if kind == "approle":
            roles = ns.approle.get(mount, {})
            role_id, secret_id = p.get("role_id"), p.get("secret_id")
            if not role_id:
                raise VaultHTTPError(400, "missing role_id")
            for name, role_cfg in roles.items():
                if role_cfg["role_id"] == role_id:
                    if secret_id not in role_cfg["secret_ids"]:
                        raise VaultHTTPError(400, "invalid role or secret ID")
                    tok = self._issue(ns_name, role_cfg["policies"], role_cfg["ttl"], role_cfg["max_ttl"], True,
                                      f"{mount}/login", f"approle-{name}", meta={"role_name": name})
                    self.logins[mount] = self.logins.get(mount, 0) + 1
                    return 200, _resp(auth=self._auth_block(tok))
            raise VaultHTTPError(400, "invalid role or secret ID")
        if kind == "kubernetes":
            role = p.get("role")
            cfg = ns.k8s.get(mount, {}).get(str(role))
            if cfg is None:
                raise VaultHTTPError(400, f'invalid role name "{role}"')
            claims = self._check_jwt(str(p.get("jwt", "")))
            sa = claims.get("kubernetes.io/serviceaccount/service-account.name")
            sa_ns = claims.get("kubernetes.io/serviceaccount/namespace")
            if not (_bound(cfg["sa_names"], sa) and _bound(cfg["sa_namespaces"], sa_ns)):
                raise VaultHTTPError(403, "service account name not authorized")
            # A role with an `audience` accepts only tokens whose aud claim contains it, as
            # Vault's Kubernetes auth does (api-docs/auth/kubernetes: role `audience`). Roles
            # without one are not checked here (real Vault leaves that to TokenReview).
            aud = claims.get("aud", [])
            if cfg["audience"] and cfg["audience"] not in ([aud] if isinstance(aud, str) else aud):
                raise VaultHTTPError(403, "invalid audience (aud) claim")
            tok = self._issue(ns_name, cfg["policies"], cfg["ttl"], cfg["max_ttl"], True, f"{mount}/login",
                              f"{mount.split('/')[1]}-{sa_ns}-{sa}", meta={"role": str(role),
                                                                         "service_account_name": str(sa),
                                                                         "service_account_namespace": str(sa_ns)})
            self.logins[mount] = self.logins.get(mount, 0) + 1
            return 200, _resp(auth=self._auth_block(tok))
        raise VaultHTTPError(404, "unsupported auth method")

    def _check_jwt(self, jwt: str) -> dict[str, Any]:
        try:
            head, body, sig = jwt.split(".")
            want = hmac.new(self._jwt_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(want, base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))):
                raise ValueError
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, TypeError):
            raise VaultHTTPError(403, "permission denied") from None
        if not isinstance(claims, dict) or claims.get("exp", 0) < self.clock():
            raise VaultHTTPError(403, "permission denied")
        return claims

    def _approle_admin(self, ns: Namespace, mount: str, rest: str, method: str,
                       p: dict[str, Any]) -> tuple[int, Any]:
        roles = ns.approle.setdefault(mount, {})
        m = re.fullmatch(r"role/([\w-]+)(?:/(role-id|secret-id))?", rest)
        if not m:
            raise VaultHTTPError(404, f'no handler for route "{mount}{rest}"')
        name, sub = m.group(1), m.group(2)
        if sub is None and method in ("POST", "PUT"):
            cfg = roles.setdefault(name, {"role_id": str(uuid.uuid4()), "secret_ids": {}})
            cfg["policies"] = _list(p.get("token_policies", p.get("policies", [])))
            cfg["ttl"] = parse_duration(p.get("token_ttl"), DEFAULT_TOKEN_TTL)
            cfg["max_ttl"] = parse_duration(p.get("token_max_ttl"), 0)
            return 204, None
        if name not in roles:
            raise VaultHTTPError(400, f'role "{name}" does not exist')
        if sub == "role-id" and method == "GET":
            return 200, _resp(data={"role_id": roles[name]["role_id"]})
        if sub == "secret-id" and method in ("POST", "PUT"):
            sid, acc = str(uuid.uuid4()), str(uuid.uuid4())
            roles[name]["secret_ids"][sid] = acc
            return 200, _resp(data={"secret_id": sid, "secret_id_accessor": acc, "secret_id_ttl": 0,
                                    "secret_id_num_uses": 0})
        raise VaultHTTPError(405, "unsupported operation")

    def _k8s_admin(self, ns: Namespace, mount: str, rest: str, method: str, p: dict[str, Any]) -> tuple[int, Any]:
        m = re.fullmatch(r"role/([\w-]+)", rest)
        if rest == "config" and method in ("POST", "PUT"):
            return 204, None
        if not m or method not in ("POST", "PUT"):
            raise VaultHTTPError(404, f'no handler for route "{mount}{rest}"')
        ns.k8s.setdefault(mount, {})[m.group(1)] = {
            "sa_names": _list(p.get("bound_service_account_names")),
            "sa_namespaces": _list(p.get("bound_service_account_namespaces")),
            "audience": str(p.get("audience") or ""),
            "policies": _list(p.get("token_policies", p.get("policies", []))),
            "ttl": parse_duration(p.get("token_ttl"), DEFAULT_TOKEN_TTL),
            "max_ttl": parse_duration(p.get("token_max_ttl"), 0),
        }
        return 204, None

    # -- KV v2 ---------------------------------------------------------------------------------

    def _kv(self, ns: Namespace, mount: str, rest: str, method: str, query: dict[str, str],
            p: dict[str, Any]) -> tuple[int, Any]:
        store = ns.kv.setdefault(mount, {})
        op, _, path = rest.partition("/")
        if not path:
            raise VaultHTTPError(404, f'no handler for route "{mount}{rest}"')
        entry = store.get(path)
        if op == "data" and method == "GET":
            if entry is None:
                raise VaultHTTPError(404)
            version = int(query.get("version") or 0) or entry["current_version"]
            v = entry["versions"].get(version)
            if v is None:
                raise VaultHTTPError(404)
            meta = _version_meta(v, version, entry)
            if v["deletion_time"] or v["destroyed"]:
                raise VaultHTTPError(404, body={"data": {"data": None, "metadata": meta}})
            return 200, _resp(data={"data": dict(v["data"]), "metadata": meta})
        if op == "data" and method in ("POST", "PUT"):
            data = p.get("data")
            if not isinstance(data, dict):
                raise VaultHTTPError(400, "no data provided")
            cas = (p.get("options") or {}).get("cas")
            current = entry["current_version"] if entry else 0
            if cas is not None and int(cas) != current:
                raise VaultHTTPError(400, "check-and-set parameter did not match the current version")
            now = _iso(self.clock())
            if entry is None:
                entry = store[path] = {"versions": {}, "current_version": 0, "oldest_version": 1,
                                       "created_time": now}
            version = current + 1
            entry["versions"][version] = {"data": data, "created_time": now, "deletion_time": "",
                                          "destroyed": False}
            entry["current_version"], entry["updated_time"] = version, now
            return 200, _resp(data=_version_meta(entry["versions"][version], version, entry))
        if op == "metadata" and method == "GET":
            if entry is None:
                raise VaultHTTPError(404)
            return 200, _resp(data={
                "cas_required": False, "created_time": entry["created_time"],
                "current_version": entry["current_version"], "custom_metadata": None,
                "delete_version_after": "0s", "max_versions": 0, "oldest_version": entry["oldest_version"],
                "updated_time": entry.get("updated_time", entry["created_time"]),
                "versions": {str(n): {"created_time": v["created_time"], "deletion_time": v["deletion_time"],
                                      "destroyed": v["destroyed"]} for n, v in entry["versions"].items()},
            })
        if op in ("delete", "destroy") and method in ("POST", "PUT"):
            if entry is None:
                return 204, None
            for n in p.get("versions") or []:
                v = entry["versions"].get(int(n))
                if v is not None:
                    if op == "delete":
                        v["deletion_time"] = _iso(self.clock())
                    else:
                        v["destroyed"], v["data"] = True, {}
            return 204, None
        raise VaultHTTPError(405, "unsupported operation")

    # -- Transit ---------------------------------------------------------------------------------

    def _transit(self, ns: Namespace, mount: str, rest: str, method: str, p: dict[str, Any]) -> tuple[int, Any]:
        keys = ns.transit.setdefault(mount, {})
        segs = rest.split("/")
        op = segs[0]
        if op == "keys" and len(segs) == 2 and method in ("POST", "PUT"):
            name = segs[1]
            if name not in keys:
                ktype = p.get("type", "aes256-gcm96")
                if ktype not in _SIGNING_TYPES and ktype not in _ENCRYPTION_TYPES:
                    raise VaultHTTPError(400, f"unknown key type {ktype}")
                key = TransitKey(ktype, exportable=bool(p.get("exportable", False)))
                self._rotate(key)
                keys[name] = key
            return 200, _resp(data=self._key_info(name, keys[name]))
        if op == "keys" and len(segs) == 2 and method == "GET":
            return 200, _resp(data=self._key_info(segs[1], self._key(keys, segs[1])))
        if op == "keys" and len(segs) == 3 and segs[2] == "rotate" and method in ("POST", "PUT"):
            key = self._key(keys, segs[1])
            self._rotate(key)
            return 200, _resp(data=self._key_info(segs[1], key))
        if op in ("sign", "verify") and len(segs) in (2, 3) and method in ("POST", "PUT"):
            key = self._key(keys, segs[1], for_op=op)
            algo = segs[2] if len(segs) == 3 else p.get("hash_algorithm") or "sha2-256"
            if algo not in _HASHES:
                raise VaultHTTPError(400, f"unsupported hash algorithm {algo}")
            if key.type not in _SIGNING_TYPES:
                raise VaultHTTPError(400, f"key type {key.type} does not support signing")
            marshal = p.get("marshaling_algorithm") or "asn1"
            if marshal not in ("asn1", "jws"):
                raise VaultHTTPError(400, f"invalid marshaling type {marshal!r}")
            data = _b64_in(p.get("input"), "input")
            prehashed = bool(p.get("prehashed", False))
            chosen: ec.EllipticCurveSignatureAlgorithm
            from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
            chosen = ec.ECDSA(Prehashed(_HASHES[algo]()) if prehashed else _HASHES[algo]())
            if op == "sign":
                version = int(p.get("key_version") or key.latest)
                if version not in key.versions:
                    raise VaultHTTPError(400, f"requested version {version} not found")
                der = key.versions[version].sign(data, chosen)
                sig = der if marshal == "asn1" else _der_to_jws(der, key)
                enc = base64.b64encode(sig).decode() if marshal == "asn1" else base64.urlsafe_b64encode(sig).decode()
                return 200, _resp(data={"signature": f"vault:v{version}:{enc}", "key_version": version})
            m = re.fullmatch(r"vault:v(\d+):(.+)", str(p.get("signature", "")))
            if not m:
                raise VaultHTTPError(400, "invalid signature: missing vault prefix")
            version = int(m.group(1))
            if version not in key.versions:
                raise VaultHTTPError(400, "invalid signature: key version not found")
            raw = base64.urlsafe_b64decode(m.group(2)) if marshal == "jws" else base64.b64decode(m.group(2))
            der = _jws_to_der(raw) if marshal == "jws" else raw
            try:
                key.versions[version].public_key().verify(der, data, chosen)
                valid = True
            except (InvalidSignature, ValueError):
                valid = False
            return 200, _resp(data={"valid": valid})
        if op == "datakey" and len(segs) == 3 and method in ("POST", "PUT"):
            kind, key = segs[1], self._key(keys, segs[2], for_op=op)
            if kind not in ("plaintext", "wrapped"):
                raise VaultHTTPError(400, f"invalid type {kind!r}")
            if key.type not in _ENCRYPTION_TYPES:
                raise VaultHTTPError(400, f"key type {key.type} does not support encryption")
            bits = int(p.get("bits", 256))
            if bits not in (128, 256, 512):
                raise VaultHTTPError(400, "invalid bits given")
            plain = secrets.token_bytes(bits // 8)
            out = {"ciphertext": self._encrypt(key, plain), "key_version": key.latest}
            if kind == "plaintext":
                out["plaintext"] = base64.b64encode(plain).decode()
            return 200, _resp(data=out)
        if op == "decrypt" and len(segs) == 2 and method in ("POST", "PUT"):
            key = self._key(keys, segs[1], for_op=op)
            if key.type not in _ENCRYPTION_TYPES:
                raise VaultHTTPError(400, f"key type {key.type} does not support decryption")
            return 200, _resp(data={"plaintext": base64.b64encode(self._decrypt(key, p.get("ciphertext"))).decode()})
        if op == "export" and len(segs) in (3, 4) and method == "GET":
            kind, key = segs[1], self._key(keys, segs[2], for_op=op)
            if kind == "public-key":
                if key.type not in _SIGNING_TYPES:
                    raise VaultHTTPError(400, "public key export is only supported for asymmetric keys")
                out = {str(v): _pub_pem(k) for v, k in key.versions.items()}
            elif not key.exportable:
                raise VaultHTTPError(400, "key is not exportable")
            elif kind == "signing-key" and key.type in _SIGNING_TYPES:
                out = {str(v): k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()).decode() for v, k in key.versions.items()}
            elif kind == "encryption-key" and key.type in _ENCRYPTION_TYPES:
                out = {str(v): base64.b64encode(k).decode() for v, k in key.versions.items()}
            else:
                raise VaultHTTPError(400, f"{kind} is not a valid export type for {key.type} keys")
            return 200, _resp(data={"name": segs[2], "type": key.type, "keys": out})
        raise VaultHTTPError(405, "unsupported operation")

    def _key(self, keys: dict[str, TransitKey], name: str, *, for_op: str = "") -> TransitKey:
        key = keys.get(name)
        if key is None:
            if for_op in ("sign", "verify", "datakey", "decrypt", "export"):
                raise VaultHTTPError(400, "encryption key not found" if for_op != "sign" else "signing key not found")
            raise VaultHTTPError(404)
        return key

    def _rotate(self, key: TransitKey) -> None:
        key.latest += 1
        key.versions[key.latest] = (ec.generate_private_key(_SIGNING_TYPES[key.type]()) if key.type in _SIGNING_TYPES
                                    else secrets.token_bytes(_ENCRYPTION_TYPES[key.type]))
        key.created[key.latest] = self.clock()

    def _key_info(self, name: str, key: TransitKey) -> dict[str, Any]:
        signing = key.type in _SIGNING_TYPES
        if signing:
            versions: dict[str, Any] = {
                str(v): {"creation_time": _iso(key.created[v]), "name": "P-256" if key.type == "ecdsa-p256" else
                         "P-384", "public_key": _pub_pem(k)} for v, k in key.versions.items()}
        else:
            versions = {str(v): int(key.created[v]) for v in key.versions}
        return {
            "allow_plaintext_backup": False, "auto_rotate_period": 0, "deletion_allowed": False, "derived": False,
            "exportable": key.exportable, "imported_key": False, "keys": versions, "latest_version": key.latest,
            "min_available_version": 0, "min_decryption_version": 1, "min_encryption_version": 0, "name": name,
            "supports_decryption": not signing, "supports_derivation": not signing,
            "supports_encryption": not signing, "supports_signing": signing, "type": key.type,
        }

    def _encrypt(self, key: TransitKey, plain: bytes) -> str:
        nonce = secrets.token_bytes(12)
        ct = AESGCM(key.versions[key.latest]).encrypt(nonce, plain, None)
        return f"vault:v{key.latest}:" + base64.b64encode(nonce + ct).decode()

    def _decrypt(self, key: TransitKey, ciphertext: Any) -> bytes:
        m = re.fullmatch(r"vault:v(\d+):([A-Za-z0-9+/=]+)", str(ciphertext or ""))
        if not m:
            raise VaultHTTPError(400, "invalid ciphertext: no prefix")
        version = int(m.group(1))
        if version not in key.versions:
            raise VaultHTTPError(400, "invalid ciphertext: key version not found")
        raw = base64.b64decode(m.group(2))
        try:
            return AESGCM(key.versions[version]).decrypt(raw[:12], raw[12:], None)
        except (InvalidTag, ValueError):
            raise VaultHTTPError(400, "cipher: message authentication failed") from None


# -- helpers -----------------------------------------------------------------------------------


def _resp(*, data: Any = None, auth: Any = None) -> dict[str, Any]:
    return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
            "data": data, "wrap_info": None, "warnings": None, "auth": auth}


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _version_meta(v: dict[str, Any], version: int, entry: dict[str, Any]) -> dict[str, Any]:
    return {"created_time": v["created_time"], "custom_metadata": None, "deletion_time": v["deletion_time"],
            "destroyed": v["destroyed"], "version": version}


def _split_mount(path: str, mounts: list[str]) -> tuple[str | None, str]:
    best = None
    for m in mounts:
        if (path + "/").startswith(m) and (best is None or len(m) > len(best)):
            best = m
    if best is None:
        return None, path
    return best, path[len(best) :]


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _bound(allowed: list[str], value: Any) -> bool:
    return "*" in allowed or value in allowed


def _b64_in(value: Any, name: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise VaultHTTPError(400, f"unable to decode {name} as base64") from None


def _pub_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _der_to_jws(der: bytes, key: TransitKey) -> bytes:
    r, s = decode_dss_signature(der)
    n = 32 if key.type == "ecdsa-p256" else 48
    return r.to_bytes(n, "big") + s.to_bytes(n, "big")


def _jws_to_der(raw: bytes) -> bytes:
    n = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:n], "big"), int.from_bytes(raw[n:], "big"))


def _make_handler(vault: FakeVault) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeVault"
        disable_nagle_algorithm = True  # one response = one segment; no 40 ms delayed-ACK stalls

        def log_message(self, format: str, *args: Any) -> None:  # no stderr noise; tokens never logged
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path_only = urlsplit(self.path).path.removeprefix("/v1/")
            headers = {k.lower(): v for k, v in self.headers.items()}
            fault = vault._take_fault(self.command, path_only)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.drop:
                self.close_connection = True
                self._record(path_only, headers, 0)
                return
            if fault is not None and fault.raw is not None:
                self._send(200, fault.raw, path_only, headers)
                return
            if fault is not None:
                self._send(fault.status, json.dumps({"errors": fault.errors}).encode(), path_only, headers)
                return
            status, out = vault.handle(self.command, self.path, headers, body)
            self._send(status, b"" if out is None and status == 204 else json.dumps(out).encode(), path_only, headers)

        def _record(self, path: str, headers: dict[str, str], status: int) -> None:
            with vault.lock:
                vault.requests.append(Request(self.command, path, headers.get("x-vault-namespace", ""), status))

        def _send(self, status: int, payload: bytes, path: str, headers: dict[str, str]) -> None:
            self._record(path, headers, status)
            self.send_response(status)
            if status != 204:
                self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_PATCH = _serve

    return Handler
