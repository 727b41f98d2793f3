"""`mlseal demo`: the reference pipeline run locally, end to end, then verified and reported.

The demo makes a dataset from data shipped with scikit-learn plus synthetic identity
columns, runs `mlseal.pipelines.reference` with KFP's local runner
(`SubprocessRunner(use_venv=False)`: each stage is a real KFP task in its own process),
verifies the ledger including every artifact's bytes, and writes the workdir laid out in
docs/design.md#the-demo-workdir:

    DIR/ledger.db        the ledger (SQLite)
    DIR/artifacts/       every artifact and its .sig bundle (KFP's pipeline root)
    DIR/keys/            public keys only, one per stage kind (each stage signs with its own)
    DIR/secrets/         the dev secret store (0600 files), unless Vault is configured
    DIR/trust.yaml       who may sign which stage's records and artifacts, and checkpoints
    DIR/checkpoint       the last checkpoint the demo's witness signed (`mlseal ledger witness --state`)
    DIR/mlseal.env       `source` it to seal your own steps into this ledger (kfp.local, mlseal record)
    DIR/policy.yaml      the admission policy the deploy stage applies; it admits the model
    DIR/pipeline.yaml    the compiled pipeline (KFP IR)
    DIR/report.html      the lineage report
    DIR/exports/         the model's SLSA provenance, CycloneDX ML-BOM, OpenLineage events and
                         audit pack (`mlseal export`, `mlseal verify-pack`), linked from the report
    DIR/logs/            the KFP task logs of each run

Rollback and fork protection is on: the demo makes a checkpoint key (Transit key
``mlseal-checkpoint``, listed in the trust file's ``checkpoint_keys``), runs the witness
before and after the pipeline (every stage requires the ledger to extend the newest
signed checkpoint, and passes the one it accepted to the next task), and verifies the
ledger against the checkpoint it signed.

Re-running it in the same workdir appends a new run to the same ledger.

    >>> from mlseal.demo import run_demo
    >>> result = run_demo("mlseal-demo")           # doctest: +SKIP
    >>> result.ok, [r.stage for r in result.chain]  # doctest: +SKIP
    (True, ['ingest', 'process', 'process', 'process', 'train', 'evaluate', 'deploy'])
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlseal.errors import ConfigurationError, Error
from mlseal.ledger.record import Record, StageKind, Status
from mlseal.report import Verification, render_report

__all__ = [
    "CHECKPOINT_KEY",
    "EXPORTS",
    "STAGES",
    "STAGE_KINDS",
    "DemoResult",
    "Progress",
    "Workdir",
    "run_demo",
    "verify_workdir",
    "witness_workdir",
    "write_exports",
]

#: the stages of the reference pipeline, in order (component names)
STAGES = ("ingest", "anonymize", "encrypt", "validate", "train", "evaluate", "deploy")
#: the stage kinds, each with its own signing key and signer name in the trust file
STAGE_KINDS = tuple(k.value for k in StageKind)
#: the Transit key the demo's witness signs checkpoints with
CHECKPOINT_KEY = "mlseal-checkpoint"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Workdir:
    root: Path

    @property
    def ledger_url(self) -> str:
        return "sqlite:///" + str(self.ledger_db)

    @property
    def ledger_db(self) -> Path:
        return self.root / "ledger.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def trust(self) -> Path:
        return self.root / "trust.yaml"

    @property
    def checkpoint(self) -> Path:
        """The witness state: the last checkpoint the demo signed and accepted."""
        return self.root / "checkpoint"

    @property
    def env_file(self) -> Path:
        return self.root / "mlseal.env"

    @property
    def policy(self) -> Path:
        return self.root / "policy.yaml"

    @property
    def pipeline(self) -> Path:
        return self.root / "pipeline.yaml"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def source(self) -> Path:
        return self.artifacts / "source" / "breast-cancer-with-identities.csv"

    @property
    def reference(self) -> Path:
        return self.artifacts / "source" / "validation-reference.json"


@dataclass(frozen=True)
class DemoResult:
    ok: bool
    workdir: Path
    secrets: str  # what the secret source says it is (dev store or Vault address)
    run_id: str
    chain: list[Record] = field(default_factory=list)
    run_records: list[Record] = field(default_factory=list)
    verification: Verification | None = None
    model_sha256: str | None = None
    failed: str | None = None
    seconds: float = 0.0
    log: Path | None = None
    #: the export files written into DIR/exports (empty when the run produced no model)
    exports: list[Path] = field(default_factory=list)


def _to(stream: Any) -> Progress:
    """Progress lines to `stream`, bound now: task logs are redirected while the run lasts."""

    def emit(text: str) -> None:
        print(text, file=stream, flush=True)

    return emit


# --- setup -----------------------------------------------------------------------------


def _prepare(wd: Workdir, env: Mapping[str, str], progress: Progress, gates: Mapping[str, Any]) -> tuple[Any, Any]:
    from mlseal.gates import gates_to_obj, parse_gates
    from mlseal.ml import data
    from mlseal.secrets import open_secret_source
    from mlseal.signing.keys import public_pem
    from mlseal.stage import signing_key_name

    # the policy holds the gates the evaluate stage applies, in the one explicit form both
    # read; a spec either would refuse is refused here, before anything is written
    policy_gates = gates_to_obj(parse_gates(gates))
    for d in (wd.root, wd.artifacts, wd.keys, wd.logs):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the demo workdir {d}: {exc.strerror or exc}") from None
    src = open_secret_source(wd.secrets, env=env)
    if src.kind == "dev":
        wd.secrets.mkdir(mode=0o700, exist_ok=True)
        os.chmod(wd.secrets, 0o700)
    progress(f"secrets: {src.describe()}")
    if src.kind == "vault":
        # Vault keys are provisioned by an operator: fail now, with the fix, not mid-run.
        from mlseal.components.steps import DEFAULT_HMAC_KEY_PATH

        src.ensure_key(DEFAULT_HMAC_KEY_PATH)
    signers = {kind: src.transit_signer(signing_key_name(kind)) for kind in STAGE_KINDS}
    for kind, s in signers.items():
        (wd.keys / f"{kind}.pub.pem").write_bytes(public_pem(s.public_key()))
    (wd.keys / "checkpoint.pub.pem").write_bytes(public_pem(src.transit_signer(CHECKPOINT_KEY).public_key()))
    wd.trust.write_text(yaml.safe_dump({
        "signers": [{"name": kind, "public_key": f"keys/{kind}.pub.pem", "stages": [kind]} for kind in STAGE_KINDS],
        # checkpoints of the ledger, signed by the witness only; stages refuse a ledger that
        # does not extend the newest one
        "checkpoint_keys": ["keys/checkpoint.pub.pem"],
    }, sort_keys=False))
    wd.policy.write_text(yaml.safe_dump({
        "trust": "trust.yaml",
        "ledger": "sqlite:///ledger.db",
        "require_stages": ["ingest", "process", "train", "evaluate"],
        "gates": policy_gates,
        # the gates count only if the evaluator's own identity measured the held-out split
        "evaluation": {"signers": ["evaluate"], "held_out": True},
        # the local pipeline root stands for the bucket KServe would fetch the model from
        "serving_uris": {wd.artifacts.as_uri() + "/": "s3://mlseal-demo/"},
        "mode": "enforce",
    }, sort_keys=False))
    if not wd.source.exists():
        wd.source.parent.mkdir(parents=True, exist_ok=True)
        data.write_csv(data.make_demo_dataset(seed=0), wd.source)
    _write_env_file(wd, src, env)
    _seal_reference(wd, src, signers["ingest"], progress)
    witness_workdir(wd, src, progress)
    return src, signers["ingest"]


def witness_workdir(wd: Workdir, src: Any, progress: Progress) -> bytes:
    """`mlseal ledger witness` over the demo's ledger: from the last checkpoint it accepted
    (``DIR/checkpoint``) and the newest stored one, verify what was appended since, sign and
    store a checkpoint of the current tree. A rolled-back or forked ledger is refused."""
    from mlseal.ledger import open_ledger
    from mlseal.ledger.witness import read_state, witness, write_state
    from mlseal.signing.trust import load_trust

    with open_ledger(wd.ledger_url) as led:
        done = witness(led, load_trust(wd.trust), src.transit_signer(CHECKPOINT_KEY),
                       state=read_state(wd.checkpoint))
    write_state(wd.checkpoint, done.note)
    progress(f"  witness: checkpoint of {done.new.size} entries signed (root {done.new.root.hex()[:16]}…)")
    return done.note


def _seal_reference(wd: Workdir, src: Any, signer: Any, progress: Progress) -> None:
    """Learn the validation reference from the trusted demo data and record it (once).

    The validate stage verifies the reference like any other input, so it must be a
    recorded, signed artifact: here an `ingest` record named ``reference``.
    """
    from mlseal.ledger import open_ledger
    from mlseal.ml import anonymize, data, validate
    from mlseal.signing.digest import digest_path
    from mlseal.signing.trust import load_trust
    from mlseal.stage import MEDIA_JSON, Sealing, Stage

    with open_ledger(wd.ledger_url) as led:
        if wd.reference.exists() and led.producers_of(digest_path(wd.reference)):
            return
        table = data.read_csv(wd.source).drop(anonymize.AnonymizeSpec.demo().drop)
        reference = validate.Reference.from_table(table, label=data.DEMO_LABEL)
        sealing = Sealing(ledger=led, signer=signer, trust=load_trust(wd.trust), signer_name="ingest",
                          secrets=src)
        with Stage("ingest", name="reference", sealing=sealing, source=_seal_reference,
                   params={"learned_from": wd.source.name, "label": data.DEMO_LABEL}) as st:
            st.output("reference", wd.reference, media_type=MEDIA_JSON).write_text(reference.to_json())
            st.metric("rows", table.n_rows)
        assert st.result is not None
        progress(f"  recorded the validation reference as ledger entry {st.result.seq}")


def _task_env(wd: Workdir, src: Any, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What every KFP task sees: where the ledger, trust and keys are, and how to reach Vault.

    No secret value is set here but the Vault credentials the demo itself was given
    (a token or AppRole secret id in the environment, as a Vault Agent would provide).
    """
    vault = {k: v for k, v in (environ or {}).items() if k.startswith(("VAULT_", "MLSEAL_VAULT_"))}
    env = {**(vault if src.kind == "vault" else {}),
        "MLSEAL_LEDGER": wd.ledger_url,
        "MLSEAL_TRUST": str(wd.trust),
        # each stage signs with its own key (mlseal-signing-<stage>) under its own name
        "MLSEAL_SIGNER_NAME": "",
        "MLSEAL_VAULT_TRANSIT_KEY": "",
        "MLSEAL_SIGNING_KEY": "",
    }
    if src.kind == "dev":
        env["MLSEAL_DEV_SECRETS"] = str(wd.secrets)
        env["VAULT_ADDR"] = ""  # the tasks use the same dev store as the demo, not an ambient Vault
    return env


