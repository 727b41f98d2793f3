"""Pseudonymise identifiers, redact PII in free text, drop direct identifiers.

- Pseudonyms are keyed HMAC-SHA256 (hex) of the UTF-8 value: stable for one key, so
  joins across datasets still work, and not reversible or guessable without the key
  (a plain hash of an email or id can be brute-forced).
- Redaction replaces each match with a marker (`[EMAIL]`, `[CARD]`, `[NATIONAL_ID]`,
  `[PHONE]`). Card-like digit runs are redacted only when they pass the Luhn check, so
  order numbers and other long digit runs survive.
- The report names columns, counts per PII kind and the method — never a value, and
  never the key.

    >>> from mlseal.ml.anonymize import redact_text, AnonymizeSpec, anonymize
    >>> redact_text("mail ada@example.org or call 555-123-4567")[0]
    'mail [EMAIL] or call [PHONE]'
    >>> from mlseal.ml.data import make_demo_dataset
    >>> out, report = anonymize(make_demo_dataset(rows=5), b"k" * 32, AnonymizeSpec.demo())
    >>> "email" in out.names, report.dropped[:2]
    (False, ('name', 'email'))
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlseal.errors import ConfigurationError
from mlseal.ml import _report
from mlseal.ml.errors import DataError
from mlseal.ml.table import ColumnType, Table

__all__ = [
    "CARD",
    "EMAIL",
    "KINDS",
    "METHOD",
    "MIN_KEY_BYTES",
    "NATIONAL_ID",
    "PHONE",
    "AnonymizeReport",
    "AnonymizeSpec",
    "anonymize",
    "luhn_valid",
    "pseudonym",
    "redact_text",
]

METHOD = "hmac-sha256"
MIN_KEY_BYTES = 16

# Kinds, in the order they are applied: an email may contain digits, and a card number
# contains digit groups that a phone pattern could otherwise claim.
EMAIL = "email"
CARD = "card"
NATIONAL_ID = "national_id"
PHONE = "phone"
KINDS = (EMAIL, CARD, NATIONAL_ID, PHONE)

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by single spaces or dashes, not part of a longer
# digit group run (so a prefix of a long reference number is never taken for a card)
_CARD = re.compile(r"(?<!\d)(?<!\d[ -])\d(?:[ -]?\d){12,18}(?!\d)(?![ -]\d)")
# US SSN layout (area 001-899 except 666, group 01-99, serial 0001-9999) and UK NINO
_SSN = re.compile(r"(?<!\d)(?<!\d-)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)(?!-\d)")
_NINO = re.compile(r"\b(?![DFIQUV])[A-CEGHJ-PR-TW-Z](?![DFIQUVO])[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\d)")

_MARKERS = {EMAIL: "[EMAIL]", CARD: "[CARD]", NATIONAL_ID: "[NATIONAL_ID]", PHONE: "[PHONE]"}


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn (mod 10) check."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _sub(pattern: re.Pattern[str], kind: str, text: str, counts: Counter[str], keep: Any = None) -> str:
    def repl(m: re.Match[str]) -> str:
        if keep is not None and not keep(m.group(0)):
            return m.group(0)
        counts[kind] += 1
        return _MARKERS[kind]

    return pattern.sub(repl, text)


def redact_text(text: str) -> tuple[str, dict[str, int]]:
    """Redact emails, Luhn-valid card numbers, national ids and phone numbers.

    Returns the redacted text and the count of each kind found.
    """
    counts: Counter[str] = Counter()
    text = _sub(_EMAIL, EMAIL, text, counts)
    text = _sub(_CARD, CARD, text, counts, keep=lambda s: luhn_valid(re.sub(r"[ -]", "", s)))
    text = _sub(_SSN, NATIONAL_ID, text, counts)
    text = _sub(_NINO, NATIONAL_ID, text, counts)
    text = _sub(_PHONE, PHONE, text, counts)
    return text, {k: counts[k] for k in KINDS}


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise ConfigurationError(f"pseudonymisation key must be bytes, got {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(f"pseudonymisation key too short: {len(key)} bytes, need >= {MIN_KEY_BYTES}")


def pseudonym(value: str, key: bytes) -> str:
    """Hex HMAC-SHA256 of the UTF-8 value under `key`."""
    _check_key(key)
    return hmac.new(bytes(key), value.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AnonymizeSpec:
    """Which columns to pseudonymise, redact (free text) and drop."""

    pseudonymize: tuple[str, ...] = ()
    redact: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for group in (self.pseudonymize, self.redact, self.drop):
            if isinstance(group, str):
                raise ConfigurationError(f"column groups are tuples of names, got the string {group!r}")
        seen: Counter[str] = Counter([*self.pseudonymize, *self.redact, *self.drop])
        twice = sorted(n for n, c in seen.items() if c > 1)
        if twice:
            raise ConfigurationError(f"columns named in more than one action: {twice}")
        if not seen:
            raise ConfigurationError("empty anonymisation spec: name at least one column")

    @classmethod
    def demo(cls) -> AnonymizeSpec:
        """The demo dataset's spec: keep a pseudonymous patient id, redact notes, drop the rest."""
        return cls(pseudonymize=("patient_id",), redact=("notes",),
                   drop=("name", "email", "phone", "national_id", "card_number"))

    def to_obj(self) -> dict[str, list[str]]:
        return {"pseudonymize": list(self.pseudonymize), "redact": list(self.redact), "drop": list(self.drop)}


