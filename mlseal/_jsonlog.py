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
import logging
from typing import Any

__all__ = ["COMMON_FIELDS", "JsonFormatter", "line"]

COMMON_FIELDS = ("time", "level", "logger", "event")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def line(logger: str, event: str, *, level: str = "info", **fields: Any) -> str:
    """The JSON text of one log line (no newline)."""
    clash = set(fields) & set(COMMON_FIELDS)
    if clash:
        raise ValueError(f"fields {sorted(clash)} are the common fields")
    return json.dumps({"time": _now(), "level": level, "logger": logger, "event": event, **fields}, sort_keys=True)


class JsonFormatter(logging.Formatter):
    """Any log record as one line of this format: event ``log``, ``message`` (and
    ``exception``, the traceback, when there is one). The webhook's operational logs
    use it, so that its stdout and stderr carry one format."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"message": record.getMessage()}
        if record.exc_info:
            fields["exception"] = record.exc_text or self.formatException(record.exc_info)
        return line(record.name, "log", level=record.levelname.lower(), **fields)
