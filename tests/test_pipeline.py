"""The reference pipeline: compiled IR, and a KFP-local run where an attacker alters an artifact."""

# (no `from __future__ import annotations`: KFP reads the real annotations of the test pipeline)

import os
from pathlib import Path

import pytest
import yaml
from kfp import dsl, local
from kfp.dsl import Dataset, Input

from mlseal.components import COMPONENTS as C
from mlseal.demo import Workdir, _prepare, _task_env
from mlseal.kfp import RUN_CONTEXT
from mlseal.ledger import open_ledger
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.record import Status
from mlseal.ledger.verify import verify_ledger
from mlseal.pipelines import compile_reference
from mlseal.signing.trust import load_trust

GOLDEN = Path(__file__).parent / "golden" / "reference-pipeline.yaml"


def _body(text: str) -> str:
    """The IR without KFP's leading comment block (it prints dict defaults in set order)."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def test_reference_pipeline_compiles_to_golden_ir() -> None:
    text = compile_reference()
    assert _body(text) == _body(GOLDEN.read_text()), (
        "reference pipeline IR changed; regenerate tests/golden/reference-pipeline.yaml")
    spec = yaml.safe_load(text)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"ingest", "anonymize", "encrypt", "validate", "train", "evaluate", "deploy"}
    # the order of the lifecycle is enforced by data dependencies
    assert tasks["encrypt"]["dependentTasks"] == ["anonymize"]
    assert set(tasks["train"]["dependentTasks"]) == {"encrypt", "validate"}
    assert set(tasks["deploy"]["dependentTasks"]) == {"evaluate", "train"}
    # On the KFP backend the driver resolves placeholders only in arguments a task passes
    # (runtimeValue.constant), never in a parameter default: every task passes its run
    # context, no component defaults it, and no sealed task is served from KFP's cache.
    for name, task in tasks.items():
        for p, placeholder in RUN_CONTEXT.items():
            assert task["inputs"]["parameters"][p] == {"runtimeValue": {"constant": placeholder}}, (name, p)
        assert not task.get("cachingOptions", {}).get("enableCache"), name
        comp = spec["components"][task["componentRef"]["name"]]
        for p in RUN_CONTEXT:
            assert "defaultValue" not in comp["inputDefinitions"]["parameters"][p], (name, p)
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["hmac_key_path"]["defaultValue"] == "mlseal/anonymize/hmac"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def attacker(data: Input[Dataset]) -> None:
    """Not a sealed stage: flips one byte of an artifact between two stages."""
    with open(data.path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0x01]))


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def swapper(data: Input[Dataset], other: Input[Dataset]) -> None:
    """Not a sealed stage: replaces an artifact with another recorded, signed one (and its bundle)."""
    import shutil

    shutil.copyfile(other.path, data.path)
    shutil.copyfile(other.path + ".sig", data.path + ".sig")


@dsl.pipeline(name="swapped")
def swapped(source: str) -> None:
    raw = C["ingest"](source=source)
    anon = C["anonymize"](data=raw.outputs["dataset"])
    hit = swapper(data=anon.outputs["anonymized"], other=raw.outputs["dataset"])
    enc = C["encrypt"](data=anon.outputs["anonymized"])
    enc.after(hit)


@dsl.pipeline(name="tampered")
def tampered(source: str) -> None:
    raw = C["ingest"](source=source)
    anon = C["anonymize"](data=raw.outputs["dataset"])
    hit = attacker(data=anon.outputs["anonymized"])
    enc = C["encrypt"](data=anon.outputs["anonymized"])
    enc.after(hit)


@pytest.fixture
def local_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workdir:
    """A prepared demo workdir (dev secrets, reference recorded), the task environment set,
    and kfp.local initialised to run tasks as subprocesses in it."""
    wd = Workdir(tmp_path / "wd")
    src, _ = _prepare(wd, {}, lambda _: None, {"accuracy": {"min": 0.9}})
    for k, v in _task_env(wd, src).items():
        monkeypatch.setenv(k, v)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(wd.artifacts))
    return wd


@pytest.mark.slow
def test_altered_artifact_between_stages_fails_the_run(local_workdir: Workdir,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    wd = local_workdir
    assert os.environ["MLSEAL_VAULT_TRANSIT_KEY"] == ""  # each stage signs with its own key
    with pytest.raises(RuntimeError, match="encrypt"):
        tampered(source=str(wd.source))
    trust = load_trust(wd.trust)
    with open_ledger(wd.ledger_url) as led:
        records = [parse_entry(e, trust) for _, e in led.entries()]
        # the ledger itself still verifies: signatures, chain, tree
        assert verify_ledger(led, trust).ok
    # reference, ingest, anonymize; the refusing encrypt stage wrote nothing at all
    assert [r.component.name for r in records] == ["reference", "ingest", "anonymize"]
    assert all(r.status is Status.OK for r in records)
    assert not list(wd.artifacts.rglob("encrypted*"))
    out = capfd.readouterr()
    assert "input 'data' refused" in out.out + out.err and "changed or swapped" in out.out + out.err


@pytest.mark.slow
def test_swapping_in_another_signed_artifact_fails_the_run(local_workdir: Workdir,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """The raw (identifying) dataset is recorded and signed too: it must not pass for the anonymized one."""
    wd = local_workdir
    with pytest.raises(RuntimeError, match="encrypt"):
        swapped(source=str(wd.source))
    out = capfd.readouterr()
    assert "changed or swapped for another artifact" in out.out + out.err
    trust = load_trust(wd.trust)
    with open_ledger(wd.ledger_url) as led:
        assert [parse_entry(e, trust).component.name for _, e in led.entries()] == ["reference", "ingest", "anonymize"]
