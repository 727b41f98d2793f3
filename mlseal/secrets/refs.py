"""Secrets by reference: which parameter names are secret-like, and what a reference looks like.

Pipeline parameters and step params are public by design (they land in compiled KFP
specs, run metadata, the UI and the ledger), so a secret travels only as a reference:

- a parameter whose name says "secret" (password, token, credential, api key, private,
  HMAC or data key, DSN, ...) must end in ``_path`` (a Vault KV path such as
  ``mlseal/anonymize/hmac``), ``_name`` (a Transit key name such as ``mlseal-data``) or
  ``_ref`` (either), and its value must look like that reference;
- any other secret-like parameter may have no literal value at all.

The same rule guards KFP compilation (`mlseal.components.compile`) and every sealed
stage's params (`mlseal.stage`, `mlseal record --param`).

    >>> check_parameter("hmac_key_path", "mlseal/anonymize/hmac")
    >>> check_parameter("db_password", "hunter2")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    SecretLiteralError: db_password: parameter looks like a secret and has a literal value; ...

Names are not enough (``database_url: postgresql://u:pw@h/db`` has an innocent name), so
every value is checked too, whatever its name (strings inside lists and dicts as well),
by `secret_literal_kind`:

- a URL whose userinfo has a password (``scheme://user:password@host``), or a
  ``password=`` / ``sslpassword=`` in a URL query or a libpq keyword string
  (``host=h user=u password=pw``);
- well-known token shapes: PEM private keys, Vault service/batch/recovery tokens
  (``hvs.``, ``hvb.``, ``hvr.``, legacy ``s.`` + 24 characters), JWTs (``eyJ….eyJ….…``),
  AWS access key ids (``AKIA``/``ASIA`` + 16), GitHub (``ghp_`` …) and Slack (``xoxb-`` …)
  tokens;
- a long high-entropy token, see `HIGH_ENTROPY_MIN_LENGTH`.

A KFP placeholder (``{{$.inputs.parameters['x']}}``) is a reference, not a literal, and
is ignored. Errors name the parameter and what the value looks like, never the value.

    >>> check_parameter("database_url", "postgresql://mlseal@ledger:5432/mlseal")
    >>> check_parameter("database_url", "postgresql://u:pw@h/db")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    SecretLiteralError: database_url: the value looks like a URL with a password in it; ...
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from typing import Any

from mlseal.errors import ConfigurationError

__all__ = [
    "CLASS_CHANGE_RATE",
    "HIGH_ENTROPY_BITS",
    "HIGH_ENTROPY_MIN_LENGTH",
    "MIXED_ENTROPY_BITS",
    "SECRET_WORDS",
    "SecretLiteralError",
    "check_parameter",
    "is_secret_like",
    "secret_literal_kind",
]

SECRET_WORDS = re.compile(
    r"(secret|passw(?:or)?d|token|credential|api_?key|private_?key|hmac_?key|data_?key|signing_?key|"
    r"access_?key|dsn|conninfo)",
    re.IGNORECASE,
)
_KV_PATH = re.compile(r"^[A-Za-z0-9._@=+-]+(/[A-Za-z0-9._@=+-]+)+$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_REF_RULES = {
    "_path": (_KV_PATH, "a Vault KV path like mlseal/app/secret"),
    "_name": (_KEY_NAME, "a Vault Transit key name like mlseal-data"),
    "_ref": (re.compile(f"{_KV_PATH.pattern}|{_KEY_NAME.pattern}"), "a Vault path or Transit key name"),
}

class SecretLiteralError(ConfigurationError):
    """A secret-like parameter carries a literal value instead of a reference."""


def is_secret_like(name: str) -> bool:
    return SECRET_WORDS.search(name) is not None


#: A token (a run of base64/base64url/token characters) is "high entropy" when it has at
#: least this many characters, holds upper-case letters, lower-case letters and digits,
#: is not hex (digests: sha256, UUIDs), and either its Shannon entropy is at least
#: `HIGH_ENTROPY_BITS` per character, or at least `MIXED_ENTROPY_BITS` with the character
#: class (upper/lower/digit/other) changing between at least `CLASS_CHANGE_RATE` of
#: neighbouring characters.
#:
#: Why these numbers: random base62 strings of 20 characters have a median entropy of
#: ~4.0 bits/char (at most log2(20) = 4.3), so a plain entropy threshold high enough to
#: spare identifiers like ``ResNet50FinalModelWeightsV2`` (4.16 bits) misses most short
#: tokens. Identifiers are words: their class changes between ~20-48% of neighbours,
#: random base62 between ~62%. Measured on random base62: 84% of 20-character, 86% of
#: 24-character, 96% of 32-character and >99% of 40-character tokens are caught; none of
#: the identifier, path and digest fixtures in tests/test_secret_literals.py are. It is a
#: heuristic: a secret shorter than 20 characters, or made only of hex digits, is not
#: caught by value; its parameter name still is (`SECRET_WORDS`).
HIGH_ENTROPY_MIN_LENGTH = 20
HIGH_ENTROPY_BITS = 4.5
MIXED_ENTROPY_BITS = 3.5
CLASS_CHANGE_RATE = 0.5

_PLACEHOLDER = re.compile(r"\{\{\$[^}]*\}\}")
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a PEM private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")),
    ("a URL with a password in it", re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s?#@:]*:[^/\s?#@]+@")),
    ("a connection string with a password in it",
     re.compile(r"(?i)(?:^|[\s?&;])(?:ssl)?password\s*=\s*(?!\{\{)[^\s&;]")),
    ("a Vault token", re.compile(r"\b(?:hv[sbr]\.[A-Za-z0-9_-]{20,}|[sbr]\.[A-Za-z0-9]{24})(?![A-Za-z0-9_-])")),
    ("a JSON Web Token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b")),
    ("a GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
)
_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]+")
_HEXISH = re.compile(r"[0-9a-fA-F-]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _class_change_rate(s: str) -> float:
    def cls(ch: str) -> int:
        return 0 if ch.isupper() else 1 if ch.islower() else 2 if ch.isdigit() else 3

    classes = [cls(ch) for ch in s]
    return sum(a != b for a, b in itertools.pairwise(classes)) / (len(s) - 1)


def _high_entropy(token: str) -> bool:
    if len(token) < HIGH_ENTROPY_MIN_LENGTH or _HEXISH.fullmatch(token):
        return False
    if not (any(c.isupper() for c in token) and any(c.islower() for c in token) and any(c.isdigit() for c in token)):
        return False
    h = _entropy(token)
    return h >= HIGH_ENTROPY_BITS or (h >= MIXED_ENTROPY_BITS and _class_change_rate(token) >= CLASS_CHANGE_RATE)


def _string_kind(text: str) -> str | None:
    text = _PLACEHOLDER.sub(" ", text)
    for kind, pattern in _SHAPES:
        if pattern.search(text):
            return kind
    for m in _TOKEN.finditer(text):
        token = m.group()
        # a path (or a URI's path) is judged segment by segment: its words are not a token
        pathlike = token.startswith(("/", "./", "../", "~/")) or _SCHEME.search(text) is not None
        for part in token.split("/") if pathlike else (token,):
            if _high_entropy(part):
                return "a high-entropy token (an API key or password?)"
    return None


def secret_literal_kind(value: Any, _depth: int = 0) -> str | None:
    """What secret ``value`` looks like (e.g. ``"a Vault token"``), or None.

    Strings are checked; lists, tuples and dict values (and keys) are searched.
    """
    if isinstance(value, str):
        return _string_kind(value) if value else None
    if _depth > 20:
        return None
    if isinstance(value, dict):
        items: list[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return None
    for item in items:
        kind = secret_literal_kind(item, _depth + 1)
        if kind is not None:
            return kind
    return None


def check_parameter(name: str, value: Any, where: str = "") -> None:
    """Raise `SecretLiteralError` if `name` is secret-like and `value` is not a reference,
    or if `value` itself looks like a secret (see `secret_literal_kind`), whatever the name.
    """
    where = where or name
    if is_secret_like(name) and value not in (None, ""):
        _check_by_name(name, value, where)
    kind = secret_literal_kind(value)
    if kind is not None:
        raise SecretLiteralError(
            f"{where}: the value looks like {kind} (a {type(value).__name__} of length {len(str(value))}); "
            "pipeline parameters are public (compiled YAML, run metadata, the UI, the ledger). Store the "
            f"secret in Vault and pass its path instead (e.g. {name}_path: mlseal/...); for a URL or "
            "connection string, keep it without the password and read the password from Vault"
        )


def _check_by_name(name: str, value: Any, where: str) -> None:
    for suffix, (pattern, what) in _REF_RULES.items():
        if name.endswith(suffix):
            if isinstance(value, str) and pattern.fullmatch(value):
                return
            raise SecretLiteralError(
                f"{where}: a secret reference must be {what}, not a literal value "
                f"(got a {type(value).__name__} of length {len(str(value))})"
            )
    raise SecretLiteralError(
        f"{where}: parameter looks like a secret and has a literal value; pipeline parameters are public. "
        f"Store it in Vault and pass its path instead (e.g. {name}_path: mlseal/...)"
    )
