"""protobuf.Value conversions exactly as the KFP v2 backend (Go) performs them.

Parameter values travel as ``google.protobuf.Value`` (JSON: null, number, string, bool,
list, object). These helpers reproduce the Go functions the driver and launcher call, so
a component sees the same text and the same JSON it would see on a cluster:

- `to_protojson` — ``protojson.Marshal`` of an ExecutorInput: numbers are doubles, and
  Go prints an integral double without a fraction (``3``, not ``3.0``);
- `pb_value_to_text` — ``metadata.PbValueToText`` (backend/src/v2/metadata/converter.go);
- `placeholder_text` — the launcher's ``getPlaceholders`` switch
  (backend/src/v2/component/launcher_v2.go), which refuses ``null``;
- `driver_placeholder_text` — the driver's ``pbValueToString``
  (backend/src/v2/driver/util.go), which prints integral numbers as integers and other
  numbers with ``%g``;
- `text_to_pb_value` — ``metadata.TextToPbValue``: output parameter files to values;
- `mlmd_round_trip` — artifact metadata after ``toMLMDArtifact`` + ``toRuntimeArtifact``
  (converter.go): bools become 1/0, lists and structs come back wrapped in
  ``{"list": ...}`` / ``{"struct": ...}``, null is refused.
"""

from __future__ import annotations

import json
import math
from typing import Any

PARAMETER_TYPES = ("STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN", "LIST", "STRUCT")


class BackendError(Exception):
    """A step the real driver or launcher would fail with; the message follows Go's."""


def _go_number(v: float) -> int | float:
    if isinstance(v, bool):
        raise TypeError("bool is not a number")
    f = float(v)
    if math.isfinite(f) and f.is_integer() and abs(f) < 2**63:
        return int(f)
    return f


def normalize(value: Any) -> Any:
    """A JSON value as protobuf.Value holds it (every number a double)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {str(k): normalize(v) for k, v in value.items()}
    raise BackendError(f"value of type {type(value).__name__} is not a protobuf.Value")


def _for_json(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return _go_number(value)
    if isinstance(value, list):
        return [_for_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _for_json(v) for k, v in value.items()}
    return value


def to_protojson(obj: Any) -> str:
    """Compact JSON as Go's protojson writes it (integral doubles without ``.0``)."""
    return json.dumps(_for_json(obj), separators=(",", ":"), ensure_ascii=False)


def _go_float_f(v: float) -> str:
    # strconv.FormatFloat(v, 'f', -1, 64): shortest repr, never exponent notation.
    text = repr(float(v))
    if "e" in text or "E" in text:
        text = format(float(v), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
    elif text.endswith(".0"):
        text = text[:-2]
    return text


def _go_json(value: Any) -> str:
    # encoding/json.Marshal of a structpb.ListValue/Struct (protojson inside, no spaces).
    return to_protojson(value)


def pb_value_to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return _go_float_f(value)
    return _go_json(value)


def placeholder_text(name: str, value: Any) -> str:
    if value is None:
        raise BackendError(f"failed to get placeholders: unknown PipelineSpec Value type for parameter {name!r}")
    return pb_value_to_text(value)


def driver_placeholder_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        f = float(value)
        if f.is_integer():
            return str(int(f))
        return _go_g(f)
    return _go_json(value)


def _go_g(f: float) -> str:
    # fmt.Sprintf("%g", f): shortest representation, exponent when exp < -4 || exp >= 21.
    text = repr(f)
    if "e" in text:
        mant, _, exp = text.partition("e")
        sign = "-" if exp.startswith("-") else "+"
        digits = exp.lstrip("+-").rjust(2, "0")
        return f"{mant}e{sign}{digits}"
    return text


def text_to_pb_value(text: str, parameter_type: str) -> Any:
    def fail(why: str) -> BackendError:
        return BackendError(f"TextToPbValue(text={text!r}, type={parameter_type!r}) failed: {why}")

    if parameter_type == "STRING":
        return text
    if parameter_type == "NUMBER_INTEGER":
        try:
            return float(int(text.strip(), 10))
        except ValueError as exc:
            raise fail(str(exc)) from None
    if parameter_type == "NUMBER_DOUBLE":
        try:
            return float(text.strip())
        except ValueError as exc:
            raise fail(str(exc)) from None
    if parameter_type == "BOOLEAN":
        # strconv.ParseBool
        t = text.strip()
        if t in ("1", "t", "T", "TRUE", "true", "True"):
            return True
        if t in ("0", "f", "F", "FALSE", "false", "False"):
            return False
        raise fail("invalid syntax")
    if parameter_type in ("LIST", "STRUCT"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise fail(str(exc)) from None
        if not isinstance(value, list if parameter_type == "LIST" else dict):
            raise fail("unexpected type")
        return normalize(value)
    raise fail("unknown type")


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    return "struct"


def mlmd_round_trip(metadata: dict[str, Any]) -> dict[str, Any]:
    """Artifact metadata as a downstream driver reads it back from MLMD."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if key == "_kfp_workspace":
            continue
        if value is None:
            raise BackendError(
                "failed to convert RuntimeArtifact to MLMD artifact: unknown/unsupported value type "
                f"*structpb.Value_NullValue (metadata key {key!r})")
        if isinstance(value, bool):
            out[key] = 1.0 if value else 0.0
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float):
            out[key] = float(value)
        elif isinstance(value, list):
            out[key] = {"list": normalize(value)}
        else:
            out[key] = {"struct": normalize(value)}
    return out
