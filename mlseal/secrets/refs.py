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
"""

from __future__ import annotations

import re
from typing import Any

from mlseal.errors import ConfigurationError

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


def check_parameter(name: str, value: Any, where: str = "") -> None:
    """Raise `SecretLiteralError` if `name` is secret-like and `value` is not a reference."""
    if not is_secret_like(name) or value in (None, ""):
        return
    where = where or name
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
