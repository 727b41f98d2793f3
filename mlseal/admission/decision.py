"""The verdict of an admission check: allowed or not, and why, in words a person can act on.

    >>> Decision(allowed=False, reasons=["model sha256 ab… is not in the ledger"]).to_json()
    {'allowed': False, 'reasons': ['model sha256 ab… is not in the ledger']}
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Decision", "Finding", "Reason", "denial_line", "see_why"]


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


#: reasons the model's ledger records explain: `mlseal ledger trace` shows the producer,
#: the lineage, the evaluation and every signature problem behind them
_TRACED = frozenset({
    Reason.UNKNOWN_DIGEST, Reason.UNTRUSTED_SIGNER, Reason.TAMPERED, Reason.BROKEN_LINEAGE,
    Reason.MISSING_STAGE, Reason.NO_EVALUATION, Reason.GATE_FAILED, Reason.URI_MISMATCH,
})
#: reasons about the ledger as a whole: `mlseal ledger verify` names what is wrong with it
_LEDGER = frozenset({Reason.LEDGER_UNAVAILABLE, Reason.LEDGER_FORKED, Reason.LEDGER_ROLLED_BACK})


def see_why(codes: Iterable[Reason], *, sha256: str | None, trust: str, policy: str, manifest: str) -> list[str]:
    """The commands that show why a decision with these reason codes denied, most specific first.

    A model's records (`_TRACED`): ``mlseal ledger trace sha256:<digest> --trust <trust>``;
    the ledger as a whole: ``mlseal ledger verify --trust <trust>``; anything about the
    workload itself: ``mlseal admit <manifest> --policy <policy>``. No ledger URL is ever
    shown (it may carry credentials): the commands read ``$MLSEAL_LEDGER``.

    >>> see_why([Reason.GATE_FAILED], sha256="ab" * 32, trust="trust.yaml", policy="p.yaml", manifest="m.yaml")
    ['mlseal ledger trace sha256:abababababababababababababababababababababababababababababababab --trust trust.yaml']
    """
    codes = set(codes)
    out: list[str] = []
    if codes & _TRACED and sha256 is not None:
        out.append(f"mlseal ledger trace sha256:{sha256} --trust {shlex.quote(trust)}")
    if codes & _LEDGER:
        out.append(f"mlseal ledger verify --trust {shlex.quote(trust)}")
    if codes - _TRACED - _LEDGER or (codes & _TRACED and sha256 is None):
        out.append(f"mlseal admit {manifest} --policy {shlex.quote(policy)}")
    return out


def denial_line(decision: Decision, commands: list[str]) -> str:
    """One line: what failed (every reason) and the commands that show why.

    >>> denial_line(Decision.deny(Finding(Reason.NO_MODEL, "names no model")), ["mlseal admit m.yaml --policy p.yaml"])
    'names no model (see why: mlseal admit m.yaml --policy p.yaml)'
    """
    text = "; ".join(r.replace("\n", " ") for r in decision.reasons)
    return f"{text} (see why: {' ; '.join(commands)})" if commands else text
