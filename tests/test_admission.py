"""The admission engine, policy files, manifest forms and `mlseal admit`, without a server.

Ledgers are built through the ledger library (tests/fixtures_admission.py); tampering is
done the way an attacker with database access would: by editing stored entry bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlseal.admission import Decision, Reason, decide, load_policy, model_ref
from mlseal.admission.manifest import ManifestError
from mlseal.errors import ConfigurationError
from mlseal.ledger import open_ledger
from tests.fixtures_admission import SERVER_IMAGE, AdmissionWorld, Model, deployment, isvc, sha, write_policy


def check(world: AdmissionWorld, manifest: dict[str, Any], **kw: Any) -> Decision:
    with open_ledger(world.ledger_url, create=False) as led:
        return decide(manifest, world.policy, ledger=led, **kw)


def test_good_model_is_admitted(admission_world: AdmissionWorld) -> None:
    d = check(admission_world, isvc(admission_world.models["good"]))
    assert d.allowed, d.reasons
    assert d.reasons == [] and d.warnings == []
    assert d.to_json() == {"allowed": True, "reasons": []}


def test_decide_opens_the_policy_ledger_by_default(admission_world: AdmissionWorld) -> None:
    assert decide(isvc(admission_world.models["good"]), admission_world.policy).allowed
    assert not decide(isvc(admission_world.models["lowacc"]), admission_world.policy).allowed


@pytest.mark.parametrize(
    ("scenario", "code", "words"),
    [
        ("nostage", Reason.MISSING_STAGE, "'anonymize' is missing"),
        ("lowacc", Reason.GATE_FAILED, "accuracy = 0.52"),
        ("untrusted", Reason.UNTRUSTED_SIGNER, "trust file"),
        ("broken", Reason.BROKEN_LINEAGE, "no record in the ledger that produced it"),
        ("tampered", Reason.TAMPERED, "does not verify"),
        ("resigned", Reason.TAMPERED, "prev"),
        ("noeval", Reason.NO_EVALUATION, "no trusted evaluate record"),
    ],
)
def test_denials_say_what_failed(admission_world: AdmissionWorld, scenario: str, code: Reason, words: str) -> None:
    d = check(admission_world, isvc(admission_world.models[scenario]))
    assert not d.allowed
    assert code in d.codes, (d.codes, d.reasons)
    text = " | ".join(d.reasons)
    assert words in text
    assert all(";" in r for r in d.reasons), "every reason also says what would fix it"


def test_unknown_digest(admission_world: AdmissionWorld) -> None:
    d = check(admission_world, isvc(Model(sha("never-recorded"), "s3://models/x")))
    assert not d.allowed and d.codes == (Reason.UNKNOWN_DIGEST,)
    assert "not in the ledger" in d.reasons[0] and "mlseal digest" in d.reasons[0]


def test_uri_mismatch(admission_world: AdmissionWorld) -> None:
    d = check(admission_world, isvc(admission_world.models["good"], uri="s3://elsewhere/model.joblib"))
    assert not d.allowed and d.codes == (Reason.URI_MISMATCH,)
    assert "s3://models/good/model.joblib" in d.reasons[0]


def test_uri_with_credentials_is_redacted(admission_world: AdmissionWorld) -> None:
    d = check(admission_world, isvc(admission_world.models["good"], uri="https://user:hunter2@host/m?sig=abc"))
    assert not d.allowed
    assert "hunter2" not in " ".join(d.reasons) and "sig=abc" not in " ".join(d.reasons)


@pytest.mark.parametrize("form", ["model", "sklearn", "xgboost", "container"])
def test_inference_service_predictor_forms(admission_world: AdmissionWorld, form: str) -> None:
    good = admission_world.models["good"]
    assert check(admission_world, isvc(good, form=form)).allowed
    assert not check(admission_world, isvc(good, form=form, uri="s3://other")).allowed


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
@pytest.mark.parametrize("on_template", [False, True])
def test_annotated_workloads(admission_world: AdmissionWorld, kind: str, on_template: bool) -> None:
    w = admission_world.models
    assert check(admission_world, deployment(w["good"], kind=kind, on_template=on_template)).allowed
    d = check(admission_world, deployment(w["lowacc"], kind=kind, on_template=on_template))
    assert not d.allowed and Reason.GATE_FAILED in d.codes


def test_unannotated_deployment_is_denied_unless_the_namespace_serves_no_models(
        admission_world: AdmissionWorld, tmp_path: Path) -> None:
    plain = deployment(admission_world.models["good"])
    del plain["metadata"]["annotations"]
    tpl = plain["spec"]["template"]
    del tpl["metadata"]["annotations"]
    tpl["spec"] = {"containers": [{"name": "app", "image": SERVER_IMAGE}]}
    d = check(admission_world, plain)
    assert not d.allowed and d.codes == (Reason.NO_MODEL,), d.reasons
    assert "unannotated_workloads: allow" in d.reasons[0]
    p = write_policy(admission_world.dir, "lenient.yaml", unannotated_workloads="allow")
    lenient = load_policy(p)
    assert decide(plain, lenient).allowed
    # allowed as "no model", but still only allowed, pinned images
    tpl["spec"]["containers"][0]["image"] = "evil/server:latest"
    d = decide(plain, lenient)
    assert not d.allowed and d.codes == (Reason.IMAGE_UNPINNED,)


def test_warn_mode_allows_and_reports(admission_world: AdmissionWorld) -> None:
    d = check(admission_world, isvc(admission_world.models["lowacc"], namespace="staging"))
    assert d.allowed and d.reasons == []
    assert any("accuracy = 0.52" in w for w in d.warnings)
    assert d.to_json()["warnings"] == d.warnings
    # the namespace argument overrides the manifest's own
    assert not check(admission_world, isvc(admission_world.models["lowacc"], namespace="staging"),
                     namespace="prod").allowed


def test_per_namespace_rules(admission_world: AdmissionWorld) -> None:
    # lab: accuracy >= 0.4 only, no required stages (robust_accuracy gate dropped too)
    lab = check(admission_world, isvc(admission_world.models["lowacc"], namespace="lab"))
    assert lab.allowed, lab.reasons
    nostage = check(admission_world, isvc(admission_world.models["nostage"], namespace="lab"))
    assert nostage.allowed, nostage.reasons
    # trust and lineage still apply everywhere
    assert not check(admission_world, isvc(admission_world.models["untrusted"], namespace="lab")).allowed


def test_trust_override(admission_world: AdmissionWorld) -> None:
    from mlseal.signing.trust import TrustRoot

    only_rogue = TrustRoot.of(admission_world.rogue.verifier("rogue"))
    d = check(admission_world, isvc(admission_world.models["good"]), trust=only_rogue)
    assert not d.allowed and Reason.UNTRUSTED_SIGNER in d.codes


def test_ledger_unreachable_denies(admission_world: AdmissionWorld) -> None:
    class Down:
        def producers_of(self, sha256_hex: str) -> list[int]:
            from mlseal.errors import InfrastructureError

            raise InfrastructureError("ledger postgresql://db/x: connection refused")

        consumers_of = producers_of

        def entry(self, seq: int) -> bytes:
            raise AssertionError

        def size(self) -> int:
            return len(self.producers_of(""))

    d = decide(isvc(admission_world.models["good"]), admission_world.policy, ledger=Down())
    assert not d.allowed and d.codes == (Reason.LEDGER_UNAVAILABLE,)
    assert "connection refused" in d.reasons[0]
    # fail closed in warn mode too
    d = decide(isvc(admission_world.models["good"], namespace="staging"), admission_world.policy, ledger=Down())
    assert not d.allowed


def test_postgres_ledger_unreachable_denies(admission_world: AdmissionWorld) -> None:
    p = write_policy(admission_world.dir, "pg-down.yaml", ledger="postgresql://postgres@127.0.0.1:1/test")
    d = decide(isvc(admission_world.models["good"]), load_policy(p))
    assert not d.allowed and d.codes == (Reason.LEDGER_UNAVAILABLE,)


# --- manifests ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda m: m["metadata"].pop("annotations"), "no mlseal.dev/model-sha256"),
        (lambda m: m["metadata"]["annotations"].update({"mlseal.dev/model-sha256": "abc"}), "64 lowercase hex"),
        (lambda m: m["metadata"]["annotations"].update({"mlseal.dev/model-sha256": 5}), "must be a string"),
        (lambda m: m.update(apiVersion="serving.kserve.io/v1alpha2"), "not supported"),
        (lambda m: m["spec"].update(predictor=[]), "spec.predictor must be an object"),
        (lambda m: m["spec"]["predictor"].update(sklearn={"storageUri": "s3://b"}), "more than one model"),
        (lambda m: m["spec"]["predictor"]["model"].pop("storageUri"), "names no model"),
        (lambda m: m.update(kind="ConfigMap"), "not handled"),
        (lambda m: m.pop("metadata"), "metadata must be an object"),
    ],
)
def test_malformed_manifests_are_denied(mutate: Any, words: str) -> None:
    m = isvc(Model(sha("x"), "s3://a"))
    mutate(m)
    with pytest.raises(ManifestError, match=words):
        model_ref(m)


def test_sha256_prefix_accepted() -> None:
    m = isvc(Model("sha256:" + sha("x"), "s3://a"))
    ref = model_ref(m)
    assert ref is not None and ref.sha256 == sha("x")


def test_workload_annotations_must_agree() -> None:
    d = deployment(Model(sha("x"), "s3://a"))
    d["spec"]["template"]["metadata"]["annotations"] = {"mlseal.dev/model-sha256": sha("y")}
    with pytest.raises(ManifestError, match="differs"):
        model_ref(d)
    d = deployment(Model(sha("x"), "s3://a"))
    del d["metadata"]["annotations"]["mlseal.dev/model-uri"]
    with pytest.raises(ManifestError, match=r"no mlseal\.dev/model-uri"):
        model_ref(d)


# --- policy files --------------------------------------------------------------------

def test_policy_paths_resolve_against_the_file(admission_world: AdmissionWorld) -> None:
    p = admission_world.policy
    assert p.ledger_url == admission_world.ledger_url
    assert p.default.require_stages == ("ingest", "anonymize", "train", "evaluate")
    assert [g.describe() for g in p.default.gates] == ["accuracy >= 0.9", "robust_accuracy >= 0.7"]
    assert p.fingerprint and len(p.fingerprint) == 64


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"gate": {"accuracy": 0.9}}, "unknown keys"),
        ({"mode": "audit"}, "mode must be one of enforce, warn"),
        ({"gates": {"accuracy": "high"}}, "finite numbers"),
        ({"gates": {"accuracy": 0.9}}, r"gates\.accuracy: a bare number .* write accuracy: \{min: 0\.9\}"),
        ({"namespaces": {"prod": {"gates": {"mia_advantage": 0.3}}}},
         r"namespaces\.prod\.gates\.mia_advantage: a bare number .* \{max: 0\.3\}"),
        ({"gates": {"loss": {"min": 0.5, "max": 0.1}}}, "no model could pass"),
        ({"require_stages": "train"}, "must be a list"),
        ({"namespaces": {"Prod!": {}}}, "not a Kubernetes namespace"),
        ({"namespaces": {"prod": {"trust": "x"}}}, "unknown keys"),
        ({"ledger": 5}, "ledger must be a ledger URL"),
        ({"trust": "missing.yaml"}, "cannot read trust file"),
    ],
)
def test_bad_policies_are_refused(admission_world: AdmissionWorld, extra: dict[str, Any], words: str) -> None:
    p = write_policy(admission_world.dir, "bad.yaml", **extra)
    with pytest.raises(ConfigurationError, match=words):
        load_policy(p)


def test_gate_bounds(admission_world: AdmissionWorld) -> None:
    p = write_policy(admission_world.dir, "bounds.yaml", gates={"accuracy": {"min": 0.9, "max": 0.94}})
    d = decide(isvc(admission_world.models["good"]), load_policy(p))
    assert not d.allowed and "accuracy >= 0.9 and <= 0.94" in d.reasons[0]


# --- mlseal admit --------------------------------------------------------------------

def admit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlseal.cli", "admit", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_admit_cli_exit_codes_and_json(admission_world: AdmissionWorld, tmp_path: Path) -> None:
    w = admission_world
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(isvc(w.models["good"])))
    r = admit(str(good), "--policy", str(w.policy_path), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"allowed": True, "reasons": []}

    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump_all([isvc(w.models["good"]), deployment(w.models["lowacc"])]))
    r = admit(str(multi), "--policy", str(w.policy_path), "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["allowed"] is False
    assert [d["allowed"] for d in out["documents"]] == [True, False]
    assert any("Deployment prod/server" in x and "accuracy" in x for x in out["reasons"])
    assert "DENIED" in r.stderr

    # JSON input on stdin, a List, and the warn namespace
    lst = {"apiVersion": "v1", "kind": "List", "items": [isvc(w.models["lowacc"], namespace="staging")]}
    r = admit("-", "--policy", str(w.policy_path), "--json", stdin=json.dumps(lst))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["warnings"]


def test_admit_cli_configuration_errors(admission_world: AdmissionWorld, tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump(isvc(admission_world.models["good"])))
    assert admit(str(m), "--policy", str(tmp_path / "nope.yaml")).returncode == 2
    nope = tmp_path / "nope.yaml"
    r = admit(str(nope), "--policy", str(admission_world.policy_path))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"mlseal: error: cannot read manifest {nope}: No such file or directory"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    r = admit(str(binary), "--policy", str(admission_world.policy_path), "--json")
    assert r.returncode == 2 and r.stdout == "" and "is not UTF-8 text" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    assert admit(str(bad), "--policy", str(admission_world.policy_path)).returncode == 2
    missing = write_policy(tmp_path, "p.yaml", ledger="sqlite:///no/such/dir/ledger.db")
    (tmp_path / "trust.yaml").write_text((admission_world.dir / "trust.yaml").read_text())
    (tmp_path / "keys").symlink_to(admission_world.dir / "keys")
    r = admit(str(m), "--policy", str(missing))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_lineage_verdict_agrees_with_ledger_trace(admission_world: AdmissionWorld) -> None:
    """The engine walks lineage itself (no forward walk, trust-filtered producers, prev
    links); on lineage breaks it must agree with the ledger's own `trace`."""
    from mlseal.ledger.lineage import trace

    with open_ledger(admission_world.ledger_url, create=False) as led:
        for name in ("good", "nostage", "lowacc", "noeval", "broken"):
            model = admission_world.models[name]
            d = check(admission_world, isvc(model))
            assert trace(led, model.sha256, admission_world.policy.trust).ok == (Reason.BROKEN_LINEAGE not in d.codes)


def test_decision_cache_is_bounded_and_expires() -> None:
    from mlseal.admission.webhook import DecisionCache

    now = [0.0]
    cache = DecisionCache(max_entries=2, ttl=10, clock=lambda: now[0])
    a, b, c = Decision.allow(), Decision(False, ["x"]), Decision(False, ["y"])
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # a is now the most recent
    cache.put("c", c)
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") is a
    now[0] = 11
    assert cache.get("a") is None and cache.get("c") is None
    off = DecisionCache(max_entries=0)
    off.put("a", a)
    assert off.get("a") is None


