"""`mlseal.kfp`: a user's own step sealed with one decorator, and the cluster wiring.

The end-to-end tests run a user's own pipeline the way a user would after `mlseal demo`:
`source W/mlseal.env`, then KFP's local runner in a fresh process. The backend-faithful
run of the same components is in tests/test_kfp_backend*.py.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, List  # noqa: UP035 (KFP reads typing.List in artifact annotations)

import pytest
import yaml
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, InputPath, Model, Output

from mlseal.demo import Workdir, _prepare
from mlseal.errors import ConfigurationError
from mlseal.kfp import RUN_CONTEXT, Services, sealed_component, wire, wire_compiled
from mlseal.ledger import open_ledger
from mlseal.ledger.entry import parse_entry
from mlseal.ledger.verify import verify_ledger
from mlseal.signing.trust import load_trust

USER_PIPELINE = textwrap.dedent('''
    import sys
    from kfp import dsl, local
    from kfp.dsl import Dataset, Input, Model, Output
    from mlseal.kfp import sealed_component

    @sealed_component(stage="ingest", media_types={"rows": "text/csv"})
    def collect(rows: Output[Dataset], n: int = 3):
        """My own ingest step."""
        with open(rows.path, "w") as f:
            f.write("x\\n" + "".join(f"{i}\\n" for i in range(n)))

    @sealed_component(stage="train")
    def fit(rows: Input[Dataset], model: Output[Model], mode: str = "mean"):
        from mlseal.kfp import current_stage  # a KFP function body is self-contained

        values = [int(v) for v in open(rows.path).read().split()[1:]]
        if mode == "fail":
            open(model.path, "w").write("half a model")
            raise RuntimeError("training diverged")
        current_stage().metric("n", len(values))
        open(model.path, "w").write(str(sum(values) / len(values)))

    @dsl.pipeline(name="users-own")
    def users_own(mode: str = "mean"):
        rows = collect(n=4)
        fit(rows=rows.outputs["rows"], mode=mode)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[1], raise_on_error=True)
    users_own(mode=sys.argv[2])
''')


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    wd = Workdir(tmp_path_factory.mktemp("kfp") / "wd")
    _prepare(wd, {}, lambda _: None, {"accuracy": {"min": 0.9}})
    return wd


def _run_user_pipeline(wd: Workdir, tmp: Path, mode: str) -> subprocess.CompletedProcess[str]:
    script = tmp / "users_own.py"
    script.write_text(USER_PIPELINE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSEAL_", "VAULT_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    cmd = f'. "{wd.env_file}" && cd "{tmp}" && "{sys.executable}" users_own.py "{tmp / "root"}" {mode}'
    return subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_users_own_steps_seal_into_the_demo_ledger(demo_workdir: Workdir, tmp_path: Path) -> None:
    wd = demo_workdir
    with open_ledger(wd.ledger_url) as led:
        before = led.size()
    proc = _run_user_pipeline(wd, tmp_path, "mean")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trust = load_trust(wd.trust)
    with open_ledger(wd.ledger_url) as led:
        assert verify_ledger(led, trust).ok
        records = [parse_entry(led.entry(s), trust) for s in range(before, led.size())]
    collect, fit = records
    assert (collect.stage, collect.signer.name, fit.stage, fit.signer.name) == ("ingest", "ingest", "train", "train")
    assert collect.outputs[0].media_type == "text/csv" and collect.params == {"n": 4}
    assert fit.inputs[0].producer_seq == collect.seq and fit.inputs[0].sha256 == collect.outputs[0].sha256
    assert fit.metrics == {"n": 4.0} and fit.params == {"mode": "mean"}
    assert fit.component.secret_store == "dev" and fit.component.source_sha256
    # the run context is the real run, resolved: never a placeholder
    for r in records:
        assert r.run.run_id and r.run.pipeline and r.run.task and "{{" not in str(r.run)
    assert collect.run.run_id == fit.run.run_id and fit.run.task == "fit"
    # each output artifact's KFP metadata carries digest, seq and bundle for the next task
    outputs = list((tmp_path / "root").rglob("executor_output.json"))
    metas = [a["metadata"] for p in outputs for o in yaml.safe_load(p.read_text()).get("artifacts", {}).values()
             for a in o["artifacts"]]
    assert {m["mlseal.seq"] for m in metas} == {collect.seq, fit.seq}
    assert all(m["mlseal.bundle"].startswith("{") and len(m["mlseal.sha256"]) == 64 for m in metas)


@pytest.mark.slow
def test_failing_user_step_is_recorded_and_leaves_no_output(demo_workdir: Workdir, tmp_path: Path) -> None:
    wd = demo_workdir
    proc = _run_user_pipeline(wd, tmp_path, "fail")
    assert proc.returncode != 0 and "training diverged" in proc.stdout + proc.stderr
    trust = load_trust(wd.trust)
    with open_ledger(wd.ledger_url) as led:
        last = parse_entry(led.entry(led.size() - 1), trust)
        assert verify_ledger(led, trust).ok
    assert last.stage == "train" and last.status.value == "failed" and last.outputs == ()
    assert last.error == "RuntimeError: training diverged"
    models = [p for p in (tmp_path / "root").rglob("model") if p.is_file()]
    assert models == []  # the half-written model was removed, so nothing is uploaded


def test_decorator_refuses_what_cannot_be_sealed() -> None:
    def path_based(data: InputPath("Dataset"), n: int = 1) -> None:  # type: ignore[valid-type]
        pass

    with pytest.raises(ConfigurationError, match="InputPath/OutputPath"):
        sealed_component(path_based, stage="process")

    def clash(data: Input[Dataset], mlseal_run_id: str = "") -> None:
        pass

    with pytest.raises(ConfigurationError, match="may not define parameter 'mlseal_run_id'"):
        sealed_component(clash, stage="process")

    def ok(data: Input[Dataset], out: Output[Model]) -> None:
        pass

    with pytest.raises(ConfigurationError, match="media_types names no output"):
        sealed_component(ok, stage="process", media_types={"data": "text/csv"})
    with pytest.raises(ConfigurationError, match="stage must match"):
        sealed_component(ok, stage="Not A Stage")


def _pipeline_with_wiring(tmp_path: Path) -> tuple[str, str]:
    @sealed_component(stage="train")
    def fit(rows: Input[Dataset], model: Output[Model]) -> None:
        pass

    @sealed_component(stage="ingest")
    def collect(rows: Output[Dataset]) -> None:
        pass

    services = Services(vault_addr="https://vault.vault.svc:8200", image="registry.example/mlseal@sha256:" + "ab" * 32)

    @dsl.pipeline(name="wired")
    def wired() -> None:
        c = collect()
        wire(c, services)
        wire(fit(rows=c.outputs["rows"]), services)

    @dsl.pipeline(name="wired")
    def plain() -> None:
        c = collect()
        fit(rows=c.outputs["rows"])

    compiler.Compiler().compile(wired, str(tmp_path / "wired.yaml"))
    compiler.Compiler().compile(plain, str(tmp_path / "plain.yaml"))
    after = wire_compiled(tmp_path / "plain.yaml", services)
    return (tmp_path / "wired.yaml").read_text(), after


def test_wiring_puts_every_service_in_the_ir(tmp_path: Path) -> None:
    wired, _ = _pipeline_with_wiring(tmp_path)
    spec, platform = list(yaml.safe_load_all(wired))
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    fit = executors["exec-fit"]
    assert fit["secretAsEnv"][0]["secretName"] == "mlseal-ledger-writer"
    assert {m["envVar"] for m in fit["secretAsEnv"][0]["keyToEnv"]} == {"PGUSER", "PGPASSWORD"}
    assert {v["mountPath"] for v in fit["configMapAsVolume"]} == {"/etc/mlseal/trust", "/etc/mlseal/ledger-ca"}
    assert fit["podMetadata"]["labels"] == {"mlseal.dev/vault-token": "true"}
    env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"]["exec-fit"]["container"]["env"]}
    assert env["MLSEAL_VAULT_K8S_ROLE"] == "mlseal-train"
    assert env["MLSEAL_VAULT_K8S_JWT"] == "/var/run/secrets/vault/token"
    assert env["MLSEAL_LEDGER"].startswith("postgresql://") and "@" not in env["MLSEAL_LEDGER"]
    assert "sslmode=verify-full" in env["MLSEAL_LEDGER"]
    assert "sslrootcert=/etc/mlseal/ledger-ca/ca.crt" in env["MLSEAL_LEDGER"]
    collect = spec["deploymentSpec"]["executors"]["exec-collect"]["container"]
    collect_env = {e["name"]: e["value"] for e in collect["env"]}
    assert collect_env["MLSEAL_VAULT_K8S_ROLE"] == "mlseal-ingest"
    for task in spec["root"]["dag"]["tasks"].values():
        for p, placeholder in RUN_CONTEXT.items():
            assert task["inputs"]["parameters"][p] == {"runtimeValue": {"constant": placeholder}}


def test_wiring_compiled_ir_gives_the_same_result_as_wiring_tasks(tmp_path: Path) -> None:
    wired, after = _pipeline_with_wiring(tmp_path)
    a, b = list(yaml.safe_load_all(wired)), list(yaml.safe_load_all(after))
    assert a[1] == b[1]
    for label in ("exec-fit", "exec-collect"):
        env_a = sorted((e["name"], e["value"]) for e in a[0]["deploymentSpec"]["executors"][label]["container"]["env"])
        env_b = sorted((e["name"], e["value"]) for e in b[0]["deploymentSpec"]["executors"][label]["container"]["env"])
        assert env_a == env_b


def test_services_refuse_credentials_in_the_ledger_url() -> None:
    with pytest.raises(ConfigurationError, match="must not carry credentials") as info:
        Services(vault_addr="https://v:8200", ledger_url="postgresql://writer:hunter2@ledger/mlseal")
    assert "hunter2" not in str(info.value)


def test_wire_needs_a_stage_for_a_step_that_is_not_sealed(tmp_path: Path) -> None:
    @dsl.component(base_image="python:3.11")
    def plain() -> None:
        pass

    @dsl.pipeline(name="p")
    def p() -> None:
        with pytest.raises(ConfigurationError, match="pass stage="):
            wire(plain(), Services(vault_addr="https://v:8200"))

    compiler.Compiler().compile(p, str(tmp_path / "p.yaml"))


def test_parallel_for_collected_inputs_and_exit_handlers_compile_sealed(tmp_path: Path) -> None:
    """Sealed tasks inside ParallelFor, fed by dsl.Collected and under an ExitHandler: each
    task still passes its run context and none is served from KFP's cache."""
    @sealed_component(stage="ingest")
    def part(out: Output[Dataset], i: int) -> None:
        with open(out.path, "w") as f:
            f.write(str(i))

    @sealed_component(stage="process")
    def merge(parts: Input[List[Dataset]], merged: Output[Dataset]) -> None:  # noqa: UP006 (KFP reads typing.List)
        pass

    @sealed_component(stage="process")
    def notify(note: str = "done") -> None:
        pass

    @dsl.pipeline(name="fan-in")
    def fan_in() -> None:
        with dsl.ExitHandler(notify()):
            with dsl.ParallelFor([1, 2, 3]) as i:
                t = part(i=i)
            merge(parts=dsl.Collected(t.outputs["out"]))

    compiler.Compiler().compile(fan_in, str(tmp_path / "p.yaml"))
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    tasks = []

    def walk(dag: dict[str, Any]) -> None:
        for name, task in dag.get("tasks", {}).items():
            comp = spec["components"][task["componentRef"]["name"]]
            if "dag" in comp:
                walk(comp["dag"])
            else:
                tasks.append((name, task))

    walk(spec["root"]["dag"])
    assert sorted(n for n, _ in tasks) == ["merge", "notify", "part"]
    for name, task in tasks:
        for p, placeholder in RUN_CONTEXT.items():
            assert task["inputs"]["parameters"][p] == {"runtimeValue": {"constant": placeholder}}, (name, p)
        assert not task.get("cachingOptions", {}).get("enableCache"), name
    merge_source = spec["deploymentSpec"]["executors"]["exec-merge"]["container"]["command"][-1]
    assert "'inputs': ['parts']" in merge_source
