"""One structured JSON log line format for the webhook and the loader.

Every line is one JSON object, keys sorted, with four common fields first in meaning:
``time`` (UTC, RFC 3339 with milliseconds), ``level`` (``info``, ``warning``, ``error``),
``logger`` (``mlseal.audit`` for the webhook's decisions, ``mlseal.fetch`` for the
loader's) and ``event`` (``admission``, ``fetch``); the rest are the event's own fields,
each always present (null when unknown), documented in docs/admission.md ("Audit log")
and docs/fetch.md ("Logs and metrics"). The CLI's other output stays human text.

    >>> import json
    >>> sorted(json.loads(line("mlseal.fetch", "fetch", decision="published")))
    ['decision', 'event', 'level', 'logger', 'time']
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

__all__ = ["COMMON_FIELDS", "line"]

COMMON_FIELDS = ("time", "level", "logger", "event")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def line(logger: str, event: str, *, level: str = "info", **fields: Any) -> str:
    """The JSON text of one log line (no newline)."""
    clash = set(fields) & set(COMMON_FIELDS)
    if clash:
        raise ValueError(f"fields {sorted(clash)} are the common fields")
    return json.dumps({"time": _now(), "level": level, "logger": logger, "event": event, **fields}, sort_keys=True)
