"""Canonical JSON for reports: sorted keys, no whitespace, so equal reports are equal bytes."""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(obj: Any) -> str:
    return json.dumps(_finite(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _finite(obj: Any) -> Any:
    # JSON has no NaN: a metric that could not be computed is reported as null.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
