"""Names shared by both sources: every mlseal secret lives under ``mlseal/``; the default
Transit keys."""

from __future__ import annotations

import re

from mlseal.errors import ConfigurationError

PREFIX = "mlseal/"
#: the default Transit signing key and data key names
SIGNING_KEY = "mlseal-signing"
DATA_KEY = "mlseal-data"
_SEGMENT = re.compile(r"^[A-Za-z0-9._@=+-]+$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def kv_path(path: str) -> str:
    """``db/creds`` or ``mlseal/db/creds`` -> ``mlseal/db/creds``; refuses traversal."""
    p = path.strip()
    if not p.startswith(PREFIX):
        p = PREFIX + p.lstrip("/")
    segments = p.split("/")
    for seg in segments:
        if seg in ("", ".", "..") or not _SEGMENT.match(seg):
            raise ConfigurationError(f"invalid secret path {path!r}: bad segment {seg!r}")
    if len(segments) < 2:
        raise ConfigurationError(f"invalid secret path {path!r}")
    return p


def key_name(name: str) -> str:
    """A Transit key name: letters, digits, ``-`` and ``_`` only."""
    if not _KEY_NAME.match(name):
        raise ConfigurationError(f"invalid Transit key name {name!r}")
    return name
