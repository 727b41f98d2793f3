"""The admission engine: manifest + policy + ledger view in, decision out.

`decide` does no I/O of its own beyond the ledger view it is given (the webhook passes
an open ledger; with none, it opens the policy's ledger for the one call). It checks,
for the model a manifest deploys:

1. the workload runs what the policy allows and loads its model through the verifying
   loader (`mlseal.admission.workload`: images, loader, location overrides, init and
   ephemeral containers, runtimes, transformers, explainers), and names that model
   (digest, URI) in a form mlseal understands;
2. a ledger record lists that digest as an output, and its entry verifies against a
   signer in the trust file (an untrusted key denies; a trusted key whose signature no
   longer verifies, or a record whose successor's ``prev`` does not hash-link to it, is
   tampering and denies);
3. the manifest's URI is the URI recorded for that output;
4. the lineage, followed input by input through trusted records, reaches an ingest
   record without a break;
5. every stage the policy requires is present (by stage kind or component name) among
   the lineage and the evaluate record;
6. the newest trusted evaluate record that consumed the model's digest meets every gate.

    >>> from mlseal.admission import decide, load_policy       # doctest: +SKIP
    >>> decide(manifest, load_policy("policy.yaml")).to_json()  # doctest: +SKIP
    {'allowed': True, 'reasons': []}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlseal._uris import redact_uri
from mlseal.admission.decision import Decision, Finding, Reason
from mlseal.admission.manifest import ModelRef
from mlseal.admission.policy import Mode, Policy, Rules
from mlseal.admission.workload import check_workload
from mlseal.errors import InfrastructureError, VerificationError
from mlseal.ledger.dsn import redact_text
from mlseal.ledger.entry import UntrustedSigner
from mlseal.ledger.protocols import LedgerReader
from mlseal.ledger.record import Record, Status
from mlseal.ledger.recordcache import VerifiedRecords as VerifiedRecords  # re-exported: webhook, server
from mlseal.ledger.trusted import TooManyRecords, TrustedReader
from mlseal.ledger.verified import ViewFailed
from mlseal.signing.trust import TrustRoot

__all__ = ["MAX_LINEAGE", "apply_mode", "check_model", "decide", "decide_model"]

#: lineage walks stop here: a model with a larger ancestry is denied rather than
#: letting one request tie up the webhook
MAX_LINEAGE = 10_000


def _short(h: str) -> str:
    return h[:16] + "…"


def _label(r: Record) -> str:
    name = r.component.name
    return f"record {r.seq} ({r.stage}{' ' + name if name and name != r.stage else ''})"


#: the record loader admission shares with stage input checks and ``trace``
_Reader = TrustedReader
_Untrusted = UntrustedSigner


def _tamper(msg: str) -> Finding:
    return Finding(Reason.TAMPERED, f"ledger tampering: {msg}; restore the ledger from a verified copy "
                                    "(`mlseal ledger verify`) before deploying this model")


def _load(reader: _Reader, seq: int) -> tuple[Record | None, Finding | None]:
    try:
        return reader.record(seq), None
    except _Untrusted as exc:
        return None, Finding(Reason.UNTRUSTED_SIGNER, str(exc))
    except VerificationError as exc:
        return None, _tamper(str(exc))


def _trusted_producer(reader: _Reader, view: LedgerReader, sha: str, what: str, *,
                      before: int | None = None) -> tuple[Record | None, list[Finding]]:
    """The record that produced `sha` by the TrustedReader rule (the newest trusted, hash-linked
    OK record that outputs it), or the findings why none."""
    del view  # the reader holds the view
    try:
        answer = reader.producer_of(sha, before=before)
    except TooManyRecords as exc:
        return None, [Finding(Reason.BROKEN_LINEAGE, f"{what}: {exc}")]
    if answer.record is not None:
        return answer.record, []
    problems = [Finding(Reason.UNTRUSTED_SIGNER, str(p)) if p.untrusted else _tamper(str(p))
                for p in answer.problems]
    if problems and all(p.code is Reason.UNTRUSTED_SIGNER for p in problems):
        problems = [Finding(Reason.UNTRUSTED_SIGNER,
                            f"{what} sha256 {_short(sha)} is recorded only by untrusted signers ({p.message}); "
                            "add the signer's public key to the trust file if it should be trusted, "
                            "or rebuild it through a trusted pipeline")
                    for p in problems]
    return None, problems


def _check_uri(ref: ModelRef, producer: Record, rules: Rules) -> Finding | None:
    """The manifest's URI is where the model was recorded, or where the policy's
    ``serving_uris`` say a server fetches that same place."""
    if ref.uri is None:
        return None
    recorded = [o.uri for o in producer.outputs if o.sha256 == ref.sha256]
    want = ref.uri.rstrip("/")
    if any(u.rstrip("/") == want or rules.serving_uri(u).rstrip("/") == want for u in recorded):
        return None
    return Finding(Reason.URI_MISMATCH, (
        f"{ref.where} {redact_uri(ref.uri)!r} is not where the ledger recorded this model "
        f"({_label(producer)} wrote it to {', '.join(repr(redact_uri(u)) for u in recorded)}); "
        "point the manifest at the recorded URI, or record the copy with `mlseal record`"
    ))


def _walk_lineage(reader: _Reader, view: LedgerReader, producer: Record) -> tuple[list[Record], list[Finding]]:
    """The producer and every ancestor, following each input to its producing record."""
    seen: dict[int, Record] = {producer.seq: producer}
    todo = [producer]
    problems: list[Finding] = []
    while todo:
        rec = todo.pop()
        if rec.stage == "ingest":
            continue
        if not rec.inputs:
            problems.append(Finding(Reason.BROKEN_LINEAGE, (
                f"lineage is broken: {_label(rec)} has no inputs and is not an ingest record, so the "
                "model cannot be traced to its raw data; record the steps that produced its data"
            )))
            continue
        for inp in rec.inputs:
            parent: Record | None = None
            if inp.producer_seq is not None:
                if inp.producer_seq >= rec.seq or inp.producer_seq >= reader.size():
                    problems.append(Finding(Reason.BROKEN_LINEAGE, (
                        f"lineage is broken: input {inp.name!r} of {_label(rec)} names producer record "
                        f"{inp.producer_seq}, which does not precede it in the ledger"
                    )))
                    continue
                parent, problem = _load(reader, inp.producer_seq)
                if problem is not None:
                    problems.append(problem)
                    continue
                assert parent is not None
                if not any(o.sha256 == inp.sha256 for o in parent.outputs):
                    problems.append(Finding(Reason.BROKEN_LINEAGE, (
                        f"lineage is broken: input {inp.name!r} of {_label(rec)} (sha256 {_short(inp.sha256)}) "
                        f"is not an output of its named producer {_label(parent)}"
                    )))
                    continue
            else:
                parent, found = _trusted_producer(reader, view, inp.sha256, f"input {inp.name!r}",
                                                  before=rec.seq)
                if parent is None:
                    problems.extend(found or [Finding(Reason.BROKEN_LINEAGE, (
                        f"lineage is broken: input {inp.name!r} (sha256 {_short(inp.sha256)}) of {_label(rec)} "
                        "has no record in the ledger that produced it; record the step that made it, back to "
                        "an ingest record"
                    ))])
                    continue
                if parent.seq >= rec.seq:
                    problems.append(Finding(Reason.BROKEN_LINEAGE, (
                        f"lineage is broken: input {inp.name!r} of {_label(rec)} was first recorded later, by "
                        f"{_label(parent)}"
                    )))
                    continue
            if parent.seq not in seen:
                if len(seen) >= MAX_LINEAGE:
                    problems.append(Finding(Reason.BROKEN_LINEAGE, (
                        f"lineage has more than {MAX_LINEAGE} records; admission stops there and denies"
                    )))
                    return list(seen.values()), problems
                seen[parent.seq] = parent
                todo.append(parent)
    return sorted(seen.values(), key=lambda r: r.seq), problems


def _evaluation(reader: _Reader, view: LedgerReader, sha: str) -> tuple[Record | None, list[Finding]]:
    """The newest trusted, hash-linked evaluate record that consumed `sha`, whatever its status
    (the TrustedReader rule: a newer evaluation supersedes, a failed one included)."""
    del view  # the reader holds the view
    try:
        answer = reader.latest_evaluation(sha)
    except TooManyRecords as exc:
        return None, [Finding(Reason.NO_EVALUATION, f"model evaluations: {exc}")]
    # an untrusted evaluation is ignored, as if absent; a tampered one denies
    problems = [_tamper(str(p)) for p in answer.problems if not p.untrusted]
    return answer.record, problems


def _check_gates(rules: Rules, evaluation: Record) -> list[Finding]:
    out = []
    for gate in rules.gates:
        value = evaluation.metrics.get(gate.metric)
        if value is None:
            have = ", ".join(sorted(evaluation.metrics)) or "none"
            out.append(Finding(Reason.GATE_FAILED, (
                f"gate {gate.describe()} failed: {_label(evaluation)} did not measure {gate.metric!r} "
                f"(it measured: {have}); evaluate the model on {gate.metric!r}"
            )))
        elif not gate.met_by(float(value)):
            out.append(Finding(Reason.GATE_FAILED, (
                f"gate {gate.describe()} failed: {_label(evaluation)} measured {gate.metric} = {value:g}; "
                "improve and re-evaluate the model, or change the gate in the policy"
            )))
    return out


def check_model(ref: ModelRef, rules: Rules, view: LedgerReader, trust: TrustRoot, *,
                verified: VerifiedRecords | None = None) -> list[Finding]:
    """Every failed check for `ref` (steps 2-6 of the module docstring); empty = admit.

    `verified` lets records verified by earlier calls be reused (see VerifiedRecords).
    """
    reader = _Reader(view, trust, verified)
    # 2. a trusted record produced the digest
    producer, problems = _trusted_producer(reader, view, ref.sha256, "model")
    if producer is None:
        return problems or [Finding(Reason.UNKNOWN_DIGEST, (
            f"model sha256 {_short(ref.sha256)} is not in the ledger: no record lists it as an output; "
            "deploy a model produced by a sealed pipeline run, or correct the mlseal.dev/model-sha256 "
            "annotation (`mlseal digest MODEL`)"
        ))]
    findings: list[Finding] = []
    # 2b. by a stage that makes models: an evaluate (or deploy, serve) key listing a new digest
    # as its output cannot mint a model, which its own key could then also "evaluate"
    if producer.stage not in rules.model_stages:
        findings.append(Finding(Reason.BROKEN_LINEAGE, (
            f"model sha256 {_short(ref.sha256)} was produced by {_label(producer)}, a {producer.stage!r} record; "
            f"a served model must come from a {' or '.join(repr(s) for s in rules.model_stages)} record "
            "(policy model_stages); deploy the model a training run produced"
        )))
    # 3. the manifest deploys the bytes that were recorded, from where they were recorded
    uri_problem = _check_uri(ref, producer, rules)
    if uri_problem is not None:
        findings.append(uri_problem)
    # 4. lineage back to ingest
    lineage, lineage_problems = _walk_lineage(reader, view, producer)
    findings.extend(lineage_problems)
    # 5. required stages, 6. gates
    evaluation, eval_problems = _evaluation(reader, view, ref.sha256)
    findings.extend(eval_problems)
    present: set[str] = set()
    for rec in [*lineage, *([evaluation] if evaluation else [])]:
        present.add(rec.stage)
        if rec.component.name:
            # "kind/name" names a step of that stage kind; a bare name, a processing step
            # (anonymize, encrypt, validate): never a name another stage's key wrote
            present.add(f"{rec.stage}/{rec.component.name}")
            if rec.stage == "process":
                present.add(rec.component.name)
    for stage in rules.require_stages:
        if stage not in present:
            findings.append(Finding(Reason.MISSING_STAGE, (
                f"required stage {stage!r} is missing from the model's lineage (found: "
                f"{', '.join(sorted(present))}); run the model through a pipeline that includes {stage!r}, "
                "or drop it from require_stages"
            )))
    if rules.gates:
        if evaluation is None:
            findings.append(Finding(Reason.NO_EVALUATION, (
                f"no trusted evaluate record consumed model sha256 {_short(ref.sha256)}, so the gates "
                f"({'; '.join(g.describe() for g in rules.gates)}) cannot be checked; evaluate the model "
                "in a sealed pipeline step"
            )))
        else:
            findings.extend(_check_gates(rules, evaluation))
    if evaluation is not None and evaluation.status is not Status.OK:
        findings.append(Finding(Reason.GATE_FAILED, (
            f"the newest trusted evaluation of model sha256 {_short(ref.sha256)}, {_label(evaluation)}, is "
            f"marked {evaluation.status.value}; it supersedes any older pass. Fix the model and re-evaluate it"
        )))
    if evaluation is not None:
        findings.extend(_check_evaluation(rules, reader, view, trust, evaluation, lineage, ref.sha256))
    elif rules.evaluation.signers is not None or rules.evaluation.held_out:
        findings.append(Finding(Reason.NO_EVALUATION, (
            f"no trusted evaluate record consumed model sha256 {_short(ref.sha256)}, and the policy requires one "
            "(evaluation rules); evaluate the model in a sealed pipeline step"
        )))
    return findings


def _check_evaluation(rules: Rules, reader: _Reader, view: LedgerReader, trust: TrustRoot, evaluation: Record,
                      lineage: list[Record], model_sha: str) -> list[Finding]:
    """The policy's evaluation rules: the evaluator's identity, and the held-out data."""
    want = rules.evaluation
    out: list[Finding] = []
    if want.signers is not None:
        # the name the trust file gives the key, never the name the record claims
        name = trust.signer_name(evaluation.signer.key_id)
        if name not in want.signers:
            out.append(Finding(Reason.UNTRUSTED_SIGNER, (
                f"{_label(evaluation)} was signed by {name or evaluation.signer.key_id[:16]}, but the policy "
                f"accepts evaluations only from {sorted(want.signers)}; evaluate the model with the evaluator's "
                "own identity"
            )))
    if not want.held_out:
        return out
    data = [i for i in evaluation.inputs if i.sha256 != model_sha]
    train = next((r for r in reversed(lineage) if r.stage == "train"), None)
    if not data:
        return [*out, Finding(Reason.BROKEN_LINEAGE, (
            f"{_label(evaluation)} names no evaluation dataset (no input besides the model); the policy requires "
            "the held-out data it measured"
        ))]
    trained_on = {i.sha256 for i in train.inputs if i.name == "data"} if train else set()
    held_out = [i for i in data if i.sha256 in trained_on]
    if train is None or not held_out:
        return [*out, Finding(Reason.BROKEN_LINEAGE, (
            f"{_label(evaluation)} measured {', '.join(_short(i.sha256) for i in data)}, which is not the dataset "
            "the model's train record split, so its rows are not known to be held out; evaluate on the "
            "training dataset's held-out split"
        ))]
    split = ("split_seed", "test_fraction")
    if any(evaluation.params.get(k) != train.params.get(k) for k in split):
        shown = {k: (evaluation.params.get(k), train.params.get(k)) for k in split}
        out.append(Finding(Reason.BROKEN_LINEAGE, (
            f"{_label(evaluation)} split the data differently from {_label(train)} "
            f"(evaluate vs train: {shown}), so it may have measured training rows; use the same split"
        )))
    sha = held_out[0].sha256
    validated = False
    for seq in sorted(set(reader.view.consumers_of(sha)), reverse=True):
        rec, _problem = _load(reader, seq)
        if (rec is not None and rec.stage == "process" and rec.component.name == "validate"
                and rec.status is Status.OK and rec.seq < train.seq):
            validated = True
            break
    if not validated:
        out.append(Finding(Reason.MISSING_STAGE, (
            f"no trusted validate record checked the evaluation dataset sha256 {_short(sha)} before training; "
            "validate the data in the pipeline"
        )))
    return out


def apply_mode(findings: list[Finding], rules: Rules) -> Decision:
    """Deny on findings in enforce mode; allow with them as warnings in warn mode."""
    if not findings:
        return Decision.allow()
    if rules.mode is Mode.WARN:
        return Decision.allow([f.message for f in findings], tuple(f.code for f in findings))
    return Decision.deny(*findings)


def decide(
    manifest: Mapping[str, Any],
    policy: Policy,
    *,
    ledger: LedgerReader | None = None,
    trust: TrustRoot | None = None,
    namespace: str | None = None,
) -> Decision:
    """Admit or deny the model `manifest` deploys (see the module docstring).

    `namespace` selects the per-namespace rules; default: the manifest's own
    ``metadata.namespace``. An unreachable ledger denies with a reason (fail closed).
    """
    meta = manifest.get("metadata") if isinstance(manifest, Mapping) else None
    if namespace is None and isinstance(meta, Mapping) and isinstance(meta.get("namespace"), str):
        namespace = meta["namespace"]
    rules = policy.rules_for(namespace)
    # 1. what the workload runs, and which model (mlseal.admission.workload)
    findings, ref = check_workload(manifest, rules)
    if ref is None:
        return apply_mode(findings, rules)
    model = decide_model(ref, policy, ledger=ledger, trust=trust, rules=rules)
    if not findings:
        return model
    if Reason.LEDGER_UNAVAILABLE in model.codes:
        # fail closed even in warn mode, as decide_model does
        return Decision.deny(*findings, *(Finding(c, m) for c, m in zip(model.codes, model.reasons, strict=True)))
    merged = apply_mode(findings, rules)
    return Decision(merged.allowed and model.allowed, [*merged.reasons, *model.reasons],
                    [*merged.warnings, *model.warnings], (*merged.codes, *model.codes))


def decide_model(ref: ModelRef, policy: Policy, *, ledger: LedgerReader | None = None,
                 trust: TrustRoot | None = None, rules: Rules | None = None) -> Decision:
    """Steps 2-6 for an already extracted model reference."""
    rules = rules or policy.rules_for(ref.namespace)
    trust = trust or policy.trust
    try:
        if ledger is None:
            from mlseal.ledger import open_ledger

            with open_ledger(policy.resolve_ledger_url(), create=False) as led:
                findings = check_model(ref, rules, led, trust)
        else:
            findings = check_model(ref, rules, ledger, trust)
    except ViewFailed as exc:
        # The ledger was rolled back, forked or tampered with: nothing it says is believed.
        return Decision.deny(Finding(Reason(exc.code), (
            f"{exc}; no model is admitted from this ledger until it is restored from a verified copy "
            "(`mlseal ledger verify`)")))
    except InfrastructureError as exc:
        # Fail closed even in warn mode: nothing was verified.
        return Decision.deny(Finding(Reason.LEDGER_UNAVAILABLE, (
            f"the ledger could not be read ({redact_text(str(exc))}); the model cannot be verified, so it is denied "
            "until the ledger is reachable"
        )))
    return apply_mode(findings, rules)