def _write_env_file(wd: Workdir, src: Any, environ: Mapping[str, str]) -> None:
    """`mlseal.env`: what a user's own kfp.local pipeline or `mlseal record` call needs to
    seal into this workdir's ledger, with its trust file and secret store. Never a secret:
    with Vault, the address and how to log in are written, not a token."""
    import shlex

    env = {"MLSEAL_LEDGER": wd.ledger_url, "MLSEAL_TRUST": str(wd.trust)}
    if src.kind == "dev":
        env["MLSEAL_DEV_SECRETS"] = str(wd.secrets)
        key = f"--key {shlex.quote(str(wd.secrets / 'transit' / (CHECKPOINT_KEY + '.pem')))}"
    else:
        env["VAULT_ADDR"] = str(environ.get("VAULT_ADDR", ""))
        key = f"--vault-transit {CHECKPOINT_KEY}"
    lines = [
        "# mlseal demo workdir: `source` this file, then run your own sealed steps (kfp.local or",
        "# `mlseal record`); they append to this ledger, checked against this trust file.",
        "# The secret store is the local dev store: records made with it say secret_store: dev."
        if src.kind == "dev"
        else "# Vault: log in as usual (VAULT_TOKEN, AppRole or Kubernetes auth); no token is kept here.",
        "# The trust file lists the checkpoint key: each step requires the ledger to extend the newest",
        "# signed checkpoint (a rolled-back or forked ledger is refused). Sign a new one after your steps:",
        f"#   mlseal ledger witness --ledger \"$MLSEAL_LEDGER\" --trust \"$MLSEAL_TRUST\" {key} "
        f"--state \"$MLSEAL_CHECKPOINT\"",
        *(f"export {k}={shlex.quote(v)}" for k, v in {**env, "MLSEAL_CHECKPOINT": str(wd.checkpoint)}.items()),
        "",
    ]
    wd.env_file.write_text("\n".join(lines))


