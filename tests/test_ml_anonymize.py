"""mlseal.ml.anonymize: HMAC pseudonyms, PII redaction with Luhn, drops, reports."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlseal.errors import ConfigurationError
from mlseal.ml import data
from mlseal.ml._synthetic import luhn_check_digit
from mlseal.ml.anonymize import AnonymizeSpec, anonymize, luhn_valid, pseudonym, redact_text
from mlseal.ml.errors import DataError
from mlseal.ml.table import Table

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def demo() -> Table:
    return data.make_demo_dataset(rows=120, seed=4)


# -- redaction cases -----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected", "kind"), [
    ("write to ada.lovelace+x@mail.example.org now", "write to [EMAIL] now", "email"),
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok", "card"),
    ("card 4111-1111-1111-1111", "card [CARD]", "card"),
    ("card 4111111111111111.", "card [CARD].", "card"),
    ("amex 378282246310005", "amex [CARD]", "card"),
    ("ref-4111 1111 1111 1111", "ref-[CARD]", "card"),
    ("id:123-45-6789", "id:[NATIONAL_ID]", "national_id"),
    ("ssn 123-45-6789 on file", "ssn [NATIONAL_ID] on file", "national_id"),
    ("nino QQ 12 34 56 C".replace("QQ", "AB"), "nino [NATIONAL_ID]", "national_id"),
    ("call (555) 123-4567", "call [PHONE]", "phone"),
    ("call 555-123-4567 today", "call [PHONE] today", "phone"),
    ("call +1 555 123 4567", "call [PHONE]", "phone"),
    ("call 555.123.4567", "call [PHONE]", "phone"),
])
def test_redacts_each_kind(text: str, expected: str, kind: str) -> None:
    out, counts = redact_text(text)
    assert out == expected
    assert counts[kind] == 1 and sum(counts.values()) == 1


@pytest.mark.parametrize("text", [
    "order 4111 1111 1111 1112",        # Luhn fails: a reference number, not a card
    "order 4111111111111112",
    "order 7853344780953657",
    "batch 123456789012",                # 12 digits: too short for a card
    "ssn-like 000-12-3456 and 666-12-3456 and 123-00-4567 and 123-45-0000",  # invalid SSN layout
    "measured 12.345 and 0.5 mm, 2024-01-15",
    "no contact details recorded",
    "x 1234 5678",
    "long 1234 4111 1111 1111 1111 5678",  # no Luhn-valid card is carved out of a longer run
    "acct 12-123-45-6789-00",
])
def test_leaves_non_pii_alone(text: str) -> None:
    out, counts = redact_text(text)
    assert out == text
    assert sum(counts.values()) == 0


def test_mixed_text_counts() -> None:
    text = "Reached at 555-123-4567, email a@b.example.com, card 4111 1111 1111 1111, ref 4111 1111 1111 1112."
    out, counts = redact_text(text)
    assert out == "Reached at [PHONE], email [EMAIL], card [CARD], ref 4111 1111 1111 1112."
    assert counts == {"email": 1, "card": 1, "national_id": 0, "phone": 1}


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("") and not luhn_valid("41x1")


# -- pseudonyms ----------------------------------------------------------------------------

def test_pseudonym_is_keyed_hmac() -> None:
    assert pseudonym("P100001", KEY) == hmac.new(KEY, b"P100001", hashlib.sha256).hexdigest()
    assert pseudonym("P100001", KEY) != pseudonym("P100001", b"\x01" * 32)
    assert pseudonym("P100001", KEY) != hashlib.sha256(b"P100001").hexdigest()


def test_key_checks_do_not_echo_key() -> None:
    with pytest.raises(ConfigurationError, match="too short: 5 bytes") as exc:
        pseudonym("x", b"short")
    assert "short'" not in str(exc.value)
    with pytest.raises(ConfigurationError, match="must be bytes"):
        anonymize(data.make_demo_dataset(rows=3), "a-string-key-of-enough-length", AnonymizeSpec.demo())  # type: ignore[arg-type]


# -- anonymize -----------------------------------------------------------------------------

def test_anonymize_demo(demo: Table) -> None:
    out, rep = anonymize(demo, KEY, AnonymizeSpec.demo())
    for col in ("name", "email", "phone", "national_id", "card_number"):
        assert col not in out.names
    ids = out.column("patient_id")
    assert all(len(v) == 64 for v in ids) and len(set(ids)) == demo.n_rows
    assert out.column("mean_radius").tolist() == demo.column("mean_radius").tolist()
    notes = " ".join(out.column("notes"))
    for col in ("email", "phone", "national_id", "card_number"):
        for v in demo.column(col):
            assert v not in notes
    assert rep.rows == demo.n_rows and rep.dropped == AnonymizeSpec.demo().drop
    counts = dict(rep.pii_counts)
    assert counts["email"] > 0 and counts["card"] > 0 and counts["phone"] > 0 and counts["national_id"] > 0
    assert 0 < rep.rows_with_pii <= demo.n_rows


def test_anonymize_deterministic_per_key(demo: Table) -> None:
    a, _ = anonymize(demo, KEY, AnonymizeSpec.demo())
    b, _ = anonymize(demo, KEY, AnonymizeSpec.demo())
    c, _ = anonymize(demo, b"\x02" * 32, AnonymizeSpec.demo())
    assert a.equals(b)
    assert a.column("patient_id").tolist() != c.column("patient_id").tolist()


def test_anonymize_bad_spec_and_columns(demo: Table) -> None:
    with pytest.raises(DataError, match="missing columns"):
        anonymize(demo, KEY, AnonymizeSpec(drop=("nope",)))
    with pytest.raises(DataError, match="'mean_radius' is float, expected str"):
        anonymize(demo, KEY, AnonymizeSpec(pseudonymize=("mean_radius",)))
    with pytest.raises(ConfigurationError, match="more than one action"):
        AnonymizeSpec(pseudonymize=("email",), drop=("email",))
    with pytest.raises(ConfigurationError, match="empty"):
        AnonymizeSpec()
    with pytest.raises(ConfigurationError, match="tuples of names"):
        AnonymizeSpec(drop="email")  # type: ignore[arg-type]


def test_anonymize_empty_table() -> None:
    t = Table.from_columns({"id": np.array([], dtype=object), "x": np.array([], dtype=np.float64)})
    out, rep = anonymize(t, KEY, AnonymizeSpec(pseudonymize=("id",)))
    assert out.n_rows == 0 and rep.rows == 0


@settings(max_examples=200, deadline=None)
@given(body=st.text(alphabet="0123456789", min_size=15, max_size=15), sep=st.sampled_from(["", " ", "-"]),
       wrong=st.integers(min_value=1, max_value=9))
def test_card_redaction_follows_luhn(body: str, sep: str, wrong: int) -> None:
    good = body + luhn_check_digit(body)
    bad = body + str((int(luhn_check_digit(body)) + wrong) % 10)
    fmt = lambda n: sep.join(n[i:i + 4] for i in range(0, 16, 4))  # noqa: E731
    out, counts = redact_text(f"paid with {fmt(good)} today")
    assert out == "paid with [CARD] today" and counts["card"] == 1
    text = f"order {fmt(bad)} today"
    assert redact_text(text) == (text, {"email": 0, "card": 0, "national_id": 0, "phone": 0})
