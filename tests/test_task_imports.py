"""What a sealed KFP task imports: only what sealing needs (each task is a fresh process,
so every module imported there is paid for by every task of every run).

The child process runs `mlseal.kfp._task.run` as the body of a sealed component does in
a pod (``_KFP_RUNTIME=true``, services from the environment): one input verified, one
output signed, one record appended. Then it reports `sys.modules`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlseal.kfp.metadata import META_BUNDLE, META_SHA256
from mlseal.stage import Stage
from tests.fixtures_pipeline import SealedEnv

ROOT = Path(__file__).resolve().parents[1]

#: never on a sealed task's path: other services (Vault client, PostgreSQL, Sigstore
#: keyless, model-signing), the ML stack, admission, KFP's component machinery, and
#: stdlib modules whose import costs a task milliseconds for nothing it needs
NOT_ON_TASK_PATH = (
    "hvac",
    "psycopg",
    "sigstore",
    "model_signing",
    "numpy",
    "onnx",
    "mlseal.admission",
    "mlseal.ml",
    "kfp",
    "uuid",
    "typing_extensions",
    "concurrent.futures",
)

#: `import mlseal.kfp._task` (the first line of every sealed component's body) stays light
NOT_ON_IMPORT = (*NOT_ON_TASK_PATH, "yaml", "cryptography", "sqlite3", "mlseal.stage", "mlseal.ledger")


def _child(script: str, env: dict[str, str]) -> set[str]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True,
                         text=True, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _task_env(sealed_env: SealedEnv) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "MLSEAL_"))}
    return {
        **keep,
        "PYTHONPATH": os.pathsep.join([str(ROOT), keep.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "_KFP_RUNTIME": "true",
        "MLSEAL_LEDGER": sealed_env.ledger_url,
        "MLSEAL_TRUST": str(sealed_env.trust_file),
        "MLSEAL_DEV_SECRETS": str(sealed_env.root / "secrets"),
        "MLSEAL_VAULT_TRANSIT_KEY": "mlseal-signing",
        "MLSEAL_SIGNER_NAME": "pipeline",
    }


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


def test_importing_the_task_module_is_light(sealed_env: SealedEnv) -> None:
    modules = _child("""
        import json, sys
        import mlseal.kfp._task
        print(json.dumps(sorted(sys.modules)))
    """, _task_env(sealed_env))
    assert "mlseal.kfp._task" in modules
    assert _loaded(modules, NOT_ON_IMPORT) == []


def test_a_sealed_task_imports_only_what_sealing_needs(sealed_env: SealedEnv, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream" / "data"
    with Stage("ingest", name="source", sealing=sealed_env.sealing) as st:
        st.output("data", upstream).write_bytes(b"rows\n" * 200)
    assert st.result is not None
    out = st.result.outputs["data"]
    arguments = {
        "data": {"path": str(upstream), "uri": str(upstream),
                 "metadata": {META_SHA256: out.sha256, META_BUNDLE: out.bundle.read_text()}},
        "copied": {"path": str(tmp_path / "task" / "copied"), "uri": str(tmp_path / "task" / "copied"),
                   "metadata": {}},
    }
    (tmp_path / "task").mkdir()
    modules = _child(f"""
        import json, sys
        from types import SimpleNamespace

        from mlseal.kfp import _task

        args = {{k: SimpleNamespace(**v) for k, v in json.loads({json.dumps(json.dumps(arguments))}).items()}}

        def body(data, copied):
            with open(data.path, "rb") as f, open(copied.path, "wb") as g:
                g.write(f.read())

        spec = {{"stage": "process", "name": "copy", "inputs": ["data"], "outputs": ["copied"]}}
        _task.run(body, spec, args, "run-1", "pipe", "copy")
        assert args["copied"].metadata["mlseal.seq"] == 1, args["copied"].metadata
        print(json.dumps(sorted(sys.modules)))
    """, _task_env(sealed_env))
    # it did seal: the stage verified, signed and appended with the services it needs
    assert {"mlseal.stage", "mlseal.signing.artifact", "mlseal.ledger._sqlite", "mlseal.secrets._dev"} <= modules
    assert sealed_env.ledger.size() == 2
    assert _loaded(modules, NOT_ON_TASK_PATH) == []


@pytest.mark.parametrize("name", ["uuid", "typing_extensions", "concurrent.futures"])
def test_the_check_sees_a_module_that_is_imported(name: str) -> None:
    assert _loaded({"a", name, f"{name}.sub"}, NOT_ON_TASK_PATH) == sorted([name, f"{name}.sub"])
