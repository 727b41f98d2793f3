"""RFC 8785 (JCS) canonical JSON, fast for the values records hold.

`rfc8785.dumps` is exact but pure Python; every append pays for it. The standard
library's C encoder produces the same bytes (sorted keys, no whitespace, UTF-8, the
same string escapes: ``\\"`` ``\\\\`` ``\\b \\f \\n \\r \\t``, other controls as lowercase
``\\u00xx``) whenever the value holds no float that Python spells differently from
ECMAScript, no integer beyond 2**53, and no key outside the Basic Multilingual Plane
(JCS sorts keys by UTF-16 code units, Python by code points). A single walk checks
that; anything else goes to `rfc8785`. The test suite compares both on random values.

    >>> dumps({"b": [1, 2.5, None], "a": "\\u00fc"})
    b'{"a":"\\xc3\\xbc","b":[1,2.5,null]}'
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

_MAX_SAFE = 2**53 - 1
_encode = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode


def _float_ok(f: float) -> bool:
    # Python's repr and ECMAScript's Number::toString agree (both print the shortest
    # round-trip digits) when neither uses an exponent and the value is not integral
    # (ECMAScript prints 1.0 as "1"): 1e-4 <= |f| < 1e16.
    a = abs(f)
    return 1e-4 <= a < 1e16 and not f.is_integer()


def _simple(value: Any) -> bool:
    """True if the C encoder's output is already RFC 8785 for this value."""
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if not -_MAX_SAFE <= v <= _MAX_SAFE:
                return False
        elif t is float:
            if not _float_ok(v):
                return False
        elif t is dict:
            for k, x in v.items():
                if type(k) is not str or (not k.isascii() and max(map(ord, k)) > 0xFFFF):
                    return False
                push(x)
        elif t is list or t is tuple:
            extend(v)
        else:  # subclasses (str enums, int subclasses, …): let rfc8785 decide
            return False
    return True


def dumps(value: Any) -> bytes:
    if _simple(value):
        try:
            return _encode(value).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: let rfc8785 refuse it
            pass
    result: bytes = rfc8785.dumps(value)
    return result
