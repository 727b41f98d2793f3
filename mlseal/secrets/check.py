"""Operator self-test: is the configured secret source usable, and least-privileged?

`run_checks` returns one `Check` per item, each ok or failed with the reason, in order:

1. source      which source (Vault address + auth method, or "dev secrets, not Vault")
2. health      ``sys/health``: reachable, initialised, unsealed, active or standby
3. auth        login works; token accessor, TTL, renewability, policies
4. kv mount    the KV mount is KV **v2** (``sys/internal/ui/mounts``)
5. transit     the Transit mount exists
6. signing key ``mlseal-signing`` is ecdsa-p256 and not exportable; a probe signature
               verifies with its public key
7. data key    ``mlseal-data`` makes a data key that unwraps to the same bytes
8. policy      the token may read ``<kv>/data/mlseal/*`` and sign, and may *not* write
               KV, read outside ``mlseal/`` or export Transit keys (least privilege)
9. secrets     each ``paths`` entry is readable (path + version reported, never values)

A failed step does not stop later ones (an operator wants the whole picture), except
that nothing after a failed login is attempted.

    >>> import tempfile
    >>> from mlseal.secrets import open_secret_source
    >>> checks = run_checks(open_secret_source(dev_dir=tempfile.mkdtemp(), env={}))
    >>> [c.ok for c in checks][:2], checks[0].detail  # doctest: +ELLIPSIS
    ([True, True], 'dev secrets, not Vault (local store ...)')
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mlseal.errors import Error
from mlseal.secrets._paths import DATA_KEY, SIGNING_KEY
from mlseal.secrets.source import SecretSource

__all__ = ["PROBE", "Check", "run_checks"]

PROBE = b"mlseal vault check probe"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_obj(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def run_checks(
    src: SecretSource,
    *,
    paths: Sequence[str] = (),
    signing_key: str = SIGNING_KEY,
    data_key: str = DATA_KEY,
) -> list[Check]:
    from mlseal.secrets._dev import DevSecretSource
    from mlseal.secrets._vault import VaultSecretSource

    if isinstance(src, VaultSecretSource):
        return _vault_checks(src, paths, signing_key, data_key)
    if isinstance(src, DevSecretSource):
        return _dev_checks(src, paths, signing_key, data_key)
    return [Check("source", False, f"unknown secret source {type(src).__name__}")]


def _attempt(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except Error as exc:
        return Check(name, False, str(exc))


def _common(src: SecretSource, paths: Sequence[str], signing_key: str, data_key: str) -> list[Check]:
    def sign() -> str:
        signer = src.transit_signer(signing_key)
        sig = signer.sign(PROBE)
        signer.public_key().verify(sig, PROBE, ec.ECDSA(hashes.SHA256()))
        return f"{signing_key}: probe signature verifies with its public key (key id {signer.key_id[:16]}…)"

    def datakey() -> str:
        dk = src.data_key(data_key)
        if src.unwrap_data_key(dk.wrapped, data_key) != dk.plaintext:
            raise Error(f"{data_key}: unwrapped data key differs from the one issued")
        return f"{data_key}: data key issued and unwrapped ({dk.wrapped.split(':', 2)[1]})"

    out = [_attempt("signing key", sign), _attempt("data key", datakey)]
    for p in paths:
        out.append(_attempt(f"secret {p}", _reader(src, p)))
    return out


def _reader(src: SecretSource, path: str) -> Callable[[], str]:
    def read() -> str:
        kv = src.read(path)
        return f"{kv.path} version {kv.version} readable (fields: {', '.join(sorted(kv.data)) or 'none'})"

    return read


# -- dev ------------------------------------------------------------------------------------


def _dev_checks(src: Any, paths: Sequence[str], signing_key: str, data_key: str) -> list[Check]:
    out = [Check("source", True, src.describe())]

    def perms() -> str:
        root = src.root
        if not root.exists():
            return f"{root} will be created (0700) on first use"
        loose = [
            str(p)
            for p in [root, *root.rglob("*")]
            if stat.S_IMODE(p.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO) and (p.is_file() or p == root)
        ]
        if loose:
            raise Error(f"readable by group/others (chmod 600 files, 700 the store): {', '.join(loose[:5])}")
        return f"{root}: files 0600, owner {os.getuid() if hasattr(os, 'getuid') else '?'}"

    out.append(_attempt("store permissions", perms))
    return out + _common(src, paths, signing_key, data_key)


# -- vault ----------------------------------------------------------------------------------


def _vault_checks(src: Any, paths: Sequence[str], signing_key: str, data_key: str) -> list[Check]:
    cfg, session = src.config, src.session
    out = [Check("source", True, src.describe())]

    def health() -> str:
        status, body = session.raw_get("/v1/sys/health")
        body = body if isinstance(body, dict) else {}
        version = body.get("version", "?")
        if status == 200:
            return f"{cfg.addr}: initialized, unsealed, active (Vault {version})"
        if status in (429, 473):
            return f"{cfg.addr}: unsealed standby (requests are forwarded to the active node; Vault {version})"
        if status == 503 or body.get("sealed"):
            raise Error(f"{cfg.addr}: Vault is sealed (sys/health answered {status})")
        if status == 501:
            raise Error(f"{cfg.addr}: Vault is not initialized")
        raise Error(f"{cfg.addr}: sys/health answered {status}")

    out.append(_attempt("health", health))

    def auth() -> str:
        st = session.login()
        ttl = "never expires" if st.ttl == 0 else f"ttl {st.ttl}s"
        renew = "renewable" if st.renewable else "not renewable"
        return (
            f"{cfg.auth.method} auth ok: token accessor {st.accessor}, {ttl}, {renew}, "
            f"policies {', '.join(st.policies) or 'none'}"
        )

    auth_check = _attempt("auth", auth)
    out.append(auth_check)
    if not auth_check.ok:
        return out

    def mount(path: str, want_type: str, want_version: str | None) -> Callable[[], str]:
        def check() -> str:
            status, body = session.raw_get(f"/v1/sys/internal/ui/mounts/{path}")
            data = body.get("data") if isinstance(body, dict) else None
            if status != 200 or not isinstance(data, dict):
                raise Error(f"{path}/: no {want_type} mount visible to this token (HTTP {status})")
            kind, version = data.get("type"), (data.get("options") or {}).get("version")
            if kind != want_type or (want_version and version != want_version):
                got = f"{kind} v{version}" if version else str(kind)
                raise Error(f"{path}/ is {got}, expected {want_type}" + (f" v{want_version}" if want_version else ""))
            return f"{path}/ is {want_type}" + (f" v{want_version}" if want_version else "")

        return check

    out.append(_attempt("kv mount", mount(f"{cfg.kv_mount}/mlseal", "kv", "2")))
    out.append(_attempt("transit mount", mount(cfg.transit_mount, "transit", None)))

    def key_config() -> str:
        info = src.transit_key(signing_key)
        if info.get("type") != "ecdsa-p256":
            raise Error(f"{cfg.transit_mount}/keys/{signing_key} has type {info.get('type')!r}, expected ecdsa-p256")
        if info.get("exportable"):
            raise Error(f"{cfg.transit_mount}/keys/{signing_key} is exportable: its private key can leave Vault")
        return f"{cfg.transit_mount}/keys/{signing_key}: ecdsa-p256 v{info.get('latest_version')}, not exportable"

    out.append(_attempt("signing key config", key_config))
    out += _common(src, paths, signing_key, data_key)
    out.append(_attempt("policy", lambda: _policy(session, cfg, signing_key, data_key)))
    return out


def _policy(session: Any, cfg: Any, signing_key: str, data_key: str) -> str:
    kv, tr = cfg.kv_mount, cfg.transit_mount
    probes = {
        "kv_read": f"{kv}/data/mlseal/vault-check",
        "kv_outside": f"{kv}/data/vault-check-outside-mlseal",
        "sign": f"{tr}/sign/{signing_key}",
        "datakey": f"{tr}/datakey/plaintext/{data_key}",
        "export": f"{tr}/export/signing-key/{signing_key}",
        "export_data": f"{tr}/export/encryption-key/{data_key}",
    }
    resp = session.call(
        "sys/capabilities-self",
        lambda c: c.adapter.post("/v1/sys/capabilities-self", json={"paths": list(probes.values())}),
    )
    caps: dict[str, set[str]] = {}
    for key, path in probes.items():
        found = resp.get(path) if isinstance(resp, dict) else None
        if found is None and isinstance(resp, dict) and isinstance(resp.get("data"), dict):
            found = resp["data"].get(path)
        caps[key] = set(found or [])
    problems = []

    def allowed(key: str, *want: str) -> bool:
        return bool(caps[key] & {"root", *want})

    if not allowed("kv_read", "read"):
        problems.append(f"cannot read {probes['kv_read']}")
    if not allowed("sign", "update"):
        problems.append(f"cannot sign with {probes['sign']}")
    if allowed("kv_read", "create", "update", "delete", "patch"):
        problems.append(f"may write {kv}/data/mlseal/* (pipelines need read only)")
    if allowed("kv_outside", "read", "create", "update"):
        problems.append(f"may read outside mlseal/ ({probes['kv_outside']})")
    if allowed("export", "read") or allowed("export_data", "read"):
        problems.append(f"may export Transit keys ({tr}/export/...)")
    if problems:
        raise Error("not least privilege: " + "; ".join(problems))
    return f"reads {kv}/data/mlseal/*, signs with {signing_key}; cannot write KV, read elsewhere or export keys"
