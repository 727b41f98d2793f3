"""The Vault secret source: KV v2 reads and Transit sign / datakey / decrypt via hvac.

All requests go through `VaultSession` (token renewal, re-login, bounded retries, typed
errors). Responses are checked for the documented shape before use: a field that is
missing or of the wrong type is a `VaultResponseError`, never a ``KeyError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mlseal.errors import ConfigurationError
from mlseal.secrets._paths import DATA_KEY, SIGNING_KEY, kv_path
from mlseal.secrets._paths import key_name as _key_name
from mlseal.secrets._vault_config import VaultConfig
from mlseal.secrets._vault_session import VaultSession, data_block
from mlseal.secrets.errors import KeyTypeError, SecretNotFound, VaultRequestRefused, VaultResponseError
from mlseal.secrets.values import DataKey, KVSecret
from mlseal.sensitive import Secret
from mlseal.signing.keys import KeyId, load_public_key
from mlseal.signing.keys import key_id as _key_id

log = logging.getLogger("mlseal.secrets")

_VAULT_CT = re.compile(r"^vault:v(\d+):([A-Za-z0-9+/=]+)$")
SIGNING_KEY_TYPE = "ecdsa-p256"
DATA_KEY_TYPES = ("aes256-gcm96", "chacha20-poly1305", "aes128-gcm96")


class VaultSecretSource:
    """Secrets, signatures and data keys from Vault. Constructing it does no I/O."""

    kind: Literal["vault"] = "vault"

    def __init__(
        self,
        config: VaultConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.session = VaultSession(config, clock=clock, sleep=sleep)
        self._data_keys_checked: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VaultSecretSource(addr={self.config.addr!r}, auth={self.config.auth.method})"

    def describe(self) -> str:
        ns = f", namespace {self.config.namespace}" if self.config.namespace else ""
        return f"Vault at {self.config.addr}{ns} (auth {self.config.auth.method})"

    # -- KV v2 --------------------------------------------------------------------------

    def read(self, path: str, version: int | None = None) -> KVSecret:
        full = kv_path(path)
        mount = self.config.kv_mount
        where = f"{mount}/{full}" + (f" version {version}" if version is not None else "")
        if version is not None and version < 1:
            raise ConfigurationError(f"{where}: KV versions start at 1")
        try:
            resp = self.session.call(
                f"read {where}",
                lambda c: c.secrets.kv.v2.read_secret_version(
                    path=full, version=version, mount_point=mount, raise_on_deleted_version=True
                ),
            )
        except VaultRequestRefused as exc:
            if exc.status == 404:
                raise SecretNotFound(f"{mount}/{full}", version, why="not found (or deleted)") from None
            raise
        data, got = _kv_body(resp, where)
        if version is not None and got != version:
            raise VaultResponseError(f"read {where}: Vault returned version {got}")
        log.info("read %s/%s version %d from Vault", mount, full, got)
        return KVSecret(full, got, data)

    def ensure_key(self, path: str, nbytes: int = 32) -> KVSecret:
        """Read the key at ``path``; Vault keys are provisioned by an operator, never here."""
        full = kv_path(path)
        try:
            found = self.read(full)
        except SecretNotFound:
            raise SecretNotFound(
                f"{self.config.kv_mount}/{full}",
                hint=f"mlseal never creates Vault secrets; an operator provisions it with "
                f"`vault kv put {self.config.kv_mount}/{full} key=<base64 of {nbytes} random bytes>`",
            ) from None
        if "key" not in found.data:
            raise ConfigurationError(f"{self.config.kv_mount}/{full} version {found.version}: has no field 'key'")
        return found

    # -- Transit ----------------------------------------------------------------------

    def transit_key(self, key_name: str) -> dict[str, Any]:
        """``GET transit/keys/:name`` (type, versions, public keys; never private keys)."""
        name = _key_name(key_name)
        mount = self.config.transit_mount
        what = f"read Transit key {mount}/keys/{name}"
        try:
            resp = self.session.call(what, lambda c: c.secrets.transit.read_key(name=name, mount_point=mount))
        except VaultRequestRefused as exc:
            if exc.status == 404:
                raise SecretNotFound(f"{mount}/keys/{name}", why="Transit key not found") from None
            raise
        return data_block(resp, what)

    def transit_signer(self, key_name: str = SIGNING_KEY, *, check_signatures: bool = True) -> VaultTransitSigner:
        """The Transit key as a `Signer`. ``check_signatures`` verifies each returned
        signature locally (~0.2 ms) so a faulty Vault or proxy is caught at signing time."""
        name = _key_name(key_name)
        mount = self.config.transit_mount
        info = self.transit_key(name)
        ktype = info.get("type")
        if ktype != SIGNING_KEY_TYPE:
            raise KeyTypeError(
                f"Transit key {mount}/keys/{name} has type {ktype!r}; mlseal signs with {SIGNING_KEY_TYPE}"
            )
        try:
            version = int(info["latest_version"])
            pem = info["keys"][str(version)]["public_key"]
            public = load_public_key(pem.encode(), source=f"Transit key {mount}/keys/{name} v{version}")
        except (KeyError, TypeError, ValueError, AttributeError):
            raise VaultResponseError(
                f"read Transit key {mount}/keys/{name}: response lacks the public key of the latest version"
            ) from None
        signer = VaultTransitSigner(self.session, mount, name, version, public, check_signatures=check_signatures)
        log.info("signing with Vault Transit key %s/keys/%s v%d (%s…)", mount, name, version, signer.key_id[:16])
        return signer

    def data_key(self, key_name: str = DATA_KEY) -> DataKey:
        name = _key_name(key_name)
        mount = self.config.transit_mount
        self._check_data_key_type(name)
        what = f"Transit datakey/plaintext with {mount}/keys/{name}"
        resp = self.session.call(
            what,
            lambda c: c.secrets.transit.generate_data_key(name=name, key_type="plaintext", bits=256, mount_point=mount),
        )
        data = data_block(resp, what)
        plaintext = _b64(data.get("plaintext"), what, "plaintext")
        wrapped = data.get("ciphertext")
        if len(plaintext) != 32 or not isinstance(wrapped, str) or not _VAULT_CT.match(wrapped):
            raise VaultResponseError(f"{what}: response has no 32-byte plaintext and vault:vN: ciphertext")
        return DataKey(Secret(plaintext), wrapped, name)

    def unwrap_data_key(self, wrapped: str, key_name: str = DATA_KEY) -> Secret[bytes]:
        name = _key_name(key_name)
        mount = self.config.transit_mount
        if not _VAULT_CT.match(wrapped):
            got = wrapped.split(":", 1)[0] if ":" in wrapped else "unknown"
            raise ConfigurationError(
                f"wrapped data key was made by '{got}', not by Vault Transit; "
                "decrypt it with the source that wrapped it"
            )
        what = f"Transit decrypt with {mount}/keys/{name}"
        resp = self.session.call(
            what, lambda c: c.secrets.transit.decrypt_data(name=name, ciphertext=wrapped, mount_point=mount)
        )
        plaintext = _b64(data_block(resp, what).get("plaintext"), what, "plaintext")
        if len(plaintext) != 32:
            raise VaultResponseError(f"{what}: data key has {len(plaintext)} bytes, expected 32")
        return Secret(plaintext)

    def _check_data_key_type(self, name: str) -> None:
        with self._lock:
            if name in self._data_keys_checked:
                return
        info = self.transit_key(name)
        if info.get("type") not in DATA_KEY_TYPES:
            raise KeyTypeError(
                f"Transit key {self.config.transit_mount}/keys/{name} has type {info.get('type')!r}; "
                f"data keys need one of {', '.join(DATA_KEY_TYPES)}"
            )
        with self._lock:
            self._data_keys_checked.add(name)


class VaultTransitSigner:
    """A `mlseal.signing.keys.Signer` whose P-256 private key never leaves Vault.

    Pinned to the key version whose public key it read, so a rotation in Vault cannot
    silently change who signed. Each signature Vault returns is checked against that
    public key before it is handed out.
    """

    def __init__(
        self,
        session: VaultSession,
        mount: str,
        name: str,
        version: int,
        public: ec.EllipticCurvePublicKey,
        *,
        check_signatures: bool = True,
    ) -> None:
        self._session = session
        self._check = check_signatures
        self.mount = mount
        self.name = name
        self.version = version
        self._public = public
        self._key_id = _key_id(public)

    def __repr__(self) -> str:
        return f"VaultTransitSigner({self.mount}/keys/{self.name} v{self.version}, key_id={self._key_id[:16]}…)"

    @property
    def key_id(self) -> KeyId:
        return self._key_id

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        what = f"Transit sign with {self.mount}/keys/{self.name} v{self.version}"
        encoded = base64.b64encode(data).decode()
        resp = self._session.call(
            what,
            lambda c: c.secrets.transit.sign_data(
                name=self.name,
                hash_input=encoded,
                key_version=self.version,
                hash_algorithm="sha2-256",
                marshaling_algorithm="asn1",
                mount_point=self.mount,
            ),
        )
        sig = data_block(resp, what).get("signature")
        m = _VAULT_CT.match(sig) if isinstance(sig, str) else None
        if m is None:
            raise VaultResponseError(f"{what}: response has no vault:vN: signature")
        if int(m.group(1)) != self.version:
            raise VaultResponseError(f"{what}: Vault signed with key version {m.group(1)}")
        der = _b64(m.group(2), what, "signature")
        if not self._check:
            return der
        try:
            self._public.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise VaultResponseError(
                f"{what}: the signature Vault returned does not verify with the key's public key"
            ) from None
        return der


def _b64(value: Any, what: str, field: str) -> bytes:
    if not isinstance(value, str):
        raise VaultResponseError(f"{what}: response field {field!r} missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VaultResponseError(f"{what}: response field {field!r} is not base64") from None


def _kv_body(resp: Any, where: str) -> tuple[dict[str, Secret], int]:
    """KV v2 read response: ``{"data": {"data": {...}, "metadata": {"version": N, ...}}}``."""
    outer = data_block(resp, f"read {where}")
    inner, meta = outer.get("data"), outer.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("version"), int):
        raise VaultResponseError(f"read {where}: malformed KV v2 response (no metadata.version)")
    if inner is None:
        raise SecretNotFound(where, meta["version"], why="deleted or destroyed")
    if not isinstance(inner, dict):
        raise VaultResponseError(f"read {where}: malformed KV v2 response (data is not an object)")
    values: dict[str, Secret] = {}
    for k, v in inner.items():
        # KV values are usually strings; anything else is kept as its JSON text.
        values[str(k)] = Secret(v if isinstance(v, str) else json.dumps(v, sort_keys=True))
    return values, int(meta["version"])