@contextlib.contextmanager
def _environ(updates: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- progress --------------------------------------------------------------------------


class _Watcher(threading.Thread):
    """Prints each new ledger record as the tasks append them."""

    def __init__(self, url: str, start: int, progress: Progress) -> None:
        super().__init__(daemon=True)
        self.url, self.next, self.progress = url, start, progress
        self.stop = threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.poll()

    def poll(self) -> None:
        from mlseal.ledger import open_ledger
        from mlseal.ledger.entry import record_of

        try:
            with open_ledger(self.url) as led:
                for seq, entry in led.entries(self.next):
                    self.next = seq + 1
                    self.progress(_progress_line(record_of(entry), time.monotonic() - self.started_at))
        except Error:
            return


def _progress_line(r: Record, elapsed: float) -> str:
    name = r.component.name or r.stage
    idx = STAGES.index(name) + 1 if name in STAGES else 0
    status = "ok" if r.status is Status.OK else "FAILED"
    outs = ", ".join(f"{o.name} sha256:{o.sha256[:12]}…" for o in r.outputs) or (r.error or "no outputs")
    return f"  [{idx}/{len(STAGES)}] {name:<9} {status:<6} record #{r.seq:<4} {elapsed:5.1f}s  {outs}"


# --- run -------------------------------------------------------------------------------


def run_demo(
    workdir: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    env: Mapping[str, str] | None = None,
    epochs: int = 60,
    gates: Mapping[str, Any] | None = None,
) -> DemoResult:
    """Run, verify and report; see the module docstring."""
    from kfp import local

    from mlseal.ledger import open_ledger
    from mlseal.pipelines import DEFAULT_GATES, compile_reference, reference

    started = time.monotonic()
    progress = progress or _to(sys.stderr)
    env = os.environ if env is None else env
    gates = dict(DEFAULT_GATES if gates is None else gates)
    wd = Workdir(Path(workdir).resolve())
    src, _signer = _prepare(wd, env, progress, gates)
    compile_reference(wd.pipeline)
    with open_ledger(wd.ledger_url) as led:
        first = led.size()
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log_path = wd.logs / f"run-{run_id}-{first}.log"
    progress(f"running the reference pipeline with kfp.local (SubprocessRunner, use_venv=False); log: {log_path}")
    watcher = _Watcher(wd.ledger_url, first, progress)
    failed: str | None = None
    with _environ(_task_env(wd, src, env)), log_path.open("w") as log:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(wd.artifacts),
                   raise_on_error=True)
        watcher.start()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                reference(source=str(wd.source), reference_path=str(wd.reference), policy_path=str(wd.policy),
                          epochs=epochs, gates=gates)
        except RuntimeError as exc:  # kfp.local: a task failed
            failed = str(exc).replace("\x1b", "").strip()
        finally:
            watcher.stop.set()
            watcher.join()
            watcher.poll()
    with open_ledger(wd.ledger_url) as led:
        run_records = [_record(led, seq) for seq in range(first, led.size())]
        chain = _chain(led, wd, run_records)
    try:
        witness_workdir(wd, src, progress)
    except Error as exc:  # reported, and verify_workdir below says what is wrong
        failed = failed or f"the witness refused to sign a checkpoint: {exc}"
    verification = verify_workdir(wd)
    progress(f"ledger: {'verified' if verification.ok else 'VERIFICATION FAILED'} "
             f"({verification.size} entries, root {verification.root[:16]}…) with every artifact's bytes")
    deploy = next((r for r in reversed(run_records) if r.stage == "deploy" and r.status is Status.OK), None)
    model_sha = next((i.sha256 for i in deploy.inputs if i.name == "model"), None) if deploy else None
    if deploy is None and failed is None:
        failed = "the pipeline finished without a deploy record"
    manifest = _manifest_name(deploy) if deploy else None
    exports: list[tuple[str, str, str]] = []
    if model_sha is not None and verification.ok and failed is None:
        try:
            exports = write_exports(wd, src, model_sha, progress)
        except Error as exc:
            failed = f"the exports were refused: {exc}"
    wd.report.write_text(render_report(
        chain,
        title="mlseal demo: lineage from raw data to deployment",
        verification=verification,
        source=wd.source.name,
        manifest=manifest,
        facts={"secrets": src.describe(), "run": run_id, "workdir": str(wd.root),
               "pipeline": str(wd.pipeline.name), "model sha256": model_sha or "—"},
        exports=exports,
    ))
    return DemoResult(
        ok=failed is None and verification.ok,
        workdir=wd.root,
        secrets=src.describe(),
        run_id=run_id,
        chain=chain,
        run_records=run_records,
        verification=verification,
        model_sha256=model_sha,
        failed=failed,
        seconds=time.monotonic() - started,
        log=log_path,
        exports=[wd.root / href for _, href, _ in exports],
    )


