"""`mlseal record`: seal one step that ran outside the Python API (a shell or non-Python step).

    mlseal record --stage process --name dedupe --input raw=data/raw.csv \\
        --output clean=data/clean.csv --param method=sort-u --key keys/pipeline.pem

Inputs are verified first (fail closed: exit 1 and the ledger is unchanged when an input
was never recorded as a trusted, signed output); then each output is digested and signed
(``PATH.sig``) and one record is appended.

In a KFP container component, ``--executor-input '{{$}}'`` takes the inputs, outputs and
parameters from the task's executor input instead (see `mlseal.kfp.executor`): each input
is checked against the digest and bundle in its KFP metadata, and each output's metadata
(`mlseal.sha256`, `mlseal.seq`, `mlseal.bundle`) is written to the executor output file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import TYPE_CHECKING, Any

from mlseal._cli._options import add_json, add_ledger, add_signing_key, emit_json, say
from mlseal.errors import ConfigurationError

if TYPE_CHECKING:
    from mlseal.ledger.record import RunInfo
    from mlseal.signing.keys import Signer
    from mlseal.signing.trust import TrustRoot
    from mlseal.stage import Stage


def _pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{what} must look like NAME=VALUE, got {text!r}")
    return name, value


def _io(text: str) -> tuple[str, str]:
    return _pair(text, "--input/--output")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _param(text: str) -> tuple[str, Any]:
    k, v = _pair(text, "--param/--metric")
    try:  # NaN and Infinity are not JSON (RFC 8259 §6): such a value stays a string
        return k, json.loads(v, parse_constant=_no_constant)
    except ValueError:
        return k, v


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "record",
        help="seal one step run outside Python: verify inputs, sign outputs, append a record",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--stage", required=True, help="stage kind: ingest, process, train, evaluate, deploy, ...")
    p.add_argument("--name", help="component name (default: the stage)")
    p.add_argument("--input", action="append", default=[], type=_io, metavar="NAME=PATH",
                   help="an artifact the step read; must be a recorded, trusted, signed output (fail closed)")
    p.add_argument("--output", action="append", default=[], type=_io, metavar="NAME=PATH",
                   help="an artifact the step wrote; digested, signed (PATH.sig) and recorded")
    p.add_argument("--param", action="append", default=[], type=_param, metavar="K=V",
                   help="a parameter to record (JSON value, or a string)")
    p.add_argument("--metric", action="append", default=[], type=_param, metavar="K=V",
                   help="a numeric metric to record")
    p.add_argument("--media-type", default="application/octet-stream", help="media type of the outputs")
    p.add_argument("--trust", metavar="FILE",
                   help="trust file for the inputs' producers (default: $MLSEAL_TRUST, else only the signing key)")
    p.add_argument("--signer-name", default=None, help="name the record's signer goes by (default: pipeline)")
    p.add_argument("--run-id", help="run id to record (in KFP pass {{$.pipeline_job_uuid}} as a task input; "
                                    "default: $MLSEAL_RUN_ID, $KFP_RUN_ID, ...)")
    p.add_argument("--pipeline", help="pipeline (run) name to record (default: $MLSEAL_PIPELINE, ...)")
    p.add_argument("--task", help="task name to record (default: $MLSEAL_TASK, ...)")
    k = p.add_argument_group("KFP container components")
    k.add_argument("--executor-input", metavar="JSON|@FILE",
                   help="the task's KFP executor input ({{$}}): its artifacts are the inputs and outputs, its "
                        "parameters are recorded, and the outputs' metadata goes to its outputFile")
    k.add_argument("--artifact-root", default=None, metavar="DIR",
                   help="prefix of the local artifact paths (default: $ARTIFACT_LOCAL_PATH, as the KFP launcher)")
    add_ledger(p)
    add_signing_key(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.executor_input is not None:
        return _run_kfp(args)
    from mlseal.ledger import open_ledger

    run_info = _run_info(args)
    _refuse_unresolved(args, run_info, dict(args.param))
    _check_environment(args)
    signer = _signer(args)
    trust = _trust(args.trust or os.environ.get("MLSEAL_TRUST"), signer, args.signer_name or args.stage)
    names = [n for n, _ in args.input] + [n for n, _ in args.output]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"--input/--output names must be unique, got {names}; e.g. --input data=a.csv "
                                 "--output model=model.onnx")
    for name, path in [*args.input, *args.output]:
        if not os.path.exists(path):  # a usage error, not a failed step: nothing is recorded
            raise ConfigurationError(f"{name}={path}: no such file or directory")
    metrics = _metrics(args)
    with open_ledger(args.ledger) as led:
        stage = _stage(args, led, signer, trust, run_info, dict(args.param))
        with stage as st:
            for name, path in args.input:
                st.input(name, path)
            for name, path in args.output:
                st.existing_output(name, path, media_type=args.media_type)
            for k, m in metrics.items():
                st.metric(k, m)
    result = stage.result
    assert result is not None
    if args.json:
        emit_json({
            "seq": result.seq,
            "entry_hash": result.entry_hash,
            "stage": args.stage,
            "inputs": [{"name": i.name, "sha256": i.sha256, "producer_seq": i.producer_seq} for i in st.inputs],
            "outputs": [
                {"name": o.name, "path": str(o.path), "sha256": o.sha256, "bundle": str(o.bundle),
                 "bundle_sha256": o.bundle_sha256}
                for o in result.outputs.values()
            ],
        })
    else:
        say(f"recorded {args.stage} as ledger entry {result.seq}")
        for i in st.inputs:
            say(f"  input  {i.name}: sha256:{i.sha256[:16]}… (produced by record {i.producer_seq})")
        for o in result.outputs.values():
            say(f"  output {o.name}: sha256:{o.sha256[:16]}… signed -> {o.bundle}")
    return 0


def _run_kfp(args: argparse.Namespace) -> int:
    from mlseal.kfp.executor import parse_executor_input, seal
    from mlseal.ledger import open_ledger

    if args.input or args.output:
        raise ConfigurationError("--executor-input takes the inputs and outputs from KFP: drop --input/--output")
    root = os.environ.get("ARTIFACT_LOCAL_PATH", "") if args.artifact_root is None else args.artifact_root
    ei = parse_executor_input(_read_executor_input(args.executor_input), root=root)
    params: dict[str, Any] = dict(ei.parameters)
    for k, v in args.param:
        if k in params and params[k] != v:
            raise ConfigurationError(f"--param {k} conflicts with the task's input parameter {k} ({params[k]!r})")
        params[k] = v
    metrics = _metrics(args)
    run_info = _run_info(args)
    _refuse_unresolved(args, run_info, params)
    _check_environment(args)
    signer = _signer(args)
    trust = _trust(args.trust or os.environ.get("MLSEAL_TRUST"), signer, args.signer_name or args.stage)
    with open_ledger(args.ledger) as led:
        stage = _stage(args, led, signer, trust, run_info, params)
        result, output_file = seal(ei, stage, media_type=args.media_type, metrics=metrics)
    if args.json:
        emit_json({
            "seq": result.seq,
            "entry_hash": result.entry_hash,
            "stage": args.stage,
            "executor_output": str(output_file),
            "inputs": [{"name": i.name, "sha256": i.sha256, "producer_seq": i.producer_seq} for i in stage.inputs],
            "outputs": [
                {"name": o.name, "uri": o.uri, "path": str(o.path), "sha256": o.sha256, "bundle": str(o.bundle),
                 "bundle_sha256": o.bundle_sha256}
                for o in result.outputs.values()
            ],
        })
    else:
        say(f"recorded {args.stage} as ledger entry {result.seq}; KFP metadata in {output_file}")
        for i in stage.inputs:
            say(f"  input  {i.name}: sha256:{i.sha256[:16]}… (produced by record {i.producer_seq})")
        for o in result.outputs.values():
            say(f"  output {o.name}: sha256:{o.sha256[:16]}… {o.uri}")
    return 0


def _read_executor_input(value: str) -> str:
    if not value.startswith("@"):
        return value
    try:
        with open(value[1:], encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ConfigurationError(f"--executor-input {value}: {exc.strerror or exc}") from None


def _metrics(args: argparse.Namespace) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for k, v in args.metric:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigurationError(f"--metric {k} must be a finite number, got {v!r}; e.g. --metric {k}=0.93")
        metrics[k] = float(v)
    return metrics


def _stage(args: argparse.Namespace, ledger: Any, signer: Signer, trust: TrustRoot, run: RunInfo,
           params: dict[str, Any]) -> Stage:
    """The stage a `record` call seals, signing as its stage kind's identity."""
    from mlseal.stage import Sealing, Stage

    sealing = Sealing(
        ledger=ledger,
        signer=signer,
        trust=trust,
        signer_name=args.signer_name or os.environ.get("MLSEAL_SIGNER_NAME") or args.stage,
        run=run,
        image=os.environ.get("MLSEAL_IMAGE") or None,
    )
    return Stage(args.stage, name=args.name or args.stage, sealing=sealing, params=params)


