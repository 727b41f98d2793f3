"""`mlseal record --executor-input`: a KFP container component (any image) sealed like a Python one.

The tests play the KFP backend around the command: a driver builds the executor input
(``ExecutorInput`` proto -> protojson-style JSON), a launcher in its own "pod" root
downloads the input artifacts from an object store, runs the command, reads the
executor output file strictly as the ``ExecutorOutput`` proto (unknown fields fail, as
Go's protojson does), merges the metadata and uploads only the artifacts themselves
(never the ``.sig`` beside them). A downstream sealed stage then gets nothing but the
bytes and the metadata.
"""

# (no `from __future__ import annotations`: KFP reads the container components' real annotations)

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2 as ps

from mlseal.cli import main
from mlseal.errors import ConfigurationError
from mlseal.kfp.executor import (
    local_path,
    parse_executor_input,
    record_command,
    shell_command,
)
from mlseal.kfp.metadata import META_BUNDLE, META_ENTRY_SHA256, META_SEQ, META_SHA256
from mlseal.ledger import open_ledger
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.record import RunInfo
from mlseal.signing.trust import TrustRoot, load_trust
from mlseal.stage import InputRefused, Sealing, Stage
from tests.fixtures_signing import KeyFiles, make_key

REPO = Path(__file__).resolve().parent.parent
RUN_ID = "3f2b7c1e-8d4a-4e55-9a0b-6c1d2e3f4a5b"
PIPELINE = "container-steps"
PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"


# --- a small KFP backend ---------------------------------------------------------------


def artifact_uri(task: str, name: str, execution: int) -> str:
    return f"{PIPELINE_ROOT}/{PIPELINE}/{RUN_ID}/{task}/{execution}/{name}"


def driver_executor_input(
    *,
    output_file: Path,
    inputs: dict[str, tuple[str, dict[str, Any]]] | None = None,
    outputs: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> str:
    """The executor input JSON as the driver makes it: an ExecutorInput proto in protojson form."""
    ei = ps.ExecutorInput()
    for k, v in (params or {}).items():
        ei.inputs.parameter_values[k].CopyFrom(json_format.ParseDict(v, struct_pb2.Value()))
    for name, (uri, metadata) in (inputs or {}).items():
        a = ei.inputs.artifacts[name].artifacts.add()
        a.name, a.uri = f"minio-artifact-{name}", uri
        a.type.schema_title, a.type.schema_version = "system.Dataset", "0.0.1"
        if metadata:
            a.metadata.update(metadata)
    for name, uri in (outputs or {}).items():
        a = ei.outputs.artifacts[name].artifacts.add()
        a.name, a.uri = f"minio-artifact-{name}", uri
        a.type.schema_title, a.type.schema_version = "system.Dataset", "0.0.1"
    ei.outputs.output_file = str(output_file)
    text: str = json_format.MessageToJson(ei)  # camelCase field names, like Go's protojson.Marshal
    return text


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir():
        shutil.rmtree(dst)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)


@dataclass
class Task:
    name: str
    root: Path  # the pod's filesystem root for artifacts ($ARTIFACT_LOCAL_PATH)
    executor_input: str
    output_file: Path
    outputs: dict[str, str]

    def path(self, uri: str) -> Path:
        return local_path(uri, root=str(self.root))


