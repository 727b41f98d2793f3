"""The audit line's redaction: the fast paths redact exactly what the plain patterns do.

Every review writes one audit line through a filter that hides DSN credentials
(`mlseal.ledger.dsn.redact_text`); the webhook's throughput depends on that filter
not scanning every letter of every line. These properties pin the fast paths to the
patterns they replace.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mlseal.ledger import dsn

_ALPHABET = "aAzZ09+.-:/ \"'<>@?#=&%_pPsSwWoOrRdDtTkKeEnNcCxXqQlLgG\u017f\u212a\u0131"
texts = st.text(alphabet=_ALPHABET, max_size=80) | st.lists(
    st.sampled_from(["postgresql://", "s3://", "u:pw@h", "://", "password=", "Token=", "x", " ", "\"", "1http://",
                     "9a://", "-a+b.c://", "sslpassword='a b'", "pa\u017f\u017fword=", "\u212aey", "@", "/db?",
                     "secret", "'"]), max_size=12).map("".join)


def _plain(text: str) -> str:
    out = dsn._URI_IN_TEXT.sub(dsn._redact_uri, text)
    return dsn._SECRET_PAIR.sub(
        lambda m: m.group(1) + m.group(2) + dsn.MASK if m.group(3) != dsn.MASK else m.group(0), out)


@settings(max_examples=3000, deadline=None)
@given(texts)
def test_fast_redaction_equals_the_patterns(text: str) -> None:
    assert dsn.redact_text(text) == _plain(text)


def test_examples() -> None:
    for text in ("see postgresql://u:hunter2@db/x and s3://b/k", "a password=hunter2 b", "PASSWORD = 'x y'",
                 "1http://u:pw@h/p", "x://", "no marker here", "pa\u017f\u017fword=hunter2"):
        assert dsn.redact_text(text) == _plain(text)
    assert "hunter2" not in dsn.redact_text("see postgresql://u:hunter2@db/x")
