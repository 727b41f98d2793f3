"""Ledger URLs and PostgreSQL DSNs made safe to show: one redaction for every form.

A ledger DSN reaches admission denials (every ``kubectl`` user reads them), the
webhook's audit log and CLI errors, so whatever it carries that could be a credential
is replaced by ``***`` before it is shown. The forms libpq accepts
(https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING):

- URIs, ``postgresql://user:password@host:port/db?param=value&...``: the password in
  the userinfo and the value of every query parameter that is not known to be harmless
  (``password``, ``sslpassword``, ``oauth_client_secret``, anything unknown; keys are
  percent-decoded first, as libpq does) are hidden;
- keyword/value strings, ``host=h user=u password='it''s \\' here' dbname=d``: the
  value of every keyword not known to be harmless is hidden, quoted values with spaces
  and backslash escapes included;
- malformed input: when the parse is in doubt (an unencoded ``@``, ``/`` or ``?`` in a
  password, an unterminated quote, a bare word), everything past the scheme or host,
  or past the last cleanly parsed keyword, is hidden.

An allow-list, not a deny-list: a keyword libpq adds tomorrow is hidden until someone
decides it is harmless. Host, port, database and user stay visible, so that a message
still says which ledger failed.

`scrub` cleans text that may echo the DSN, such as psycopg/libpq error messages
(``invalid URI query parameter: "…"``, ``missing "=" after "…"``, a whole URI after a
parse error, ``failed to resolve host '…'``): it removes the DSN's secret values and
every quoted fragment of the DSN that the redacted form does not show anyway.
`redact_text` does the same by pattern alone, for text whose DSN is unknown.

    >>> redact_dsn("postgresql://app:hunter2@db.example:5432/ledger?sslmode=require&sslpassword=k3y")
    'postgresql://app:***@db.example:5432/ledger?sslmode=require&sslpassword=***'
    >>> redact_dsn("host=db.example user=app password='two words' dbname=ledger")
    'host=db.example user=app password=*** dbname=ledger'
    >>> scrub('missing "=" after "words" in connection info string', "host=h password=two words")
    'missing "=" after "***" in connection info string'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["MASK", "SAFE_KEYS", "is_keyword_dsn", "redact_dsn", "redact_text", "scrub", "secrets_of"]

MASK = "***"

#: libpq connection parameters whose values are never credentials (shown in messages).
#: Everything else (password, sslpassword, oauth_client_secret, unknown keys) is hidden.
SAFE_KEYS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "options", "application_name", "fallback_application_name",
    "connect_timeout", "client_encoding", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "sslmode", "sslnegotiation", "sslcompression", "sslcert", "sslkey",
    "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "sslcertmode", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "min_protocol_version", "max_protocol_version", "requirepeer", "gssencmode",
    "krbsrvname", "gsslib", "gssdelegation", "channel_binding", "require_auth", "service", "target_session_attrs",
    "load_balance_hosts", "replication", "passfile", "oauth_issuer", "oauth_client_id", "oauth_scope",
})

#: what a connection parameter's name looks like; anything else in a key position is data
_KEYNAME = re.compile(r"[a-z_][a-z0-9_]*")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_KEYWORD_START = re.compile(r"\s*[^\s=]+\s*=")
_BARE = re.compile(r"[\w./~+-]+")
#: a value this short is replaced only where it stands alone, not inside other words
_SHORT = 4
_HIDDEN_REST = " [rest hidden: malformed]"


@dataclass(frozen=True)
class _Parsed:
    display: str
    #: values (raw and decoded) that must not appear in any message
    secrets: tuple[str, ...]
    #: values the display shows anyway (host, port, dbname, user, harmless keys and values)
    visible: frozenset[str]


def is_keyword_dsn(dsn: str) -> bool:
    """True for a libpq keyword/value string (``host=h dbname=d``), as opposed to a URI."""
    return "://" not in dsn and _KEYWORD_START.match(dsn) is not None


def redact_dsn(dsn: str) -> str:
    """``dsn`` (any ledger URL or libpq connection string) with every possible secret hidden."""
    return _parse(dsn).display


def secrets_of(dsn: str) -> tuple[str, ...]:
    """The values in ``dsn`` that `redact_dsn` hides (passwords and anything not known to be harmless)."""
    return _parse(dsn).secrets


def scrub(text: str, dsn: str) -> str:
    """``text`` (an error message that may echo ``dsn``) with nothing of ``dsn`` that `redact_dsn` hides.

    1. every quoted fragment (libpq quotes with ``"``, psycopg with ``'``) that comes from
       the DSN and is not something the redacted DSN shows anyway is hidden (a whole DSN
       echoed in quotes is replaced by its redacted form);
    2. every secret value of the DSN left anywhere in the text is hidden;
    3. `redact_text` hides DSN-shaped credentials of any other origin.
    """
    if not dsn:
        return redact_text(text)
    p = _parse(dsn)
    decoded = unquote(dsn)

    def fragment(m: re.Match[str]) -> str:
        q, frag = m.group(1), m.group(2)
        punctuation = len(frag) < _SHORT and not any(c.isalnum() for c in frag)  # "=", "]"
        if punctuation or frag in p.visible or frag in SAFE_KEYS:
            return m.group(0)
        from_dsn = frag in dsn or frag in decoded or any(frag in s for s in p.secrets)
        if not from_dsn and not any(s in frag for s in p.secrets if len(s) >= _SHORT):
            return m.group(0)
        if "://" in frag or "=" in frag:
            return q + redact_dsn(frag) + q
        return q + MASK + q

    out = re.sub(r'(")([^"\n]*)"', fragment, text)
    out = re.sub(r"(')([^'\n]*)'", fragment, out)
    for s in sorted(set(p.secrets), key=len, reverse=True):
        if not s or s == MASK:
            continue
        if len(s) >= _SHORT:
            out = out.replace(s, MASK)
        else:
            out = re.sub(r"(?<![\w*])" + re.escape(s) + r"(?![\w*])", MASK, out)
    return redact_text(out)


_URI_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+""")
_SECRET_PAIR = re.compile(
    r"""(?i)\b(\w*(?:passw|secret|token)\w*)(\s*=\s*)('(?:\\.|[^'\\])*'?|[^\s&'"]+)"""
)