@dataclass
class Cluster:
    """An object store, MLMD's artifact metadata, and one pod root per task."""

    base: Path
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # uri -> metadata (MLMD)
    executions: int = 100

    def store_path(self, uri: str) -> Path:
        return local_path(uri, root=str(self.base / "store"))

    def task(
        self,
        name: str,
        *,
        inputs: dict[str, str] | None = None,
        outputs: list[str] | None = None,
        params: dict[str, Any] | None = None,
        metadata: dict[str, dict[str, Any]] | None = None,
    ) -> Task:
        """Driver + launcher set-up: download the inputs into a fresh pod root, build the executor input."""
        self.executions += 1
        root = self.base / "pods" / f"{name}-{self.executions}"
        out_uris = {o: artifact_uri(name, o, self.executions) for o in outputs or []}
        ins: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, uri in (inputs or {}).items():
            _copy(self.store_path(uri), local_path(uri, root=str(root)))
            ins[key] = (uri, (metadata or {}).get(key, self.metadata.get(uri, {})))
        for uri in out_uris.values():  # the launcher creates the outputs' parent directories
            local_path(uri, root=str(root)).parent.mkdir(parents=True, exist_ok=True)
        output_file = root / "tmp" / "kfp_outputs" / "output_metadata.json"
        text = driver_executor_input(output_file=output_file, inputs=ins, outputs=out_uris, params=params)
        return Task(name, root, text, output_file, out_uris)

    def finish(self, task: Task) -> dict[str, dict[str, Any]]:
        """Launcher after the command: parse the executor output strictly, merge, upload the artifacts."""
        out = ps.ExecutorOutput()
        if task.output_file.exists():
            json_format.Parse(task.output_file.read_text(), out)  # unknown fields fail, as in protojson
        result = {}
        for key, uri in task.outputs.items():
            listed = out.artifacts[key].artifacts if key in out.artifacts else []
            md = json_format.MessageToDict(listed[0].metadata) if listed else {}
            if listed:
                assert listed[0].uri in ("", uri) and not listed[0].HasField("custom_path")
            _copy(task.path(uri), self.store_path(uri))  # the artifact only, not PATH.sig
            self.metadata[uri] = md
            result[key] = md
        return result


@dataclass
class Setup:
    cluster: Cluster
    ledger_url: str
    trust_file: Path
    keys: dict[str, KeyFiles]

    def record(self, task: Task, stage: str, *extra: str, key: str | None = None,
               capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, dict[str, Any] | None, str]:
        k = self.keys[key or stage]
        argv = ["record", "--json", "--executor-input", task.executor_input, "--artifact-root", str(task.root),
                "--stage", stage, "--ledger", self.ledger_url, "--key", str(k.private),
                "--trust", str(self.trust_file), "--signer-name", key or stage, *extra]
        if capsys is not None:
            capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr() if capsys is not None else ("", "")
        return code, (json.loads(out) if out.strip() else None), err

    def size(self) -> int:
        with open_ledger(self.ledger_url) as led:
            return led.size()

    def trust(self) -> TrustRoot:
        return load_trust(self.trust_file)


