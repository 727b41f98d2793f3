"""mlseal.ml.serving: ONNX parity with LinearModel, strict read-back, Triton config, InferenceService."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
from tritonclient.grpc import model_config_pb2

from mlseal.admission.manifest import SHA_ANNOTATION, URI_ANNOTATION, model_ref
from mlseal.errors import ConfigurationError, VerificationError
from mlseal.ml import data, serving, train
from mlseal.ml.errors import ModelFormatError
from mlseal.ml.model import LinearModel

NAME = serving.DEFAULT_MODEL_NAME


def make_model(n: int = 5, *, seed: int = 0, classes: tuple[int, int] = (0, 1)) -> LinearModel:
    rng = np.random.default_rng(seed)
    return LinearModel(features=tuple(f"feature_{i}" for i in range(n)), label="label", classes=classes,
                       mean=rng.normal(size=n) * 10, scale=rng.uniform(0.1, 5.0, size=n),
                       weights=rng.normal(size=n), bias=float(rng.normal()),
                       training={"adversarial": True, "epsilon": 0.2, "epochs": 60, "seed": seed})


def model_file(repo: Path, name: str = NAME) -> Path:
    return repo / name / serving.MODEL_VERSION / serving.MODEL_FILE


def config_file(repo: Path, name: str = NAME) -> Path:
    return repo / name / serving.CONFIG_FILE


def session(payload: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(payload, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def trained() -> LinearModel:
    return train.train(data.make_demo_dataset(seed=0), train.TrainConfig(epochs=3))[0]


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return serving.export_model_repository(make_model(), tmp_path / "repo")


# -- what Triton serves is what LinearModel computes ------------------------------------------------

@pytest.mark.parametrize("model", [make_model(1), make_model(7, seed=3), make_model(4, seed=5, classes=(7, -2))],
                         ids=["1-feature", "7-features", "classes-7-and-minus-2"])
def test_onnxruntime_matches_linear_model(model: LinearModel, tmp_path: Path) -> None:
    repo = serving.export_model_repository(model, tmp_path / "repo")
    sess = session(model_file(repo).read_bytes())
    rng = np.random.default_rng(42)
    x = (model.mean + rng.normal(size=(500, len(model.features))) * model.scale * 2).astype(np.float32)
    proba, label = sess.run([serving.OUTPUT_PROBABILITY, serving.OUTPUT_LABEL], {serving.INPUT: x})
    assert proba.dtype == np.float64 and label.dtype == np.int64 and proba.shape == label.shape == (500,)
    # the graph computes in float64 from the float32 input: only summation order differs
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(proba, model.predict_proba(x64), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(label, model.predict(x64))
    assert set(np.unique(label)) <= set(model.classes)
    # against unrounded float64 features the float32 input costs ~1e-7 relative
    x_exact = x64 + rng.uniform(-1e-7, 1e-7, size=x.shape) * np.abs(x64)
    np.testing.assert_allclose(proba, model.predict_proba(x_exact), rtol=0, atol=1e-5)


def test_trained_demo_model_served_as_evaluated(trained: LinearModel, tmp_path: Path) -> None:
    repo = serving.export_model_repository(trained, tmp_path / "repo")
    loaded = serving.load_model_repository(repo)  # what the evaluate stage reads
    table = data.make_demo_dataset(seed=1)
    x = loaded.features_of(table).astype(np.float32)
    proba, label = session(model_file(repo).read_bytes()).run(None, {serving.INPUT: x})
    np.testing.assert_allclose(proba, loaded.predict_proba(x.astype(np.float64)), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(label, loaded.predict(x.astype(np.float64)))
    assert np.mean(label == table.column("label")) > 0.9


def test_wrong_feature_count_is_refused_by_the_runtime(repo: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"index: 1 Got: 4 Expected: 5"):
        session(model_file(repo).read_bytes()).run(None, {serving.INPUT: np.zeros((2, 4), dtype=np.float32)})


# -- round trip and determinism ---------------------------------------------------------------------

def test_round_trip_gives_identical_parameters(trained: LinearModel, tmp_path: Path) -> None:
    back = serving.load_model_repository(serving.export_model_repository(trained, tmp_path / "r"))
    assert back.to_json() == trained.to_json()
    for name in ("mean", "scale", "weights"):
        assert getattr(back, name).tobytes() == getattr(trained, name).tobytes()
    assert back.bias == trained.bias and back.features == trained.features and back.classes == trained.classes
    assert dict(back.training) == dict(trained.training)


def test_export_is_deterministic(trained: LinearModel, tmp_path: Path) -> None:
    a = serving.export_model_repository(trained, tmp_path / "a")
    b = serving.export_model_repository(LinearModel.from_json(trained.to_json()), tmp_path / "b")
    assert model_file(a).read_bytes() == model_file(b).read_bytes()
    assert config_file(a).read_bytes() == config_file(b).read_bytes()
    other = serving.export_model_repository(make_model(30), tmp_path / "c")
    assert model_file(other).read_bytes() != model_file(a).read_bytes()


def test_golden_digest() -> None:
    """Same model, same bytes across machines and onnx releases; if this changes, digests recorded
    for earlier exports no longer reproduce: bump serving.FORMAT and say so in docs/ml.md."""
    m = LinearModel(features=("a", "b"), label="y", classes=(0, 1), mean=np.array([1.0, -2.0]),
                    scale=np.array([0.5, 4.0]), weights=np.array([1.5, -0.25]), bias=0.125,
                    training={"epochs": 1})
    assert hashlib.sha256(serving.onnx_bytes(m)).hexdigest() == GOLDEN_ONNX_SHA256
    assert hashlib.sha256(serving.triton_config(m)).hexdigest() == GOLDEN_CONFIG_SHA256


GOLDEN_ONNX_SHA256 = "0de5f06f2e280013dcac87cdcffc4dcaf51871ceb6c4dffc83ea045dd57cda40"
GOLDEN_CONFIG_SHA256 = "83023ac6a62bbbbaeaa378acf8d8d9854171d67f8f5459bca3bd03a4085d00e3"


# -- the file is a plain ONNX graph -----------------------------------------------------------------

def test_graph_shape_metadata_and_opset(repo: Path) -> None:
    payload = model_file(repo).read_bytes()
    proto = onnx.load_from_string(payload)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == 7 and [(o.domain, o.version) for o in proto.opset_import] == [("", 13)]
    (inp,) = proto.graph.input
    assert inp.name == "input" and inp.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 5]
    assert [(o.name, o.type.tensor_type.elem_type) for o in proto.graph.output] == [
        ("probability", TensorProto.DOUBLE), ("label", TensorProto.INT64)]
    meta = {p.key: p.value for p in proto.metadata_props}
    model = make_model()
    assert json.loads(meta["mlseal.features"]) == list(model.features)
    assert meta["mlseal.label"] == "label" and json.loads(meta["mlseal.classes"]) == [0, 1]
    assert meta["mlseal.format"] == serving.FORMAT and json.loads(meta["mlseal.training"]) == model.training
    # and the runtime sees the same metadata and signature
    sess = session(payload)
    assert sess.get_modelmeta().custom_metadata_map == meta
    assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [("input", "tensor(float)", ["batch", 5])]


def test_model_file_holds_no_pickle_and_no_code(repo: Path) -> None:
    payload = model_file(repo).read_bytes()
    with pytest.raises(Exception):  # any unpickling failure will do: the file is not a pickle
        pickle.loads(payload)
    assert not payload.startswith((b"\x80", b"PK\x03\x04"))  # no pickle protocol 2+ header, no zip (torch/joblib)
    proto = onnx.load_from_string(payload)
    assert {n.op_type for n in proto.graph.node} == {
        "Cast", "Sub", "Div", "MatMul", "Add", "Sigmoid", "GreaterOrEqual", "Where"}
    assert all(n.domain == "" for n in proto.graph.node) and not proto.functions
    assert {t.data_type for t in proto.graph.initializer} == {TensorProto.DOUBLE, TensorProto.INT64}
    assert all(t.data_location == TensorProto.DEFAULT and not t.external_data for t in proto.graph.initializer)


# -- Triton's configuration --------------------------------------------------------------------------

def test_triton_config_is_a_valid_model_config_for_the_graph(repo: Path) -> None:
    # text_format.Parse rejects any field Triton's ModelConfig does not define
    cfg = text_format.Parse(config_file(repo).read_text(), model_config_pb2.ModelConfig())
    assert cfg.name == NAME == config_file(repo).parent.name  # Triton requires name == directory
    assert cfg.platform == "onnxruntime_onnx" and cfg.default_model_filename == "model.onnx"
    assert cfg.max_batch_size == 0 and list(cfg.version_policy.specific.versions) == [1]
    assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
        ("input", "TYPE_FP32", [-1, 5])]
    assert [(o.name, model_config_pb2.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output] == [
        ("probability", "TYPE_FP64", [-1]), ("label", "TYPE_INT64", [-1])]
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in cfg.instance_group] == ["KIND_CPU"]


def test_model_name_is_configurable_and_checked(tmp_path: Path) -> None:
    repo = serving.export_model_repository(make_model(), tmp_path / "r", model_name="credit_v2")
    assert text_format.Parse(config_file(repo, "credit_v2").read_text(), model_config_pb2.ModelConfig()).name \
        == "credit_v2"
    assert serving.load_model_repository(repo, model_name="credit_v2").to_json() == make_model().to_json()
    with pytest.raises(ModelFormatError, match="must hold exactly"):
        serving.load_model_repository(repo)  # looking for mlseal-model
    for bad in ("../x", "a/b", "", "A", 'x"y', "-x"):
        with pytest.raises(ConfigurationError, match="model name"):
            serving.export_model_repository(make_model(), tmp_path / "bad", model_name=bad)


# -- export -------------------------------------------------------------------------------------------

def test_export_refuses_a_non_empty_directory_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    target.mkdir()
    (target / "other-model").mkdir()
    with pytest.raises(ConfigurationError, match="not an empty directory"):
        serving.export_model_repository(make_model(), target)
    (target / "other-model").rmdir()
    serving.export_model_repository(make_model(), target)  # an empty directory is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staging directory left
    with pytest.raises(ConfigurationError, match="not an empty directory"):
        serving.export_model_repository(make_model(), target)


def test_export_failure_leaves_no_partial_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: Path, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(serving, "_write_synced", fail)
    with pytest.raises(OSError, match="disk full"):
        serving.export_model_repository(make_model(), tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []


# -- tampered and foreign graphs are refused ---------------------------------------------------------

def _mutate(fn: Callable[[onnx.ModelProto], None]) -> Callable[[bytes], bytes]:
    def apply(payload: bytes) -> bytes:
        proto = onnx.load_from_string(payload)
        fn(proto)
        out: bytes = proto.SerializeToString()
        return out
    return apply


def _node(proto: onnx.ModelProto, op: str) -> onnx.NodeProto:
    node: onnx.NodeProto = next(n for n in proto.graph.node if n.op_type == op)
    return node


def _init(proto: onnx.ModelProto, name: str) -> TensorProto:
    tensor: TensorProto = next(t for t in proto.graph.initializer if t.name == name)
    return tensor


def _set_init(proto: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    _init(proto, name).CopyFrom(numpy_helper.from_array(value, name))


def _set_meta(proto: onnx.ModelProto, key: str, value: str) -> None:
    next(p for p in proto.metadata_props if p.key == key).value = value


def _external(proto: onnx.ModelProto) -> None:
    t = _init(proto, "weights")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../../../etc/passwd")


def _extra_output(proto: onnx.ModelProto) -> None:
    proto.graph.output.append(helper.make_tensor_value_info("logit", TensorProto.DOUBLE, ["batch"]))


def _custom_op(proto: onnx.ModelProto) -> None:
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    _node(proto, "Sigmoid").domain = "com.microsoft"


def _function(proto: onnx.ModelProto) -> None:
    body = [helper.make_node("Identity", ["a"], ["b"])]
    proto.functions.append(helper.make_function("local", "f", ["a"], ["b"], body, [helper.make_opsetid("", 13)]))


def _unknown_field(payload: bytes) -> bytes:
    return payload + b"\xf8\x07\x01"  # field 127 (not in ModelProto), varint 1: parses, kept as unknown


TAMPERS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "extra-node": (_mutate(lambda p: p.graph.node.append(helper.make_node("Identity", ["logit"], ["spy"]))),
                   "nodes, expected 8"),
    "sigmoid-to-relu": (_mutate(lambda p: setattr(_node(p, "Sigmoid"), "op_type", "Relu")),
                        "node 5 is Relu"),
    "threshold-0.9": (_mutate(lambda p: _set_init(p, "threshold", np.array(0.9))), "initializer 'threshold'"),
    "classes-swapped": (_mutate(lambda p: _set_init(p, "class_1", np.array(0, dtype=np.int64))),
                        "initializer 'class_1'"),
    "newer-opset": (_mutate(lambda p: setattr(p.opset_import[0], "version", 21)), "operator sets"),
    "other-ir-version": (_mutate(lambda p: setattr(p, "ir_version", 10)), "IR version 10"),
    "custom-domain-op": (_mutate(_custom_op), "operator sets"),
    "local-function": (_mutate(_function), "local function"),
    "external-data": (_mutate(_external), "external data"),
    "input-double": (_mutate(lambda p: setattr(p.graph.input[0].type.tensor_type, "elem_type", TensorProto.DOUBLE)),
                     "graph inputs"),
    "input-renamed": (_mutate(lambda p: setattr(p.graph.input[0], "name", "x0")), "graph inputs"),
    "extra-output": (_mutate(_extra_output), "graph outputs"),
    "weights-shape": (_mutate(lambda p: _set_init(p, "weights", np.zeros((5, 1)))), "initializer 'weights'"),
    "weights-float32": (_mutate(lambda p: _set_init(p, "weights", np.zeros(5, dtype=np.float32))),
                        "initializer 'weights' is FLOAT"),
    "nan-weight": (_mutate(lambda p: _set_init(p, "weights", np.array([np.nan, 0, 0, 0, 0.0]))), "non-finite"),
    "zero-scale": (_mutate(lambda p: _set_init(p, "scale", np.zeros(5))), "scale must be positive"),
    "no-bias": (_mutate(lambda p: p.graph.initializer.remove(_init(p, "bias"))), "no initializer 'bias'"),
    "feature-count": (_mutate(lambda p: _set_meta(p, "mlseal.features", '["a","b"]')), "shape"),
    "format-missing": (_mutate(lambda p: p.metadata_props.remove(next(
        m for m in p.metadata_props if m.key == "mlseal.format"))), "mlseal.format is None"),
    "extra-metadata": (_mutate(lambda p: p.metadata_props.add(key="note", value="x")), "metadata keys"),
    "metadata-nan": (_mutate(lambda p: _set_meta(p, "mlseal.training", '{"e":NaN}')), "not JSON"),
    "metadata-spaces": (_mutate(lambda p: _set_meta(p, "mlseal.classes", "[0, 1]")), "canonical form"),
    "metadata-deep": (_mutate(lambda p: _set_meta(p, "mlseal.training", "[" * 100_000 + "]" * 100_000)),
                      "nested too deeply"),
    "class-overflow": (_mutate(lambda p: _set_meta(p, "mlseal.classes", f"[0,{2**64}]")), "int64"),
    "doc-string": (_mutate(lambda p: setattr(p, "doc_string", "hello")), "different bytes"),
    "value-info": (_mutate(lambda p: p.graph.value_info.append(
        helper.make_tensor_value_info("z", TensorProto.DOUBLE, ["batch", 5]))), "value_info"),
    "unknown-field": (_unknown_field, "different bytes"),
    "truncated": (lambda b: b[: len(b) // 2], "not an ONNX protobuf|mlseal.format"),
    "pickle": (lambda b: pickle.dumps({"weights": [1.0]}), "not an ONNX protobuf|mlseal.format"),
    "empty": (lambda b: b"", "mlseal.format is None"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_tampered_graph_is_refused(repo: Path, tamper: str) -> None:
    change, expected = TAMPERS[tamper]
    path = model_file(repo)
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(ModelFormatError, match=expected) as info:
        serving.load_model_repository(repo)
    assert isinstance(info.value, VerificationError)


def test_foreign_onnx_model_is_refused(repo: Path) -> None:
    """A valid ONNX-ML classifier someone else exported is not an mlseal model."""
    node = helper.make_node("LinearClassifier", ["input"], ["label", "probabilities"], domain="ai.onnx.ml",
                            classlabels_ints=[0, 1], coefficients=[0.0] * 10, intercepts=[0.0, 0.0])
    graph = helper.make_graph([node], "foreign", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 5])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                               helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])])
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)]
    foreign = helper.make_model(graph, opset_imports=opsets)
    onnx.checker.check_model(foreign)
    model_file(repo).write_bytes(foreign.SerializeToString())
    with pytest.raises(ModelFormatError, match="not an mlseal model"):
        serving.load_model_repository(repo)
    # even with mlseal's metadata copied in, the graph is not the one mlseal writes
    helper.set_model_props(foreign, {p.key: p.value for p in onnx.load_from_string(
        serving.onnx_bytes(make_model())).metadata_props})
    model_file(repo).write_bytes(foreign.SerializeToString())
    with pytest.raises(ModelFormatError, match="no initializer 'mean'"):
        serving.load_model_repository(repo)


def test_whatever_loads_is_what_is_served(tmp_path: Path) -> None:
    """Flip every byte of a small graph: each result is refused, or loads as a model that
    re-exports to exactly those bytes and that onnxruntime evaluates the same way."""
    model = make_model(2, seed=9)
    payload = serving.onnx_bytes(model)
    x = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32) * 10
    accepted = 0
    for i in range(len(payload)):
        flipped = payload[:i] + bytes([payload[i] ^ 0x10]) + payload[i + 1:]
        try:
            loaded = serving.parse_onnx(flipped)
        except ModelFormatError:
            continue
        accepted += 1
        assert serving.onnx_bytes(loaded) == flipped
        proba, label = session(flipped).run(None, {serving.INPUT: x})
        np.testing.assert_allclose(proba, loaded.predict_proba(x.astype(np.float64)), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(label, loaded.predict(x.astype(np.float64)))
    # only flips inside parameter values or names survive, and each changed the model
    assert 0 < accepted < len(payload) // 2


# -- tampered repositories are refused -----------------------------------------------------------------

def _extra_version(repo: Path) -> None:
    (repo / NAME / "2").mkdir()
    (repo / NAME / "2" / "model.onnx").write_bytes(serving.onnx_bytes(make_model(seed=1)))


def _python_backend(repo: Path) -> None:
    cfg = config_file(repo)
    cfg.write_text(cfg.read_text().replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    (repo / NAME / "1" / "model.py").write_text("import os\n")


def _symlinked_model(repo: Path) -> None:
    real = repo.parent / "elsewhere.onnx"
    real.write_bytes(model_file(repo).read_bytes())
    model_file(repo).unlink()
    os.symlink(real, model_file(repo))


def _oversize(repo: Path) -> None:
    with open(model_file(repo), "ab") as f:
        f.truncate(serving.MAX_MODEL_BYTES + 1)


REPO_TAMPERS: dict[str, tuple[Callable[[Path], object], str]] = {
    "extra-version": (_extra_version, "unexpected \\['2'\\]"),
    "python-backend": (_python_backend, "unexpected \\['model.py'\\]"),
    "config-backend": (lambda r: config_file(r).write_text(
        config_file(r).read_text().replace('platform: "onnxruntime_onnx"', 'backend: "python"')),
        "config.pbtxt is not the configuration.*line 2"),
    "config-batch": (lambda r: config_file(r).write_text(
        config_file(r).read_text().replace("max_batch_size: 0", "max_batch_size: 8")), "line 4"),
    "config-appended": (lambda r: config_file(r).write_text(config_file(r).read_text() + "parameters []\n"),
                        "lines"),
    "config-missing": (lambda r: config_file(r).unlink(), "missing \\['config.pbtxt'\\]"),
    "second-model": (lambda r: (r / "other").mkdir(), "unexpected \\['other'\\]"),
    "labels-file": (lambda r: (r / NAME / "labels.txt").write_text("a\n"), "unexpected \\['labels.txt'\\]"),
    "symlinked-model": (_symlinked_model, "symlinks are refused"),
    "oversize": (_oversize, "larger than the limit"),
}


@pytest.mark.parametrize("tamper", sorted(REPO_TAMPERS))
def test_tampered_repository_is_refused(repo: Path, tamper: str) -> None:
    change, expected = REPO_TAMPERS[tamper]
    change(repo)
    with pytest.raises(ModelFormatError, match=expected):
        serving.load_model_repository(repo)


def test_missing_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="no directory"):
        serving.load_model_repository(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFormatError, match="not a directory"):
        serving.load_model_repository(tmp_path / "file")


# -- the InferenceService -----------------------------------------------------------------------------

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DNS1035 = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: the fields used, as the upstream CRD (serving.kserve.io_inferenceservices.yaml, v1beta1) types them,
#: closed with additionalProperties: false so that a misspelt or invented field fails
ISVC_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {
            "type": "object", "additionalProperties": False, "required": ["name", "namespace"],
            "properties": {"name": {"type": "string", "pattern": _DNS1035, "maxLength": 63},
                           "namespace": {"type": "string", "maxLength": 63},
                           "annotations": _STR_MAP, "labels": _STR_MAP}},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["predictor"],
            "properties": {"predictor": {
                "type": "object", "additionalProperties": False, "required": ["model"],
                "properties": {
                    "serviceAccountName": {"type": "string"},
                    "model": {
                        "type": "object", "additionalProperties": False,
                        "required": ["modelFormat", "runtime", "protocolVersion", "storageUri"],
                        "properties": {
                            "modelFormat": {"type": "object", "additionalProperties": False, "required": ["name"],
                                            "properties": {"name": {"type": "string"},
                                                           "version": {"type": "string"}}},
                            "runtime": {"type": "string"},
                            "protocolVersion": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
                            "storageUri": {"type": "string"}}}}}}},
    },
}

SHA = "ab" * 32


def test_inference_service_is_valid_and_served_by_triton() -> None:
    isvc = serving.inference_service(name="credit", namespace="models", storage_uri="s3://models/runs/42/",
                                     model_sha256=SHA, service_account_name="s3-reader",
                                     annotations={"team": "risk"}, labels={"app": "credit"})
    jsonschema.Draft7Validator(ISVC_SCHEMA).validate(isvc)
    model = isvc["spec"]["predictor"]["model"]
    # kserve-tritonserver: supportedModelFormats has {name: onnx, version: "1"}; protocolVersions v2, grpc-v2
    assert model == {"modelFormat": {"name": "onnx", "version": "1"}, "runtime": "kserve-tritonserver",
                     "protocolVersion": "v2", "storageUri": "s3://models/runs/42/"}
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "s3-reader"
    assert isvc["metadata"]["annotations"] == {"team": "risk", SHA_ANNOTATION: SHA,
                                               URI_ANNOTATION: "s3://models/runs/42/"}
    assert isvc["metadata"]["labels"] == {"app": "credit"}
    # admission reads the digest and URI from it
    ref = model_ref(isvc)
    assert ref is not None
    assert (ref.sha256, ref.uri, ref.where) == (SHA, "s3://models/runs/42/", "spec.predictor.model.storageUri")
    assert json.loads(json.dumps(isvc)) == isvc


def test_schema_catches_a_misspelt_field() -> None:
    isvc = serving.inference_service(name="m", namespace="ns", storage_uri="s3://bkt/", model_sha256=SHA)
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        jsonschema.Draft7Validator(ISVC_SCHEMA).validate(isvc)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"storage_uri": "s3://bucket/models/run1"}, "ending with '/'"),
    ({"storage_uri": "gs://bucket/models/"}, "must be s3://"),
    ({"storage_uri": "s3://key:secret@bucket/models/"}, "must be s3://"),
    ({"storage_uri": "s3://bucket/models/?x=1/"}, "must be s3://"),
    ({"model_sha256": "AB" * 32}, "64 lowercase hex"),
    ({"model_sha256": "ab" * 31}, "64 lowercase hex"),
    ({"name": "1model"}, "DNS-1035"),
    ({"name": "Model"}, "DNS-1035"),
    ({"namespace": "a_b"}, "DNS-1123"),
    ({"service_account_name": "S3"}, "service account"),
    ({"annotations": {SHA_ANNOTATION: "cd" * 32}}, "set by mlseal"),
    ({"annotations": {URI_ANNOTATION: "s3://other/"}}, "set by mlseal"),
    ({"labels": {"app": 1}}, "labels must map"),
    ({"runtime": ""}, "runtime"),
])
def test_inference_service_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"name": "m", "namespace": "ns", "storage_uri": "s3://bkt/m/", "model_sha256": SHA}
    with pytest.raises(ConfigurationError, match=match):
        serving.inference_service(**{**args, **kwargs})


def test_annotation_keys_are_the_ones_admission_reads() -> None:
    assert (serving.SHA_ANNOTATION, serving.URI_ANNOTATION) == (SHA_ANNOTATION, URI_ANNOTATION)
    same = serving.inference_service(name="m", namespace="ns", storage_uri="s3://bkt/", model_sha256=SHA,
                                     annotations={SHA_ANNOTATION: SHA})
    assert same["metadata"]["annotations"][SHA_ANNOTATION] == SHA