@dataclass(frozen=True)
class AnonymizeReport:
    rows: int
    pseudonymized: tuple[str, ...]
    redacted: tuple[str, ...]
    dropped: tuple[str, ...]
    pii_counts: tuple[tuple[str, int], ...]  # (kind, count) over all redacted columns
    rows_with_pii: int
    method: str = METHOD

    def to_obj(self) -> dict[str, Any]:
        return {"rows": self.rows, "pseudonymized": list(self.pseudonymized), "redacted": list(self.redacted),
                "dropped": list(self.dropped), "pii_counts": dict(self.pii_counts),
                "rows_with_pii": self.rows_with_pii,
                "method": {"pseudonymize": self.method, "redact": "regex+luhn", "drop": "remove column"}}

    def to_json(self) -> str:
        return _report.dumps(self.to_obj())


def anonymize(table: Table, key: bytes, spec: AnonymizeSpec) -> tuple[Table, AnonymizeReport]:
    """Apply `spec` to `table` with the HMAC `key` (bytes from the caller's `Secret`)."""
    _check_key(key)
    table.require([*spec.pseudonymize, *spec.redact, *spec.drop])
    for name in (*spec.pseudonymize, *spec.redact):
        if table.schema.type_of(name) is not ColumnType.STR:
            raise DataError(f"column {name!r} is {table.schema.type_of(name).value}, expected str")
    out = table
    for name in spec.pseudonymize:
        col = table.column(name)
        out = out.with_column(name, ColumnType.STR, np.array([pseudonym(v, key) for v in col], dtype=object))
    totals: Counter[str] = Counter()
    hit = np.zeros(table.n_rows, dtype=bool)
    for name in spec.redact:
        redacted = []
        for i, v in enumerate(table.column(name)):
            text, counts = redact_text(v)
            totals.update(counts)
            hit[i] |= any(counts.values())
            redacted.append(text)
        out = out.with_column(name, ColumnType.STR, np.array(redacted, dtype=object))
    out = out.drop(spec.drop)
    report = AnonymizeReport(rows=table.n_rows, pseudonymized=spec.pseudonymize, redacted=spec.redact,
                             dropped=spec.drop, pii_counts=tuple((k, totals[k]) for k in KINDS),
                             rows_with_pii=int(hit.sum()))
    return out, report
