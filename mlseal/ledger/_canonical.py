"""Is a record payload exactly its RFC 8785 (JCS) encoding? Exact check, fast check, diagnosis.

A ledger entry signs a record's canonical bytes, and readers accept a payload only if
it is byte for byte the canonical encoding of the record it parses to. Otherwise one
signed entry could mean different things to different JSON parsers (duplicate keys:
Python keeps the last, others the first) and one record could have many entry hashes
(whitespace, ``\\u`` escapes, key order, number spellings).

- `problem` is the exact check plus a diagnosis: it re-encodes the parsed record and
  compares bytes; on a mismatch it names what is non-canonical.
- `fast_fields` is the verifier's per-entry check (``mlseal ledger verify`` with
  signatures). A payload with no backslash and no control byte has only literal, hence
  canonical, strings; one regular expression then checks the whole v1 layout (fixed
  keys in RFC 8785 order, no whitespace, numbers in ECMAScript form) and the names in
  ``metrics`` and ``params`` are checked sorted and unique. Other payloads (escapes,
  nested ``params``) are matched with strictly canonical string tokens (RFC 8785
  §3.2.2) and only ``params`` and ``metrics`` are re-encoded. A match proves the
  payload canonical; no match says nothing, and the caller falls back to `problem`.
  Re-encoding every payload instead would add ~20% to each entry's verification.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from mlseal.ledger import _jcs

#: A JSON string as RFC 8785 writes it: every character literal (UTF-8, checked
#: separately) except ``"`` and ``\\`` and the controls, which use the short escapes
#: ``\\b \\t \\n \\f \\r`` or else ``\\u00xx`` in lowercase hex.
_CSTR = rb'"(?:[^"\\\x00-\x1f]++|\\["\\bfnrt]|\\u00(?:0[0-7bef]|1[0-9a-f]))*+"'
#: A string in a payload with no backslash and no control byte (`_UNPLAIN`, checked
#: first, in C):
#: every such string is literal, so canonical, and ends at the next quote.
_PSTR = rb'"[^"]*+"'
_HEX = rb'"[0-9a-f]{64}"'
_OPT_HEX = rb"(?:" + _HEX + rb"|null)"
_UINT = rb"(?:0|[1-9][0-9]{0,14})"  # below 10**15 < 2**53; larger ones take the exact path
_OPT_UINT = rb"(?:" + _UINT + rb"|null)"
_NUM = rb"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:e[-+][0-9]++)?"  # lexically; re-encoding decides
#: A number whose spelling is provably its RFC 8785 form (ECMAScript Number::toString):
#: an integer below 10**15 (exact in a double), or a plain decimal of at most 15 digits
#: (so it is the shortest that round-trips) with no trailing zero, at least 1e-6.
#: (The decimal comes first: the lists around it are possessive, so the first
#: alternative that matches must be the right one.)
_SNUM = (
    rb"(?:-?(?=[0-9.]{3,16}(?![0-9.]))(?:[1-9][0-9]*+|0(?!\.0{6}))\.[0-9]*[1-9](?![0-9])"
    rb"|0(?![0-9])|-?[1-9][0-9]{0,14}(?![0-9]))"
)


def _list(item: bytes) -> bytes:
    return rb"\[(?:" + item + rb"(?:," + item + rb")*+)?\]"


def _flat(key: bytes, value: bytes) -> bytes:
    member = key + rb":" + value
    return rb"\{(?:" + member + rb"(?:," + member + rb")*+)?\}"


def _head(st: bytes, metric: bytes) -> bytes:
    """The record up to its ``params`` value, keys in RFC 8785 order, strings ``st``.
    Groups: component image, component source_sha256 (JSON text, maybe null), metrics."""
    opt = rb"(?:" + st + rb"|null)"
    item_in = (
        rb'\{"digest":\{"sha256":' + _HEX + rb'\},"name":' + st + rb',"producer_seq":' + _OPT_UINT
        + rb',"uri":' + st + rb"\}"
    )
    item_out = (
        rb'\{"bundle_sha256":' + _OPT_HEX + rb',"digest":\{"sha256":' + _HEX + rb'\},"media_type":' + st
        + rb',"name":' + st + rb',"uri":' + st + rb"\}"
    )
    return (
        rb'\{"component":\{"image":(' + opt + rb'),"name":' + st + rb'(?:,"secret_store":"dev")?'
        + rb',"source_sha256":(' + _OPT_HEX + rb')\},'
        + rb'(?:"error":' + st + rb",)?"
        + rb'"inputs":' + _list(item_in) + rb","
        + rb'"metrics":(' + _flat(st, metric) + rb"),"
        + rb'"outputs":' + _list(item_out) + rb","
        + rb'"params":'
    )


def _tail(st: bytes) -> bytes:
    """The record from its top-level ``prev`` to the end, strings ``st``. Groups: prev,
    seq, signer key id, stage."""
    opt = rb"(?:" + st + rb"|null)"
    secret = rb'\{"path":' + st + rb',"version":' + _OPT_UINT + rb"\}"
    return (
        rb',"prev":"([0-9a-f]{64})","run":\{"pipeline":' + opt + rb',"run_id":' + opt + rb',"task":' + opt
        + rb'\},"secrets":' + _list(secret) + rb","
        + rb'"seq":(' + _UINT + rb'),"signer":\{"key_id":(' + st + rb'),"name":' + st + rb"\},"
        + rb'"stage":(' + st + rb'),"status":"(?:ok|failed)","time":' + st + rb',"v":1\}'
    )


#: The whole record, when the payload has no escapes, ``params`` is a flat object of
#: plain values and ``metrics`` numbers are in RFC 8785 form (the usual case). Groups:
#: image, source_sha256, metrics, params, prev, seq, signer key id, stage.
_RECORD = re.compile(
    _head(_PSTR, _SNUM) + rb"(" + _flat(_PSTR, rb"(?:" + _PSTR + rb"|" + _SNUM + rb"|true|false|null)") + rb")"
    + _tail(_PSTR)
)
#: bytes a payload must lack for `_RECORD`: controls and the backslash
_UNPLAIN = bytes(range(0x20)) + b"\\"
#: Any other record: `_HEAD`, then ``params`` (re-encoded), then `_TAIL`. ``,"`` never
#: occurs inside a JSON string (its quote would be escaped), so the last ``,"prev":"``
#: in a payload `_TAIL` matches is the top-level one.
_HEAD = re.compile(_head(_CSTR, _NUM))
_TAIL = re.compile(_tail(_CSTR))
_PREV = b',"prev":"'
#: a member name in a flat object (``{"`` and ``,"`` occur only before names there)
_KEY = re.compile(rb'[{,]("[^"]*"):')
#: with no escapes, byte order is RFC 8785's UTF-16 key order unless a name holds a
#: character beyond the BMP (4-byte UTF-8)
_NON_BMP = re.compile(rb"[\xf0-\xff]")

#: (seq, prev hex, signer key id, stage, component image, component source_sha256):
#: what the verifier reads from a record proved canonical; the last two are JSON text
#: (a string or ``null``), the key id and stage the text between their quotes.
Fields = tuple[int, bytes, bytes, bytes, bytes, bytes]


def fast_fields(payload: bytes) -> Fields | None:
    """The verifier's fields if ``payload`` is provably a canonical v1 record; None if
    it cannot tell (the caller must then run `problem`).

    Checks: (1) the whole payload has the v1 layout with canonical tokens and keys in
    order (`_RECORD`, or `_HEAD` and `_TAIL` around nested ``params``); (2) the names
    in ``metrics`` and flat ``params`` are sorted and unique, numbers there are in
    RFC 8785 form, nested ``params`` re-encode to themselves; (3) the payload is valid
    UTF-8 (RFC 8785 output always is).
    """
    ascii_only = payload.isascii()
    if not ascii_only:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if len(payload.translate(None, _UNPLAIN)) == len(payload):
        m = _RECORD.fullmatch(payload)
        if m is not None:
            (a, b), (c, d) = m.span(3), m.span(4)
            if not ascii_only and _NON_BMP.search(payload, a, d):
                return None
            km = _KEY.findall(payload, a, b)
            if len(km) > 1 and km != sorted(set(km)):
                return None
            kp = _KEY.findall(payload, c, d)
            if len(kp) > 1 and kp != sorted(set(kp)):
                return None
            image, source, _, _, prev, seq, key_id, stage = m.groups()
            return int(seq), prev, key_id[1:-1], stage[1:-1], image, source
    h = _HEAD.match(payload)
    if h is None:
        return None
    i = payload.rfind(_PREV)
    t = _TAIL.fullmatch(payload, i) if i >= h.end() else None
    if t is None:
        return None
    members = b"[" + h[3] + b"," + payload[h.end() : i] + b"]"
    try:
        values = json.loads(members)
    except ValueError:
        return None
    if len(values) != 2 or not isinstance(values[1], dict) or _jcs.dumps(values) != members:
        return None
    return int(t[2]), t[1], t[3][1:-1], t[4][1:-1], h[1], h[2]


# --- the exact check and its diagnosis ------------------------------------------------

def _utf16_key(k: str) -> bytes:
    return k.encode("utf-16-be", "surrogatepass")  # RFC 8785 §3.2.3: sort by UTF-16 code units


def _key_problems(data: bytes) -> str | None:
    """Duplicate or unsorted object keys, found by re-parsing with a pairs hook."""
    found: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if not found:
            seen: set[str] = set()
            for k in keys:
                if k in seen:
                    found.append(f"duplicate key {k[:40]!r}")
                    break
                seen.add(k)
            else:
                order = [_utf16_key(k) for k in keys]
                for a, b in itertools.pairwise(order):
                    if a > b:
                        ka, kb = a.decode("utf-16-be", "surrogatepass"), b.decode("utf-16-be", "surrogatepass")
                        found.append(f"keys out of RFC 8785 order ({ka[:40]!r} before {kb[:40]!r})")
                        break
        return dict(pairs)

    try:
        json.loads(data, object_pairs_hook=hook)
    except (ValueError, UnicodeDecodeError):
        return "not valid JSON"
    return found[0] if found else None


def _first_difference(data: bytes, want: bytes) -> str:
    """What the first byte where ``data`` leaves its canonical form ``want`` shows."""
    i = next((j for j, (a, b) in enumerate(zip(data, want, strict=False)) if a != b), min(len(data), len(want)))
    at = data[i : i + 1]
    before = data[max(0, i - 6) : i + 1]
    if at in (b" ", b"\t", b"\n", b"\r"):
        return f"whitespace RFC 8785 does not write (byte {i})"
    if b"\\" in before:
        return f"an escape RFC 8785 writes as a literal character (byte {i})"
    if at[:1].isdigit() or at in (b"-", b"+", b".", b"e", b"E") or want[i : i + 1].isdigit():
        return f"a number not in RFC 8785 form (byte {i})"
    return f"differs from the canonical encoding at byte {i}"


def problem(data: bytes, canonical: bytes) -> str | None:
    """Why ``data`` is not ``canonical`` (the RFC 8785 encoding of the record it parses
    to), or None if they are equal.

    The JSON-level canonical form (``_jcs.dumps`` of the parsed JSON) tells a
    non-canonical spelling (duplicate keys, key order, whitespace, escapes, numbers)
    from a payload that is canonical JSON but not a v1 record's encoding (unknown
    fields, or optional fields written out that the writer omits).
    """
    if data == canonical:
        return None
    why = _key_problems(data)
    if why is not None:
        return why
    try:
        as_json = _jcs.dumps(json.loads(data))
    except (ValueError, UnicodeDecodeError, TypeError):  # rfc8785 refuses e.g. big integers
        return "holds a value RFC 8785 cannot encode"
    if as_json != data:
        return _first_difference(data, as_json)
    try:
        have, want = json.loads(data), json.loads(canonical)
    except ValueError:  # pragma: no cover - both parsed above
        return "differs from the canonical encoding of its record"
    extra = sorted(set(have) - set(want))
    missing = sorted(set(want) - set(have))
    if extra or missing:
        return (
            "is canonical JSON but not the v1 record's encoding"
            + (f"; fields the v1 record does not write: {', '.join(extra)[:120]}" if extra else "")
            + (f"; fields missing: {', '.join(missing)[:120]}" if missing else "")
        )
    diff = sorted(k for k in have if have[k] != want[k])
    return f"is canonical JSON but not the v1 record's encoding (in {', '.join(diff)[:120]})"