def _run_info(args: argparse.Namespace) -> RunInfo:
    """--run-id/--pipeline/--task, each defaulting to the environment (`mlseal.stage.RUN_ENV`)."""
    from mlseal.ledger.record import RunInfo
    from mlseal.stage import run_info_from_env

    for option, value in {"--run-id": args.run_id, "--pipeline": args.pipeline, "--task": args.task}.items():
        _refuse_unresolved_value(option, value)
    env = run_info_from_env()
    return RunInfo(pipeline=args.pipeline or env.pipeline, run_id=args.run_id or env.run_id,
                   task=args.task or env.task)


def _refuse_unresolved_value(option: str, value: str | None) -> None:
    from mlseal.kfp.executor import unresolved

    if value and unresolved(value):
        raise ConfigurationError(
            f"{option} {value!r} is an unresolved KFP placeholder: pass it to the task as an input value "
            "(the KFP backend resolves {{$.pipeline_job_uuid}} & co. only there)"
        )


def _refuse_unresolved(args: argparse.Namespace, run_info: RunInfo, params: dict[str, Any]) -> None:
    """A `{{$.…}}` KFP never substituted must not land in the ledger as if it were a value."""
    from mlseal.kfp.executor import unresolved

    fields = {"--name": args.name, "--stage": args.stage}
    for option, value in fields.items():
        if value and unresolved(value):
            raise ConfigurationError(
                f"{option} {value!r} is an unresolved KFP placeholder: pass it to the task as an input value "
                "(the KFP backend resolves {{$.pipeline_job_uuid}} & co. only there)"
            )
    for k, v in params.items():
        found = unresolved(v)
        if found:
            raise ConfigurationError(f"param {k} holds an unresolved KFP placeholder {found!r}")