#: what the demo exports for its model: (file in DIR/exports, label, what it is)
EXPORTS = (
    ("model.intoto.jsonl", "SLSA provenance", "in-toto Statement v1 with a SLSA Provenance v1 predicate, "
     "DSSE-signed by the train identity"),
    ("model.cdx.json", "CycloneDX ML-BOM", "CycloneDX 1.6: model card, datasets with digests, anonymisation and "
     "encryption as considerations"),
    ("openlineage.jsonl", "OpenLineage events", "one RunEvent per stage run of the model's lineage (JSON Lines)"),
    ("model.pack", "audit pack", "records with inclusion proofs, signed checkpoint, OMS bundles, provenance, "
     "ML-BOM, policy and admission decision: `mlseal verify-pack exports/model.pack --trust trust.yaml`"),
)


def write_exports(wd: Workdir, src: Any, model_sha: str, progress: Progress) -> list[tuple[str, str, str]]:
    """`mlseal export slsa|mlbom|openlineage|pack` for the demo's model, into DIR/exports.

    Everything is built from one verified view of the ledger; the provenance and the pack are
    signed by the train identity (the stage that produced the model) and the pack is checked
    as an auditor would before it is written. Returns (label, link, description) per file.
    """
    from mlseal._files import write_atomic
    from mlseal.export import load_model
    from mlseal.export.mlbom import mlbom_bytes
    from mlseal.export.openlineage import events_for_model, jsonl
    from mlseal.export.pack import admission, build_pack, write_pack
    from mlseal.export.slsa import provenance, sign_provenance
    from mlseal.ledger import open_ledger
    from mlseal.signing.digest import file_sha256
    from mlseal.signing.trust import load_trust
    from mlseal.stage import signing_key_name

    trust = load_trust(wd.trust)
    signer = src.transit_signer(signing_key_name("train"))
    with open_ledger(wd.ledger_url) as led:
        model = load_model(led, model_sha, trust)
        envelope = sign_provenance(provenance(model, pipeline_sha256=file_sha256(wd.pipeline),
                                              pipeline_uri=wd.pipeline.name), signer, trust)
        bom = mlbom_bytes(model)
        events = jsonl(events_for_model(model))
        policy_bytes, decision = admission(model, wd.policy)
        built = build_pack(model, led, signer, provenance=envelope, mlbom=bom, policy_bytes=policy_bytes,
                           decision=decision)
    wd.exports.mkdir(exist_ok=True)
    files = dict(zip((f for f, _, _ in EXPORTS), (envelope, bom, events), strict=False))
    for name, data in files.items():
        write_atomic(wd.exports / name, data)
    write_pack(wd.exports / "model.pack", built, trust)
    lines = events.count(b"\n")
    progress(f"  exports: SLSA provenance, CycloneDX ML-BOM, {lines} OpenLineage events and an "
             f"audit pack ({len(built.data)} bytes, verified) in {wd.exports}")
    return [(label, f"exports/{name}", what) for name, label, what in EXPORTS]