@pytest.fixture
def setup(tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Setup:
    for var in ("MLSEAL_TRUST", "MLSEAL_SIGNING_KEY", "MLSEAL_VAULT_TRANSIT_KEY", "MLSEAL_SIGNER_NAME",
                "MLSEAL_IMAGE", "MLSEAL_RUN_ID", "MLSEAL_PIPELINE", "MLSEAL_TASK", "KFP_RUN_ID", "KFP_POD_NAME",
                "KFP_PIPELINE_NAME", "KFP_TASK_NAME", "ARGO_WORKFLOW_NAME", "ARTIFACT_LOCAL_PATH"):
        monkeypatch.delenv(var, raising=False)
    keys_dir = tmp_path / "keys"
    keys = {stage: make_key(keys_dir, stage) for stage in ("ingest", "process")}
    trust_file = tmp_path / "trust.yaml"
    trust_file.write_text(yaml.safe_dump({"signers": [
        {"name": stage, "public_key": f"keys/{stage}.pub.pem"} for stage in keys
    ]}))
    return Setup(Cluster(tmp_path / "cluster"), ledger_url, trust_file, keys)


def _ingest(s: Setup, capsys: pytest.CaptureFixture[str], text: str = "b\na\nb\n",
            name: str = "fetch") -> tuple[str, dict[str, Any]]:
    """A container step that writes `raw`, sealed by `mlseal record`; returns its URI and KFP metadata."""
    t = s.cluster.task(name, outputs=["raw"])
    t.path(t.outputs["raw"]).write_text(text)
    code, out, err = s.record(t, "ingest", "--run-id", RUN_ID, "--pipeline", PIPELINE, "--task", name,
                              capsys=capsys)
    assert code == 0, err
    assert out is not None
    return t.outputs["raw"], s.cluster.finish(t)["raw"]


def _downstream(s: Setup, uri: str, metadata: dict[str, Any], tmp: Path) -> Path:
    """A sealed Python stage in another pod: only the artifact's bytes and its metadata reach it."""
    path = local_path(uri, root=str(tmp / "downstream-pod"))
    _copy(s.cluster.store_path(uri), path)
    with open_ledger(s.ledger_url) as led:
        sealing = Sealing(ledger=led, signer=s.keys["process"].signer, trust=s.trust(), signer_name="process")
        with Stage("evaluate", name="consume", sealing=sealing) as st:
            st.input("data", path, bundle=metadata[META_BUNDLE].encode(), expect_sha256=metadata[META_SHA256])
            st.output("report", tmp / "report.txt").write_text("ok")
    return path


# --- the chain --------------------------------------------------------------------------


def test_container_steps_chain_and_downstream_sealed_stage_accepts(
    setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s = setup
    raw_uri, raw_md = _ingest(s, capsys)
    assert set(raw_md) == {META_SHA256, META_SEQ, META_BUNDLE, META_ENTRY_SHA256}
    assert raw_md[META_SEQ] == 0 and json.loads(raw_md[META_BUNDLE])["mediaType"].startswith(
        "application/vnd.dev.sigstore.bundle"
    )

    # a process step (directory output) that also wrote its own executor output content
    t = s.cluster.task("dedupe", inputs={"raw": raw_uri}, outputs=["clean"], params={"method": "sort-u", "n": 2})
    raw_path = t.path(raw_uri)
    assert raw_path == t.root / "minio/mlpipeline/v2/artifacts" / PIPELINE / RUN_ID / "fetch/101/raw"
    assert not raw_path.with_name("raw.sig").exists()  # only the bytes were downloaded
    clean = t.path(t.outputs["clean"])
    clean.mkdir()
    (clean / "part-0.txt").write_text("".join(sorted(set(raw_path.read_text().splitlines(True)))))
    t.output_file.parent.mkdir(parents=True)
    t.output_file.write_text(json.dumps({
        "parameterValues": {"rows": 2},
        "artifacts": {"clean": {"artifacts": [{"metadata": {"rows": 2, META_SEQ: "forged"}}]}},
    }))
    code, out, err = s.record(t, "process", "--name", "dedupe", "--metric", "rows=2", "--run-id", RUN_ID,
                              "--pipeline", PIPELINE, "--task", "dedupe", capsys=capsys)
    assert code == 0, err
    assert out is not None and out["executor_output"] == str(t.output_file)
    assert out["inputs"] == [{"name": "raw", "sha256": raw_md[META_SHA256], "producer_seq": 0}]

    # the executor output file: the launcher's ExecutorOutput shape, the step's own content kept
    doc = json.loads(t.output_file.read_text())
    assert doc["parameterValues"] == {"rows": 2}
    (entry,) = doc["artifacts"]["clean"]["artifacts"]
    assert entry["uri"] == t.outputs["clean"] and entry["name"] == "minio-artifact-clean"
    assert entry["metadata"]["rows"] == 2 and entry["metadata"][META_SEQ] == 1  # ours win
    clean_md = s.cluster.finish(t)["clean"]
    assert clean_md[META_SHA256] == out["outputs"][0]["sha256"]

    # the record: KFP run context, the task's parameters, the KFP URIs
    with open_ledger(s.ledger_url) as led:
        rec = parse_entry(led.entry(1), s.trust())
    assert rec.stage == "process" and rec.component.name == "dedupe"
    assert rec.run == RunInfo(pipeline=PIPELINE, run_id=RUN_ID, task="dedupe")
    assert rec.params == {"method": "sort-u", "n": 2} and rec.metrics == {"rows": 2.0}
    assert [(i.name, i.uri, i.producer_seq) for i in rec.inputs] == [("raw", raw_uri, 0)]
    assert [(o.name, o.uri) for o in rec.outputs] == [("clean", t.outputs["clean"])]

    # downstream, in another pod, a sealed stage accepts it from the bytes and the metadata alone
    _downstream(s, t.outputs["clean"], clean_md, tmp_path)
    assert s.size() == 3

    # what KFP stores and shows (the executor output, the task's output) carries no private key
    for k in s.keys.values():
        pem = k.private.read_text()
        body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
        for text in (t.output_file.read_text(), json.dumps(out), err):
            assert body[:48] not in text and body[-48:] not in text


def test_the_task_side_module_needs_no_kfp() -> None:
    """`mlseal record` runs in any image with mlseal: the executor module does not import kfp."""
    code = "import sys, mlseal.kfp.executor, mlseal._cli.record; print('kfp' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "False"


def test_record_runs_as_a_subprocess(setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    s = setup
    raw_uri, _ = _ingest(s, capsys)
    t = s.cluster.task("upper", inputs={"raw": raw_uri}, outputs=["out"])
    t.path(t.outputs["out"]).write_text(t.path(raw_uri).read_text().upper())
    ei_file = tmp_path / "executor_input.json"
    ei_file.write_text(t.executor_input)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSEAL_", "KFP_"))}
    env.update(PYTHONPATH=str(REPO), ARTIFACT_LOCAL_PATH=str(t.root), MLSEAL_TRUST=str(s.trust_file),
               MLSEAL_SIGNING_KEY=str(s.keys["process"].private), MLSEAL_SIGNER_NAME="process",
               MLSEAL_LEDGER=s.ledger_url, MLSEAL_RUN_ID=RUN_ID, MLSEAL_TASK="upper")
    proc = subprocess.run([sys.executable, "-m", "mlseal.cli", "record", "--stage", "process", "--name", "upper",
                           "--executor-input", f"@{ei_file}", "--json"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["seq"] == 1
    md = s.cluster.finish(t)["out"]
    assert md[META_SEQ] == 1
    with open_ledger(s.ledger_url) as led:
        rec = parse_entry(led.entry(1), s.trust())
    assert rec.run == RunInfo(run_id=RUN_ID, task="upper")  # from the environment
    _downstream(s, t.outputs["out"], md, tmp_path)


# --- attacks ---------------------------------------------------------------------------


def test_a_byte_changed_after_record_is_refused_downstream(
    setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s = setup
    raw_uri, raw_md = _ingest(s, capsys)
    stored = s.cluster.store_path(raw_uri)
    data = bytearray(stored.read_bytes())
    data[0] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(InputRefused, match="changed or swapped"):
        _downstream(s, raw_uri, raw_md, tmp_path)
    # and a container step reading it fails closed: exit 1, nothing recorded, no executor output
    t = s.cluster.task("dedupe", inputs={"raw": raw_uri}, outputs=["clean"])
    t.path(t.outputs["clean"]).write_text("x\n")
    code, _, err = s.record(t, "process", capsys=capsys)
    assert code == 1 and "input 'raw' refused" in err
    assert s.size() == 1 and not t.output_file.exists()
    assert t.path(t.outputs["clean"]).read_text() == "x\n"  # the step's output is left alone


def test_metadata_of_another_recorded_artifact_is_refused(
    setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s = setup
    a_uri, a_md = _ingest(s, capsys, "the real input\n", name="fetch-a")
    _, b_md = _ingest(s, capsys, "another recorded, signed artifact\n", name="fetch-b")
    # the artifact is A, its metadata (digest and bundle) is B's: both are recorded and signed
    with pytest.raises(InputRefused, match="changed or swapped"):
        _downstream(s, a_uri, b_md, tmp_path)
    t = s.cluster.task("dedupe", inputs={"raw": a_uri}, outputs=["clean"], metadata={"raw": b_md})
    t.path(t.outputs["clean"]).write_text("x\n")
    code, _, err = s.record(t, "process", capsys=capsys)
    assert code == 1 and "changed or swapped" in err
    assert s.size() == 2 and not t.output_file.exists()
    # the same swap with only the digest replaced: A's bundle no longer matches
    swapped = {**a_md, META_SHA256: b_md[META_SHA256]}
    t = s.cluster.task("dedupe", inputs={"raw": a_uri}, outputs=["clean"], metadata={"raw": swapped})
    t.path(t.outputs["clean"]).write_text("x\n")
    code, _, _ = s.record(t, "process", capsys=capsys)
    assert code == 1 and s.size() == 2


def test_an_input_without_mlseal_metadata_fails_closed(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    s = setup
    raw_uri, _ = _ingest(s, capsys)
    t = s.cluster.task("dedupe", inputs={"raw": raw_uri}, outputs=["clean"], metadata={"raw": {"rows": 3}})
    out = t.path(t.outputs["clean"])
    out.write_text("a\nb\n")
    code, _, err = s.record(t, "process", capsys=capsys)
    assert code == 1
    assert "carries no mlseal.sha256/mlseal.bundle metadata" in err
    assert s.size() == 1
    assert not t.output_file.exists()
    assert out.read_text() == "a\nb\n" and not out.with_name(out.name + ".sig").exists()


def _ei(tmp: Path, **parts: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": {"parameterValues": {"n": 1}},
        "outputs": {
            "artifacts": {"out": {"artifacts": [{"name": "x", "uri": "s3://bucket/run/out",
                                                 "type": {"schemaTitle": "system.Dataset"}}]}},
            "outputFile": str(tmp / "executor_output.json"),
        },
    }
    for path, value in parts.items():
        *head, last = path.split("__")
        node = doc
        for k in head:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return doc


MALFORMED: dict[str, tuple[Callable[[Path], Any], str]] = {
    "not JSON": (lambda t: "{inputs: 1", "executor input is not JSON"),
    "placeholder never substituted": (lambda t: "{{$}}", "did not substitute the {{$}} placeholder"),
    "a list": (lambda t: "[]", "executor input: the document must be a JSON object, got list"),
    "no outputFile": (lambda t: _ei(t, outputs__outputFile=...), "outputs.outputFile is missing"),
    "parameters not an object": (lambda t: _ei(t, inputs__parameterValues=[1]),
                                 "inputs.parameterValues must be a JSON object"),
    "artifacts not a list": (lambda t: _ei(t, outputs__artifacts__out__artifacts={"uri": "s3://b/x"}),
                             "outputs.artifacts.out.artifacts must be a list"),
    "no uri": (lambda t: _ei(t, outputs__artifacts__out__artifacts__0__uri=...),
               "outputs.artifacts.out.artifacts[0].uri is missing"),
    "unsupported scheme": (lambda t: _ei(t, outputs__artifacts__out__artifacts__0__uri="https://example.org/x"),
                           "unsupported scheme"),
    "dot-dot": (lambda t: _ei(t, outputs__artifacts__out__artifacts__0__uri="s3://bucket/../../etc/x"),
                "'..' segment"),
    "two artifacts": (lambda t: _ei(t, outputs__artifacts__out__artifacts=[{"uri": "s3://b/1"}, {"uri": "s3://b/2"}]),
                      "holds 2 artifacts"),
    "metadata not an object": (
        lambda t: _ei(t, outputs__artifacts__out__artifacts__0__metadata="x"),
        "outputs.artifacts.out.artifacts[0].metadata must be a JSON object",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_executor_input_is_a_usage_error(
    case: str, setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s = setup
    _ingest(s, capsys)
    make, message = MALFORMED[case]
    doc = make(tmp_path)
    text = doc if isinstance(doc, str) else json.dumps(doc)
    capsys.readouterr()
    code = main(["record", "--executor-input", text, "--artifact-root", str(tmp_path), "--stage", "process",
                 "--ledger", s.ledger_url, "--key", str(s.keys["process"].private), "--trust", str(s.trust_file)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert s.size() == 1
    assert not (tmp_path / "executor_output.json").exists()


def test_executor_input_from_a_missing_file_is_a_usage_error(setup: Setup, tmp_path: Path) -> None:
    assert main(["record", "--executor-input", f"@{tmp_path / 'nope.json'}", "--stage", "process",
                 "--ledger", setup.ledger_url, "--key", str(setup.keys["process"].private)]) == 2


def test_unresolved_placeholders_are_never_recorded(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = setup
    raw_uri, _ = _ingest(s, capsys)

    def attempt(*extra: str, params: dict[str, Any] | None = None) -> tuple[int, str]:
        t = s.cluster.task("dedupe", inputs={"raw": raw_uri}, outputs=["clean"], params=params)
        t.path(t.outputs["clean"]).write_text("x\n")
        code, _, err = s.record(t, "process", *extra, capsys=capsys)
        assert not t.output_file.exists()
        return code, err

    code, err = attempt("--run-id", "{{$.pipeline_job_uuid}}")
    assert code == 2 and "--run-id '{{$.pipeline_job_uuid}}' is an unresolved KFP placeholder" in err
    code, err = attempt("--task", "{{$.pipeline_task_name}}")
    assert code == 2 and "--task" in err
    # a component default stays verbatim on a cluster: it arrives in parameterValues
    code, err = attempt(params={"run_id": "{{$.pipeline_job_uuid}}"})
    assert code == 2 and "param run_id holds an unresolved KFP placeholder" in err
    code, err = attempt("--param", "note={{$.inputs.parameters['note']}}")
    assert code == 2
    monkeypatch.setenv("MLSEAL_RUN_ID", "{{$.pipeline_job_uuid}}")
    code, err = attempt()
    assert code == 2 and "MLSEAL_RUN_ID '{{$.pipeline_job_uuid}}' is an unresolved KFP placeholder" in err
    assert s.size() == 1
    # the plain (non-KFP) mode refuses them too
    monkeypatch.delenv("MLSEAL_RUN_ID")
    f = s.cluster.base / "plain.txt"
    f.write_text("x")
    assert main(["record", "--stage", "ingest", "--output", f"o={f}", "--pipeline", "p",
                 "--param", "x={{$.pipeline_job_name}}", "--ledger", s.ledger_url,
                 "--key", str(s.keys["ingest"].private)]) == 2
    assert s.size() == 1


def test_an_executor_output_that_redirects_an_output_is_refused(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    s = setup
    for entry, message in (
        ({"customPath": "/elsewhere/out"}, "sets a customPath"),
        ({"uri": "s3://other-bucket/out"}, "moves the output to 's3://other-bucket/out'"),
    ):
        t = s.cluster.task("fetch", outputs=["raw"])
        t.path(t.outputs["raw"]).write_text("a\n")
        t.output_file.parent.mkdir(parents=True)
        t.output_file.write_text(json.dumps({"artifacts": {"raw": {"artifacts": [entry]}}}))
        code, _, err = s.record(t, "ingest", capsys=capsys)
        assert code == 2 and message in err
    assert s.size() == 0


def test_an_output_the_step_did_not_write_is_a_usage_error(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    t = setup.cluster.task("fetch", outputs=["raw"])
    code, _, err = setup.record(t, "ingest", capsys=capsys)
    assert code == 2 and "output 'raw' was not written" in err
    assert setup.size() == 0 and not t.output_file.exists()


def test_a_secret_literal_task_parameter_is_refused_and_not_repeated(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    """Task parameters are recorded, and parameters are public: secrets only by reference."""
    t = setup.cluster.task("fetch", outputs=["raw"], params={"db_password": "hunter2-literal"})
    t.path(t.outputs["raw"]).write_text("a\n")
    code, out, err = setup.record(t, "ingest", capsys=capsys)
    assert code == 2 and out is None
    assert "db_password" in err and "hunter2-literal" not in err
    assert setup.size() == 0 and not t.output_file.exists()


# --- paths -------------------------------------------------------------------------------


def test_local_paths_follow_the_kfp_launcher() -> None:
    assert local_path("s3://b/p/x") == Path("/s3/b/p/x")
    assert local_path("gs://b/p/x") == Path("/gcs/b/p/x")
    assert local_path("minio://mlpipeline/v2/x") == Path("/minio/mlpipeline/v2/x")
    assert local_path("oci://registry.io/org/model:1") == Path("/oci/registry.io_org_model:1/models")
    assert local_path("s3://b/x", root="/tmp/r") == Path("/tmp/r/s3/b/x")
    assert local_path("s3://b/x", workspace="/kfp-workspace") == Path("/kfp-workspace/.artifacts/s3/b/x")
    assert local_path("/local/run/x") == Path("/local/run/x")  # kfp.local passes plain paths
    for bad in ("https://h/x", "file:///x", "relative/x", "s3://b/../x"):
        with pytest.raises(ConfigurationError):
            local_path(bad)
    ei = parse_executor_input({
        "inputs": {"artifacts": {"d": {"artifacts": [{"uri": "s3://b/d", "metadata": {"_kfp_workspace": True}}]},
                                 "optional": {"artifacts": []}},
                   "parameter_values": {"k": "v"}},
        "outputs": {"output_file": "/tmp/kfp_outputs/output_metadata.json"},
    }, root="/r")
    assert ei.inputs["d"].path == Path("/kfp-workspace/.artifacts/r/s3/b/d")
    assert set(ei.inputs) == {"d"} and ei.parameters == {"k": "v"}  # proto field names are accepted too


# --- the container component ---------------------------------------------------------------


def test_record_command_refuses_run_placeholders_inside_the_command() -> None:
    from kfp import dsl

    with pytest.raises(ConfigurationError, match="does not resolve"):
        record_command(stage="process", run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    with pytest.raises(ConfigurationError, match="does not resolve"):
        record_command(stage="process", params={"when": dsl.PIPELINE_JOB_NAME_PLACEHOLDER})
    assert record_command(stage="process", name="x", params={"n": 3, "mode": "fast"}, metrics={"rows": 2}) == [
        "mlseal", "record", "--executor-input", "{{$}}", "--stage", "process", "--name", "x",
        "--param", "n=3", "--param", "mode=fast", "--metric", "rows=2",
    ]


def _container_pipeline(program: list[str], then: str = "") -> Any:
    from kfp import dsl

    @dsl.container_component
    def dedupe(raw: dsl.Input[dsl.Dataset], clean: dsl.Output[dsl.Dataset], run_id: str, pipeline: str,
               task: str, method: str = "sort-u") -> dsl.ContainerSpec:
        return dsl.ContainerSpec(
            image="registry.example.org/coreutils@sha256:" + "0" * 64,
            command=shell_command(
                f"sort -u '{raw.path}' > '{clean.path}'{then}",
                stage="process", name="dedupe", run_id=run_id, pipeline=pipeline, task=task, program=program,
            ),
        )

    @dsl.container_component
    def fetch(raw: dsl.Output[dsl.Dataset]) -> dsl.ContainerSpec:
        return dsl.ContainerSpec(image="alpine", command=["sh", "-c", f"printf 'b\\na\\nb\\n' > '{raw.path}'"])

    @dsl.pipeline(name=PIPELINE)
    def pipeline() -> None:
        f = fetch()
        dedupe(raw=f.outputs["raw"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
               pipeline=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, task=dsl.PIPELINE_TASK_NAME_PLACEHOLDER)

    return pipeline


def _compiled(tmp: Path, program: list[str], then: str = "") -> dict[str, Any]:
    from kfp import compiler

    path = tmp / "pipeline.yaml"
    compiler.Compiler().compile(_container_pipeline(program, then), str(path))
    ir: dict[str, Any] = yaml.safe_load(path.read_text())
    return ir


def test_container_component_compiles_to_the_ir_the_launcher_runs(tmp_path: Path) -> None:
    ir = _compiled(tmp_path, ["mlseal"])
    container = ir["deploymentSpec"]["executors"]["exec-dedupe"]["container"]
    command = container["command"]
    assert command[:2] == ["sh", "-c"] and "sort -u '{{$.inputs.artifacts['raw'].path}}'" in command[2]
    assert command[3:] == [
        "mlseal-record", "mlseal", "record", "--executor-input", "{{$}}", "--stage", "process", "--name", "dedupe",
        "--run-id", "{{$.inputs.parameters['run_id']}}", "--pipeline", "{{$.inputs.parameters['pipeline']}}",
        "--task", "{{$.inputs.parameters['task']}}",
    ]
    assert "{{$}}" not in command[2]  # the executor input JSON is an argument, never shell text
    # the run context is a task input value: the one place the KFP driver resolves these placeholders
    inputs = ir["root"]["dag"]["tasks"]["dedupe"]["inputs"]["parameters"]
    assert inputs["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    assert inputs["pipeline"] == {"runtimeValue": {"constant": "{{$.pipeline_job_name}}"}}
    assert inputs["task"] == {"runtimeValue": {"constant": "{{$.pipeline_task_name}}"}}


def _launch(command: list[str], task: Task, params: dict[str, Any], *, env: dict[str, str]) -> int:
    """The launcher: substitute the placeholders in the compiled command, run it."""
    ei = json.loads(task.executor_input)
    subs = {"{{$}}": task.executor_input}
    for k, v in params.items():
        subs[f"{{{{$.inputs.parameters['{k}']}}}}"] = str(v)
    for side in ("inputs", "outputs"):
        for k, lst in ei[side].get("artifacts", {}).items():
            uri = lst["artifacts"][0]["uri"]
            subs[f"{{{{$.{side}.artifacts['{k}'].path}}}}"] = str(task.path(uri))
            subs[f"{{{{$.{side}.artifacts['{k}'].uri}}}}"] = uri
    argv = []
    for element in command:
        for p, v in subs.items():
            element = element.replace(p, v)
        argv.append(element)
    return subprocess.run(argv, env=env, timeout=120, check=False).returncode


def test_compiled_container_component_runs_sealed_and_downstream_accepts(
    setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s = setup
    raw_uri, _ = _ingest(s, capsys)
    def command(then: str = "") -> list[str]:
        ir = _compiled(tmp_path, [sys.executable, "-m", "mlseal.cli"], then)
        cmd: list[str] = ir["deploymentSpec"]["executors"]["exec-dedupe"]["container"]["command"]
        return cmd

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSEAL_", "KFP_"))}
    env.update(PYTHONPATH=str(REPO), MLSEAL_TRUST=str(s.trust_file), MLSEAL_LEDGER=s.ledger_url,
               MLSEAL_SIGNING_KEY=str(s.keys["process"].private), MLSEAL_SIGNER_NAME="process")

    def run(params: dict[str, Any], *, then: str = "") -> tuple[int, Task]:
        t = s.cluster.task("dedupe", inputs={"raw": raw_uri}, outputs=["clean"], params=params)
        return _launch(command(then), t, params, env={**env, "ARTIFACT_LOCAL_PATH": str(t.root)}), t

    # the driver resolved the run context: sealed, recorded with it, accepted downstream
    resolved = {"run_id": RUN_ID, "pipeline": PIPELINE, "task": "dedupe", "method": "sort-u"}
    code, t = run(resolved)
    assert code == 0
    assert t.path(t.outputs["clean"]).read_text() == "a\nb\n"
    md = s.cluster.finish(t)["clean"]
    assert md[META_SEQ] == 1
    with open_ledger(s.ledger_url) as led:
        rec = parse_entry(led.entry(1), s.trust())
    assert rec.run == RunInfo(pipeline=PIPELINE, run_id=RUN_ID, task="dedupe")
    assert rec.params == resolved
    _downstream(s, t.outputs["clean"], md, tmp_path)
    size = s.size()

    # a failing user command seals nothing, even `false && ...` as the last line (which set -e lets pass)
    for then in ("\nfalse\necho unreachable", "\nfalse && echo unreachable"):
        code, t = run(resolved, then=then)
        assert code == 1 and s.size() == size and not t.output_file.exists()
        assert t.path(t.outputs["clean"]).exists()  # written, yet not sealed
    # a run context left unresolved (what a component default becomes on a cluster): exit 2
    code, t = run({**resolved, "run_id": "{{$.pipeline_job_uuid}}"})
    assert code == 2 and s.size() == size and not t.output_file.exists()


@pytest.fixture(autouse=True)
def _no_stray_sig_files(tmp_path: Path) -> Iterator[None]:
    yield
    store = tmp_path / "cluster" / "store"
    if store.exists():  # the launcher uploads the artifacts only; bundles travel in metadata
        assert not [p for p in store.rglob("*.sig")]


def test_plain_record_takes_the_run_context_from_options(setup: Setup) -> None:
    f = setup.cluster.base / "plain.txt"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("x")
    assert main(["record", "--stage", "ingest", "--output", f"o={f}", "--run-id", RUN_ID, "--task", "shell",
                 "--ledger", setup.ledger_url, "--key", str(setup.keys["ingest"].private),
                 "--signer-name", "ingest"]) == 0
    with open_ledger(setup.ledger_url) as led:
        assert parse_entry(led.entry(0), setup.trust()).run == RunInfo(run_id=RUN_ID, task="shell")
