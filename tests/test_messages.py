"""Messages people act on: every denial says in one line what failed and the command that shows why.

A kubectl user sees the webhook's denial message; a CI step sees `mlseal admit`'s. Both
end with ``(see why: COMMAND)``: for the model's records ``mlseal ledger trace
sha256:<digest> --trust <trust file>``, for the workload itself ``mlseal admit MANIFEST
--policy <policy>``, for the ledger as a whole ``mlseal ledger verify --trust <trust>``.
The README's "What a denial looks like" is generated here, so it cannot drift.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlseal.admission.decision import Decision, Finding, Reason, denial_line, see_why
from mlseal.admission.webhook import AdmissionController
from mlseal.ledger import open_ledger
from tests.fixtures_admission import AdmissionWorld, Model, deployment, isvc, make_world, review, sha

ROOT = Path(__file__).resolve().parent.parent
#: where the cluster mounts them (infra/k8s/base/deployment.yaml, config/policy.yaml)
CLUSTER_POLICY, CLUSTER_TRUST = "/etc/mlseal/policy.yaml", "/etc/mlseal/trust.yaml"
WEBHOOK_NAME = "models.admission.mlseal.dev"  # infra/k8s/base/webhook.yaml


def controller(world: AdmissionWorld, *, policy: str | None = None, trust: str | None = None) -> AdmissionController:
    p = world.policy
    p = dataclasses.replace(p, source=policy or p.source,
                            trust=dataclasses.replace(p.trust, source=trust or p.trust.source))
    c = AdmissionController(p, ledger_factory=lambda: open_ledger(world.ledger_url, create=False))
    c.follow()
    assert c.ready
    return c


def denial(c: AdmissionController, obj: dict[str, Any]) -> str:
    _, out = c.review(json.dumps(review(obj)).encode())
    r = out["response"]
    assert r["allowed"] is False, r
    message: str = r["status"]["message"]
    return message


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> AdmissionWorld:
    return make_world(tmp_path_factory.mktemp("messages"))


@pytest.mark.parametrize("model", ["lowacc", "untrusted", "nostage", "broken", "tampered", "noeval"])
def test_a_model_denial_names_the_trace_command(world: AdmissionWorld, model: str) -> None:
    c = controller(world)
    m = world.models[model]
    message = denial(c, isvc(m))
    assert "\n" not in message
    assert message.startswith("mlseal: ")
    assert message.endswith(f"(see why: mlseal ledger trace sha256:{m.sha256} --trust {world.policy.trust.source})")


def test_an_unknown_digest_and_a_wrong_uri_name_the_trace_command(world: AdmissionWorld) -> None:
    c = controller(world)
    unknown = Model(sha("never-recorded"), "s3://models/x")
    assert f"mlseal ledger trace sha256:{unknown.sha256} --trust " in denial(c, isvc(unknown))
    good = world.models["good"]
    assert f"mlseal ledger trace sha256:{good.sha256} --trust " in denial(c, isvc(good, uri="s3://elsewhere/m"))


def test_a_workload_denial_names_the_admit_command(world: AdmissionWorld) -> None:
    c = controller(world)
    bad = deployment(world.models["good"])
    bad["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/serving/server:latest"
    message = denial(c, bad)
    assert "\n" not in message
    assert message.endswith(f"(see why: mlseal admit MANIFEST --policy {world.policy.source})")
    assert "ledger trace" not in message


def test_a_ledger_that_cannot_be_read_names_ledger_verify(world: AdmissionWorld) -> None:
    p = world.policy
    c = AdmissionController(p, ledger_factory=lambda: (_ for _ in ()).throw(OSError("refused")))
    c.follow()
    message = denial(c, isvc(world.models["good"]))
    assert message.endswith(f"(see why: mlseal ledger verify --trust {p.trust.source})")


def test_paths_with_spaces_are_quoted_for_the_shell() -> None:
    cmds = see_why([Reason.GATE_FAILED, Reason.IMAGE_UNPINNED], sha256="ab" * 32, trust="/my trust.yaml",
                   policy="/p p.yaml", manifest="m.yaml")
    assert cmds == [f"mlseal ledger trace sha256:{'ab' * 32} --trust '/my trust.yaml'",
                    "mlseal admit m.yaml --policy '/p p.yaml'"]
    # a model reason without a known digest falls back to the admit command
    assert see_why([Reason.UNKNOWN_DIGEST], sha256=None, trust="t", policy="p", manifest="m") == [
        "mlseal admit m --policy p"]
    line = denial_line(Decision.deny(Finding(Reason.MALFORMED, "a\nb")), ["x"])
    assert line == "a b (see why: x)"


def admit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlseal.cli", "admit", *args], capture_output=True, text=True,
                          timeout=120)


def test_mlseal_admit_prints_one_line_per_denial_with_the_command(world: AdmissionWorld, tmp_path: Path) -> None:
    m = world.models["lowacc"]
    f = tmp_path / "model.yaml"
    f.write_text(yaml.safe_dump(isvc(m)))
    r = admit(str(f), "--policy", str(world.policy_path))
    assert r.returncode == 1
    first = next(line for line in r.stderr.splitlines() if line.startswith("InferenceService"))
    assert first.startswith("InferenceService prod/m: DENIED: gate accuracy >= 0.9 failed"), r.stderr
    assert first.endswith(f"(see why: mlseal ledger trace sha256:{m.sha256} --trust {world.policy.trust.source})")
    r = admit(str(f), "--policy", str(world.policy_path), "--json")
    assert json.loads(r.stdout)["see_why"] == [
        f"mlseal ledger trace sha256:{m.sha256} --trust {world.policy.trust.source}"]


# --- the README's "What a denial looks like" ---------------------------------------------

def kubectl_error(message: str) -> str:
    """What kubectl prints when a validating webhook denies a create (k8s.io/apiserver's format)."""
    return (f'Error from server (Forbidden): error when creating "model.yaml": admission webhook '
            f'"{WEBHOOK_NAME}" denied the request: {message}')


def readme_denials(world: AdmissionWorld) -> str:
    c = controller(world, policy=CLUSTER_POLICY, trust=CLUSTER_TRUST)
    gate = denial(c, isvc(world.models["lowacc"], name="churn"))
    unpinned = deployment(world.models["good"])
    unpinned["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/serving/server:latest"
    return "\n".join([
        "$ kubectl apply -f model.yaml",
        kubectl_error(gate),
        "$ kubectl apply -f model.yaml",
        kubectl_error(denial(c, unpinned)),
    ])


def test_readme_shows_a_real_denial(world: AdmissionWorld) -> None:
    want = readme_denials(world)
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## What a denial looks like\n.*?```text\n(.*?)\n```", readme, re.S)
    assert block is not None, "README.md lacks the 'What a denial looks like' section"
    assert block.group(1) == want, f"regenerate the README block:\n{want}"


if __name__ == "__main__":  # print the README block: python tests/test_messages.py
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(readme_denials(make_world(Path(d))))
