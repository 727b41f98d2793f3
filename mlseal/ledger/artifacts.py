"""Digests of local artifacts, for checking a ledger's outputs against their records.

`digest_uri` is what ``mlseal ledger verify --artifacts`` passes to
`mlseal.ledger.verify.verify_ledger`: a file's SHA-256, or a directory's name-binding
digest (`mlseal.signing.digest.digest_path`), for a ``file://`` URI or a plain path.

    >>> import hashlib, tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"model"); f.flush()
    ...     digest_uri("file://" + f.name) == hashlib.sha256(b"model").hexdigest()
    True
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from mlseal.errors import ConfigurationError

__all__ = ["digest_uri"]


def digest_uri(uri: str) -> str:
    """SHA-256 (file) or directory digest (binds file names) of a local artifact URI.

    Only ``file://`` URIs and plain paths are fetched; anything else, or a path that does
    not exist, raises `ConfigurationError`, and a file that carries the directory manifest
    tag `VerificationError` (verify reports either as an artifact problem).
    """
    from mlseal.signing.digest import digest_path

    parts = urlsplit(uri)
    if parts.scheme == "file":
        path = unquote(parts.path)
    elif parts.scheme == "" or (len(parts.scheme) == 1 and uri[1:3] == ":\\"):
        path = uri
    else:
        raise ConfigurationError(f"cannot fetch {parts.scheme}:// artifacts for --artifacts (only file://)")
    if not Path(path).exists():
        raise ConfigurationError(f"artifact {path} does not exist")
    return digest_path(path)
