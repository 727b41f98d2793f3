"""The verdict of an admission check: allowed or not, and why, in words a person can act on.

    >>> Decision(allowed=False, reasons=["model sha256 ab… is not in the ledger"]).to_json()
    {'allowed': False, 'reasons': ['model sha256 ab… is not in the ledger']}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Decision", "Finding", "Reason"]


class Reason(StrEnum):
    """Machine codes for why a model was denied (a bounded set: metric labels use it)."""

    MALFORMED = "malformed"
    NO_MODEL = "no_model"
    UNKNOWN_DIGEST = "unknown_digest"
    UNTRUSTED_SIGNER = "untrusted_signer"
    TAMPERED = "tampered"
    BROKEN_LINEAGE = "broken_lineage"
    MISSING_STAGE = "missing_stage"
    NO_EVALUATION = "no_evaluation"
    GATE_FAILED = "gate_failed"
    URI_MISMATCH = "uri_mismatch"
    NO_LOADER = "no_loader"
    BAD_LOADER = "bad_loader"
    IMAGE_UNPINNED = "image_unpinned"
    IMAGE_NOT_ALLOWED = "image_not_allowed"
    EXTRA_CONTAINER = "extra_container"
    MODEL_OVERRIDE = "model_override"
    MODEL_VOLUME = "model_volume"
    RUNTIME_NOT_ALLOWED = "runtime_not_allowed"
    COMPONENT_NOT_ALLOWED = "component_not_allowed"
    POD_SECURITY = "pod_security"
    LEDGER_UNAVAILABLE = "ledger_unavailable"
    LEDGER_FORKED = "ledger_forked"
    LEDGER_ROLLED_BACK = "ledger_rolled_back"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class Finding:
    """One failed check: its code and the sentence that says what failed and the fix."""

    code: Reason
    message: str


@dataclass(frozen=True)
class Decision:
    """Allowed or denied. In warn mode a failing model is allowed and `warnings` says why."""

    allowed: bool
    reasons: list[str]
    warnings: list[str] = field(default_factory=list)
    #: reason codes of the findings behind `reasons` (or `warnings` in warn mode)
    codes: tuple[Reason, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allowed": self.allowed, "reasons": list(self.reasons)}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def allow(cls, warnings: list[str] | None = None, codes: tuple[Reason, ...] = ()) -> Decision:
        return cls(True, [], list(warnings or []), codes)

    @classmethod
    def deny(cls, *findings: Finding) -> Decision:
        return cls(False, [f.message for f in findings], [], tuple(f.code for f in findings))
