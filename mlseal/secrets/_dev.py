"""The dev secret store: a directory of 0600 files, for laptops and CI without Vault.

It mirrors the Vault source's behaviour (KV versions, a P-256 signing key, wrapped data
keys) so that code paths are the same, but it is *not* Vault: every use is reported as
"dev secrets, not Vault". Layout under the root (directories 0700, files 0600)::

    kv/<path>.json            {"current_version": N, "versions": {"1": {"data": {...}, "created_time": ...}}}
    transit/<name>.pem        EC P-256 private key (PKCS#8 PEM) standing in for a Transit key
    transit/<name>.kek        32 random bytes: the key-encryption key for wrapped data keys

Keys are created on first use; creation is race-free between processes (a temp file is
hard-linked into place, so the first writer wins and everyone reads its key).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import os
import secrets as _random
import stat
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mlseal._files import write_atomic
from mlseal.errors import ConfigurationError, VerificationError
from mlseal.secrets._paths import DATA_KEY, SIGNING_KEY, kv_path
from mlseal.secrets._paths import key_name as _key_name
from mlseal.secrets.errors import SecretNotFound
from mlseal.secrets.values import DataKey, KVSecret
from mlseal.sensitive import Secret
from mlseal.signing.keys import LocalKeySigner

log = logging.getLogger("mlseal.secrets")

WRAP_PREFIX = "dev:v1:"
_NONCE = 12


class DevSecretSource:
    """Secrets from a local directory. Constructing it does no I/O."""

    kind: Literal["dev"] = "dev"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DevSecretSource(root={str(self.root)!r})"

    def describe(self) -> str:
        return f"dev secrets, not Vault (local store {self.root})"

    # -- KV ---------------------------------------------------------------------------

    def read(self, path: str, version: int | None = None) -> KVSecret:
        full = kv_path(path)
        doc = self._load_kv(full)
        if doc is None:
            raise SecretNotFound(full, version, where=f"dev store {self.root}")
        want = int(doc["current_version"]) if version is None else version
        entry = doc["versions"].get(str(want))
        if entry is None:
            raise SecretNotFound(full, want, where=f"dev store {self.root}")
        log.debug("dev secrets, not Vault: read %s version %d", full, want)
        return KVSecret(full, want, {k: Secret(v) for k, v in entry["data"].items()})

    def put(self, path: str, data: dict[str, str]) -> KVSecret:
        """Write a new version of ``path`` (dev only; pipelines never write Vault KV)."""
        full = kv_path(path)
        for k, v in data.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ConfigurationError(f"{full}: KV fields and values must be strings")
        doc = self._load_kv(full) or {"current_version": 0, "versions": {}}
        version = int(doc["current_version"]) + 1
        doc["versions"][str(version)] = {"data": dict(data), "created_time": _now()}
        doc["current_version"] = version
        _write_private(self._kv_file(full), json.dumps(doc, sort_keys=True).encode(), replace=True)
        return KVSecret(full, version, {k: Secret(v) for k, v in data.items()})

    def ensure_key(self, path: str, nbytes: int = 32) -> KVSecret:
        full = kv_path(path)
        if nbytes < 16:
            raise ConfigurationError(f"{full}: refusing to create a key shorter than 16 bytes ({nbytes})")
        if self._load_kv(full) is None:
            value = base64.b64encode(_random.token_bytes(nbytes)).decode()
            doc = {"current_version": 1, "versions": {"1": {"data": {"key": value}, "created_time": _now()}}}
            if _write_private(self._kv_file(full), json.dumps(doc, sort_keys=True).encode(), replace=False):
                log.warning("dev secrets, not Vault: created a new random key at %s", full)
        found = self.read(full)
        if "key" not in found.data:
            raise ConfigurationError(f"{full} version {found.version}: has no field 'key'")
        return found

    # -- signing and data keys --------------------------------------------------------

    def transit_signer(self, key_name: str = SIGNING_KEY) -> LocalKeySigner:
        name = _key_name(key_name)
        pem_path = self.root / "transit" / f"{name}.pem"
        if not pem_path.exists():
            fresh = LocalKeySigner.generate()
            if _write_private(pem_path, fresh.private_pem(), replace=False):
                log.warning("dev secrets, not Vault: created signing key %s (%s…)", name, fresh.key_id[:16])
        signer = LocalKeySigner.from_pem(_read_private(pem_path), source=f"dev signing key {name}")
        log.info("dev secrets, not Vault: signing with local key %s (%s…)", name, signer.key_id[:16])
        return signer

    def data_key(self, key_name: str = DATA_KEY) -> DataKey:
        name = _key_name(key_name)
        kek = self._kek(name, create=True)
        plaintext = _random.token_bytes(32)
        nonce = _random.token_bytes(_NONCE)
        wrapped = AESGCM(kek).encrypt(nonce, plaintext, _wrap_aad(name))
        return DataKey(Secret(plaintext), WRAP_PREFIX + base64.b64encode(nonce + wrapped).decode(), name)

    def unwrap_data_key(self, wrapped: str, key_name: str = DATA_KEY) -> Secret[bytes]:
        name = _key_name(key_name)
        if not wrapped.startswith(WRAP_PREFIX):
            got = wrapped.split(":", 2)[0] if ":" in wrapped else "unknown"
            raise ConfigurationError(
                f"wrapped data key was made by '{got}', not by this dev store ({WRAP_PREFIX[:-1]}); "
                "decrypt it with the secret source that wrapped it"
            )
        try:
            raw = base64.b64decode(wrapped[len(WRAP_PREFIX) :], validate=True)
        except ValueError:
            raise VerificationError("wrapped data key is not valid base64") from None
        if len(raw) != _NONCE + 32 + 16:
            raise VerificationError(f"wrapped data key has length {len(raw)}, expected {_NONCE + 48}")
        kek = self._kek(name, create=False)
        try:
            return Secret(AESGCM(kek).decrypt(raw[:_NONCE], raw[_NONCE:], _wrap_aad(name)))
        except InvalidTag:
            raise VerificationError(
                f"wrapped data key does not decrypt with dev key {name} in {self.root} (modified, or another store)"
            ) from None

    # -- files ------------------------------------------------------------------------

    def _kv_file(self, full: str) -> Path:
        return self.root / "kv" / (full + ".json")

    def _load_kv(self, full: str) -> dict[str, Any] | None:
        path = self._kv_file(full)
        if not path.exists():
            return None
        try:
            doc = json.loads(_read_private(path))
            int(doc["current_version"])
            if not isinstance(doc["versions"], dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError(f"dev store file for {full} is corrupt: {path}") from None
        return dict(doc)

    def _kek(self, name: str, *, create: bool) -> bytes:
        path = self.root / "transit" / f"{name}.kek"
        if not path.exists():
            if not create:
                raise SecretNotFound(f"transit/{name}", where=f"dev store {self.root}", why="data key not found")
            _write_private(path, _random.token_bytes(32), replace=False)
        kek = _read_private(path)
        if len(kek) != 32:
            raise ConfigurationError(f"dev data key {name} in {self.root} is corrupt (length {len(kek)})")
        return kek


def _wrap_aad(name: str) -> bytes:
    return b"mlseal-dev-datakey:" + name.encode()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z")


def _read_private(path: Path) -> bytes:
    """Read a store file, refusing one that group or others may read (like ssh does)."""
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"dev store file {path} has mode {stat.S_IMODE(st.st_mode):o}; it must be 0600 (chmod 600 it)"
            )
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read dev store file {path}: {exc.strerror}") from None


def _write_private(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write ``data`` to ``path`` with mode 0600, atomically, in a 0700 directory.

    ``replace=False`` creates the file only if it does not exist (returns False if another
    writer got there first); ``replace=True`` swaps it in.
    """
    _mkdir_private(path.parent)
    return write_atomic(path, data, mode=0o600, replace=replace)


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