def _signer(args: argparse.Namespace) -> Signer:
    """As in a stage: `--key` / `--vault-transit`, else the stage's own identity from the
    environment (`MLSEAL_SIGNING_KEY`, or Transit `MLSEAL_VAULT_TRANSIT_KEY` /
    ``mlseal-signing-<stage>`` in Vault or the dev store `MLSEAL_DEV_SECRETS` names)."""
    from mlseal.secrets.signer import resolve_signer
    from mlseal.stage import stage_signer

    if args.key or args.vault_transit:
        return resolve_signer(key=args.key, vault_transit=args.vault_transit)
    return stage_signer(os.environ, args.stage)[1]


def _check_environment(args: argparse.Namespace) -> None:
    """Inside a KFP task, what a stage requires: the shared ledger, a trust file, a real
    secret store (or the dev store on purpose). Nothing is read or written before."""
    from mlseal.stage import check_task_environment, in_kfp_task

    check_task_environment(os.environ, ledger_url=args.ledger or os.environ.get("MLSEAL_LEDGER"))
    if in_kfp_task() and not (args.trust or os.environ.get("MLSEAL_TRUST")):
        raise ConfigurationError(
            "MLSEAL_TRUST is not set in this KFP task: pass --trust FILE or wire the task (mlseal.kfp.wire); "
            "trusting only this step's own key would let it sign any stage"
        )


def _trust(path: str | None, signer: Signer, signer_name: str | None) -> TrustRoot:
    from mlseal.signing.keys import PublicKeyVerifier
    from mlseal.signing.trust import TrustRoot, load_trust

    if path:
        return load_trust(path)
    # Without a trust file, trust only the key this step signs with: inputs must then have
    # been produced by earlier steps of the same signer.
    return TrustRoot.of(PublicKeyVerifier(signer.public_key(), name=signer_name or "pipeline"))