def _chain(led: Any, wd: Workdir, run_records: list[Record]) -> list[Record]:
    """The run's lineage for the report: everything its last sealed output descends from
    (the ledger's own trace, signatures checked), plus the run's failed records, if any."""
    from mlseal.ledger.lineage import trace
    from mlseal.signing.trust import load_trust

    last = next((r for r in reversed(run_records) if r.outputs), None)
    if last is None:
        return list(run_records)
    lineage = trace(led, last.outputs[0].sha256, load_trust(wd.trust))
    found = {r.seq: r for r in (*lineage.ancestors, *([lineage.producer] if lineage.producer else []))}
    found.update({r.seq: r for r in run_records if r.status is Status.FAILED})
    return [found[seq] for seq in sorted(found)]


def _manifest_name(deploy: Record) -> str:
    """The deployed service's name, for the report's last node."""
    return f"{deploy.params.get('service_name', 'model')}"


def _record(led: Any, seq: int) -> Record:
    from mlseal.ledger.entry import record_of

    rec: Record = record_of(led.entry(seq))
    return rec


def verify_workdir(wd: Workdir) -> Verification:
    """`mlseal ledger verify --artifacts` over the demo's ledger and trust file."""
    from mlseal.ledger import open_ledger
    from mlseal.ledger.artifacts import digest_uri
    from mlseal.ledger.verify import verify_ledger
    from mlseal.signing.trust import load_trust

    if not wd.trust.exists():
        raise ConfigurationError(f"{wd.trust} is missing: not a demo workdir")
    trust = load_trust(wd.trust)
    checkpoint, problems = _workdir_checkpoint(wd, trust)
    with open_ledger(wd.ledger_url) as led:
        report = verify_ledger(led, trust, checkpoint=checkpoint, digest_uri=digest_uri)
    problems += [p.detail for p in report.problems]
    return Verification(ok=report.ok and not problems, size=report.size, root=report.root.hex(),
                        problems=problems, checkpoint=checkpoint.size if checkpoint else None)


def _workdir_checkpoint(wd: Workdir, trust: Any) -> tuple[Any, list[str]]:
    """The checkpoint the demo's witness accepted last (``DIR/checkpoint``), verified; a
    workdir whose trust file lists checkpoint keys must have one."""
    from mlseal.ledger.checkpoint import verify_checkpoint
    from mlseal.ledger.witness import read_state

    if not trust.checkpoint_keys:
        return None, []
    note = read_state(wd.checkpoint)
    if note is None:
        return None, [f"{wd.checkpoint} is missing: no checkpoint to verify the ledger against "
                      "(run `mlseal ledger witness`, see mlseal.env)"]
    try:
        return verify_checkpoint(note, trust), []
    except Error as exc:
        return None, [f"{wd.checkpoint}: {exc}"]
