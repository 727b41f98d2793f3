"""Deployment admission: only models with an intact, trusted, gated lineage go live.

The engine is pure (manifest + policy + ledger view in, decision out); `mlseal admit`
runs it offline for CI and the pipeline's deploy stage, and `mlseal webhook serve`
runs it as a Kubernetes validating admission webhook.

    >>> from mlseal.admission import Decision
    >>> Decision(allowed=True, reasons=[]).to_json()
    {'allowed': True, 'reasons': []}

Typical use::

    policy = load_policy("policy.yaml")      # trust, ledger, stages, gates, mode
    decision = decide(manifest, policy)      # opens the policy's ledger for the call
    if not decision.allowed:
        print("\\n".join(decision.reasons))
"""

from __future__ import annotations

from mlseal.admission.decision import Decision, Finding, Reason
from mlseal.admission.engine import check_model, decide, decide_model
from mlseal.admission.manifest import ManifestError, ModelRef, model_ref
from mlseal.admission.policy import Gate, Mode, Policy, Rules, load_policy, parse_policy

__all__ = [
    "Decision",
    "Finding",
    "Gate",
    "ManifestError",
    "Mode",
    "ModelRef",
    "Policy",
    "Reason",
    "Rules",
    "check_model",
    "decide",
    "decide_model",
    "load_policy",
    "model_ref",
    "parse_policy",
]
