"""`mlseal admit MANIFEST --policy FILE`: the admission decision, offline, for CI and deploy steps.

MANIFEST is a YAML or JSON file (``-`` for stdin) with one or more documents (``---``
separated; ``kind: List`` items are expanded). Exit 0 when every model is admitted,
1 when any is denied, 2 when the policy, ledger or file cannot be used.

With ``--checkpoint FILE`` (or ``$MLSEAL_CHECKPOINT``: `mlseal.ledger.rollback`) the
ledger must extend that signed checkpoint: a rolled-back or forked ledger denies every
model, ``ledger_rolled_back`` / ``ledger_forked``.
"""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING, Any

from mlseal._cli._options import add_checkpoint, add_json, add_ledger, add_policy, emit_json, say

if TYPE_CHECKING:
    from mlseal.admission.decision import Decision
    from mlseal.admission.policy import Policy


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "admit",
        help="offline admission decision for a Kubernetes manifest",
        description="Decide whether the models a manifest deploys (KServe InferenceService, annotated "
        "Deployment/StatefulSet) satisfy the policy: trusted ledger record, unbroken lineage, required "
        "stages, evaluation gates, matching URI.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="YAML/JSON manifest file, multi-document allowed; - for stdin")
    add_policy(p)
    p.add_argument("--namespace", metavar="NS", help="namespace whose rules apply (default: each manifest's own)")
    add_ledger(p)
    add_checkpoint(p)
    add_json(p)
    p.set_defaults(func=run)


def _documents(text: str, source: str) -> list[Any]:
    import yaml

    from mlseal import _yaml as strict_yaml
    from mlseal.errors import ConfigurationError

    try:
        docs = [d for d in strict_yaml.load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"manifest {source} is not valid YAML/JSON: {exc}") from None
    out: list[Any] = []
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "List" and isinstance(d.get("items"), list):
            out.extend(d["items"])
        else:
            out.append(d)
    if not out:
        raise ConfigurationError(f"manifest {source} holds no documents")
    return out


def _describe(doc: Any) -> str:
    if not isinstance(doc, dict):
        return f"<{type(doc).__name__}>"
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    ns, name = meta.get("namespace"), meta.get("name")
    return f"{doc.get('kind', '?')} {ns + '/' if isinstance(ns, str) else ''}{name if isinstance(name, str) else '?'}"


def _see_why(decision: Decision, manifest: dict[str, Any], policy: Policy, args: argparse.Namespace) -> list[str]:
    """The commands that show why `decision` denied (`mlseal.admission.decision.see_why`)."""
    from mlseal.admission.decision import see_why
    from mlseal.admission.manifest import ManifestError
    from mlseal.admission.workload import check_workload

    if decision.allowed:
        return []
    try:
        _, ref = check_workload(manifest, policy.rules_for(args.namespace or _namespace(manifest)))
    except ManifestError:
        ref = None
    return see_why(decision.codes, sha256=ref.sha256 if ref else None, trust=policy.trust.source,
                   policy=args.policy, manifest=shlex.quote(args.manifest))


def _namespace(manifest: dict[str, Any]) -> str | None:
    meta = manifest.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    return ns if isinstance(ns, str) else None


def run(args: argparse.Namespace) -> int:
    import contextlib
    import sys
    from pathlib import Path

    from mlseal.admission import decide, load_policy
    from mlseal.admission.decision import denial_line
    from mlseal.errors import ConfigurationError
    from mlseal.ledger import open_ledger
    from mlseal.ledger.rollback import load_checkpoint
    from mlseal.ledger.verified import VerifiedView, ViewFailed

    if args.manifest == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, source = Path(args.manifest).read_text(), args.manifest
        except OSError as exc:
            raise ConfigurationError(f"cannot read manifest {args.manifest}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"manifest {args.manifest} is not UTF-8 text: {exc.reason}") from None
    docs = _documents(text, source)
    policy = load_policy(args.policy)
    held = load_checkpoint(policy.trust, path=args.checkpoint)
    results = []
    with open_ledger(args.ledger or policy.resolve_ledger_url(), create=False) as led:
        # every entry read and verified once; decisions read only this view, never the
        # ledger's derived index
        view = VerifiedView(led, policy.trust)
        if held is not None:
            with contextlib.suppress(ViewFailed):  # the failed view denies every model, naming why
                view.require(held)
        for doc in docs:
            manifest = doc if isinstance(doc, dict) else {"_": doc}
            decision = decide(manifest, policy, ledger=view, namespace=args.namespace)
            results.append((_describe(doc), decision, _see_why(decision, manifest, policy, args)))
    allowed = all(d.allowed for _, d, _ in results)
    if args.json:
        single = len(results) == 1
        out: dict[str, Any] = {
            "allowed": allowed,
            "reasons": [r if single else f"{what}: {r}" for what, d, _ in results for r in d.reasons],
        }
        codes = list(dict.fromkeys(str(c) for _, d, _ in results if not d.allowed for c in d.codes))
        if codes:  # why, as machine codes (ledger_rolled_back, gate_failed, ...)
            out["codes"] = codes
        see = list(dict.fromkeys(c for _, _, cmds in results for c in cmds))
        if see:  # the commands that show why
            out["see_why"] = see
        warnings = [w if single else f"{what}: {w}" for what, d, _ in results for w in d.warnings]
        if warnings:
            out["warnings"] = warnings
        if not single:
            out["documents"] = [{"object": what, **d.to_json()} for what, d, _ in results]
        emit_json(out)
    for what, d, cmds in results:
        if d.allowed:
            say(f"{what}: allowed")
        else:  # one line: what failed and the command that shows why; then each reason
            say(f"{what}: DENIED: {denial_line(d, cmds)}")
        for r in d.reasons if len(d.reasons) > 1 else ():
            say(f"  - {r}")
        for w in d.warnings:
            say(f"  warning: {w}")
    return 0 if allowed else 1