_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:?#]*):[^/?#]*@")


def _redact_uri(m: re.Match[str]) -> str:
    uri = m.group(0)
    if uri.split(":", 1)[0].lower() in ("postgres", "postgresql"):
        return redact_dsn(uri)
    # other URIs (model locations, links) keep their query; only a password goes
    return _USERINFO_PASSWORD.sub(r"\1:" + MASK + "@", uri)


_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_SCHEME_CHARS = _LETTERS | frozenset("0123456789+.-")


def _sub_uris(text: str) -> str:
    """``_URI_IN_TEXT.sub(_redact_uri, text)``, trying the pattern only where a ``://`` is.

    A match's scheme is the run of scheme characters that ends at its ``://``, from the
    run's first letter (the leftmost place the pattern can start), so only those places
    are tried instead of every letter of the text.
    """
    out: list[str] = []
    last = pos = 0
    while (i := text.find("://", pos)) >= 0:
        start = i
        while start > pos and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < i and text[start] not in _LETTERS:
            start += 1
        m = _URI_IN_TEXT.match(text, start) if start < i else None
        if m is None:
            pos = i + 1
            continue
        out += (text[last:start], _redact_uri(m))
        last = pos = m.end()
    out.append(text[last:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Hide DSN-shaped credentials anywhere in free text: PostgreSQL URIs as `redact_dsn`
    does, other URIs' userinfo passwords, ``password=…``/``sslpassword=…``/``…secret=…``
    keyword pairs."""
    # Each pattern needs its marker ("://"; a passw/secret/token key name): without it the
    # text is returned as it is, and an audit line (the webhook writes one per review) pays
    # for neither scan.
    out = _sub_uris(text) if "://" in text else text
    low = out.casefold()  # what (?i) equates with these letters (ſ, K) folds to them
    if "passw" not in low and "secret" not in low and "token" not in low:
        return out
    return _SECRET_PAIR.sub(lambda m: m.group(1) + m.group(2) + MASK if m.group(3) != MASK else m.group(0), out)


# --- parsing ----------------------------------------------------------------------------------

def _parse(dsn: str) -> _Parsed:
    m = _SCHEME.match(dsn)
    if m is not None:
        rest = dsn[m.end():]
        if m.group(1).lower() == "sqlite" and "@" not in rest.partition("/")[0]:
            return _Parsed(dsn, (), frozenset())  # a file path: nothing secret in it
        return _parse_uri(m.group(1), rest)
    if is_keyword_dsn(dsn):
        return _parse_keywords(dsn)
    scheme, colon, _ = dsn.partition(":")
    if colon and _KEYNAME.fullmatch(scheme.lower()):
        if scheme.lower() == "sqlite":
            return _Parsed(dsn, (), frozenset())
        return _Parsed(f"{scheme}:{MASK}", (dsn[len(scheme) + 1:],), frozenset({scheme}))
    if not dsn or _BARE.fullmatch(dsn):  # a bare word or path: no credential structure
        return _Parsed(dsn, (), frozenset({dsn}))
    return _Parsed(MASK, (dsn,), frozenset())


def _parse_uri(scheme: str, rest: str) -> _Parsed:
    """``scheme://rest``, split the way libpq does (conninfo_uri_parse_options)."""
    secrets: list[str] = []
    visible: set[str] = {scheme}
    # libpq: the userinfo ends at the first '@', unless a '/' comes first
    cut = next((i for i, c in enumerate(rest) if c in "@/"), -1)
    userinfo: str | None = None
    after = rest
    if cut >= 0 and rest[cut] == "@":
        userinfo, after = rest[:cut], rest[cut + 1:]
    pre_query, qmark, query = after.partition("?")
    doubtful = "@" in pre_query or (userinfo is not None and any(c in userinfo for c in "?#"))
    if userinfo is None and "@" in rest:
        doubtful = True  # an unencoded '/' in a password moves the '@' out of the authority
    if doubtful:
        # Cannot tell where the password ends. Without a query, the host and database
        # follow the last '@' (an unencoded '@' or '/' in a password); otherwise show
        # nothing past the scheme.
        secrets += [rest, unquote(rest)]
        tail = rest.rpartition("@")[2]
        if not any(c in rest for c in "?#=&") and "@" in rest:
            hosts, _, db = tail.partition("/")
            visible |= _host_values(hosts) | {db, unquote(db)}
            shown = f"{scheme}://{MASK}@{tail}"
        else:
            shown = f"{scheme}://{MASK}"
        return _Parsed(shown, _nonempty(secrets), frozenset(v for v in visible if v))
    shown = f"{scheme}://"
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        visible |= {user, unquote(user)}
        if colon:
            secrets += [password, unquote(password)]
        shown += user + (f":{MASK}" if colon else "") + "@"
    hosts, _, db = pre_query.partition("/")
    visible |= _host_values(hosts) | {db, unquote(db)}
    shown += pre_query
    if qmark:
        parts = []
        for piece in query.split("&"):
            key, eq, value = piece.partition("=")
            name = unquote(key)
            if eq and "=" not in value and name in SAFE_KEYS:
                parts.append(piece)
                visible |= {name, value, unquote(value)}
            elif _KEYNAME.fullmatch(name):
                parts.append(f"{name}={MASK}" if eq else MASK)
                if eq:
                    visible.add(name)
                secrets += [value, unquote(value)] if eq else [piece]
            else:
                parts.append(MASK)
                secrets += [piece, unquote(piece)]
        shown += "?" + "&".join(parts)
    return _Parsed(shown, _nonempty(secrets), frozenset(v for v in visible if v))


def _host_values(hosts: str) -> set[str]:
    out = {hosts}
    for h in hosts.split(","):
        out.add(h)
        if h.startswith("["):
            name, _, port = h[1:].partition("]")
            out |= {name, port.lstrip(":")}
        else:
            name, _, port = h.rpartition(":") if h.count(":") == 1 else (h, "", "")
            out |= {name, port}
    return out


def _parse_keywords(dsn: str) -> _Parsed:
    """libpq's keyword/value syntax (conninfo_parse), tolerant: a malformed rest is hidden."""
    shown: list[str] = []
    secrets: list[str] = []
    visible: set[str] = set()
    i, n = 0, len(dsn)
    malformed = False
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            break
        start = i
        while i < n and dsn[i] != "=" and not dsn[i].isspace():
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if not key or i >= n or dsn[i] != "=":
            malformed = True
            secrets.append(dsn[start:])
            break
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        vstart, value, closed = i, [], True
        if i < n and dsn[i] == "'":
            i += 1
            closed = False
            while i < n:
                c = dsn[i]
                if c == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                elif c == "'":
                    i += 1
                    closed = True
                    break
                else:
                    value.append(c)
                    i += 1
        else:
            while i < n and not dsn[i].isspace():
                if dsn[i] == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                else:
                    value.append(dsn[i])
                    i += 1
        raw, text = dsn[vstart:i], "".join(value)
        if closed and key in SAFE_KEYS and (cut := _smuggled(key, raw)) is not None:
            # another separator's parameters inside a harmless one's value
            # (``host=h;password=pw``, ``host=h,password=pw``): libpq reads them as part of
            # the value, a person meant a password; show only what comes before them
            shown.append(f"{key}={raw[:cut]}{MASK}")
            visible |= {key, raw[:cut].rstrip(",;")}
            secrets += [raw[cut:], text, raw]
        elif closed and key in SAFE_KEYS:
            shown.append(f"{key}={raw}")
            visible |= {key, raw, text}
        else:
            shown.append(f"{key}={MASK}" if _KEYNAME.fullmatch(key) else MASK)
            if _KEYNAME.fullmatch(key):
                visible.add(key)
            else:
                secrets.append(key)
            secrets += [raw, text]
        if not closed:
            malformed = True
            break
    display = " ".join(shown) + (_HIDDEN_REST if malformed else "")
    return _Parsed(display.strip(), _nonempty(secrets), frozenset(v for v in visible if v))


_SMUGGLED = re.compile(r"[,;]\s*[^\s,;=]+\s*=")
_SECRET_WORD = re.compile(r"(?i)passw|secret|token")


def _smuggled(key: str, raw: str) -> int | None:
    """Where, in the value ``raw`` of the harmless keyword ``key``, a hidden part starts:
    at a ``,``/``;``-separated ``name=`` (a parameter written with another separator),
    or, for ``options`` (which legitimately holds ``-c name=value``), at the start when it
    names a password, secret or token; None when all of it can be shown."""
    if key == "options":
        return 0 if _SECRET_WORD.search(raw) or _SMUGGLED.search(raw) else None
    m = _SMUGGLED.search(raw)
    if m is not None:
        return m.start() + 1
    return 0 if "=" in raw else None


def _nonempty(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))
