"""Serve a `LinearModel` with a stock KServe runtime: an ONNX graph in a Triton model repository.

KServe's `kserve-tritonserver` ClusterServingRuntime lists `onnx` (version "1") among its
`supportedModelFormats` and speaks the Open Inference Protocol (`v2`). Triton's ONNX
Runtime backend loads `model.onnx`, a protobuf of numbers and operator names, so serving
the model runs no code from the model file: unlike the `sklearn` runtimes, which
`joblib.load` (unpickle) whatever the storage holds.

The repository this module writes, and the only one it reads back::

    <directory>/<model_name>/config.pbtxt       Triton configuration (CPU, version 1 only)
    <directory>/<model_name>/1/model.onnx       ONNX IR 7, opset 13

The graph: `input` float32 [batch, n_features] (in `model.features` order) ->
`probability` float64 [batch] = P(label = classes[1]) and `label` int64 [batch]. It holds
the parameters as float64, exactly the ones in the `LinearModel`, and computes in float64,
so Triton serves what `LinearModel.predict_proba` computes (up to the float32 input).

`load_model_repository` parses the protobuf (never `onnx.load`, which follows external
data paths), rebuilds the graph from the parameters it found, and accepts the file only
if it is byte for byte the graph `export_model_repository` writes for them. The evaluate
stage can therefore evaluate exactly the bytes that will be served.

    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from mlseal.ml.model import LinearModel
    >>> m = LinearModel(features=("a", "b"), label="y", classes=(0, 1), mean=np.zeros(2),
    ...                 scale=np.ones(2), weights=np.array([2.0, -1.0]), bias=0.5)
    >>> repo = export_model_repository(m, Path(tempfile.mkdtemp()) / "repo")
    >>> sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    ['mlseal-model/1/model.onnx', 'mlseal-model/config.pbtxt']
    >>> load_model_repository(repo).to_json() == m.to_json()
    True
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mlseal.errors import ConfigurationError
from mlseal.ml.errors import ModelFormatError
from mlseal.ml.model import LinearModel

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_MODEL_NAME",
    "FORMAT",
    "INPUT",
    "IR_VERSION",
    "KSERVE_API",
    "MAX_CONFIG_BYTES",
    "MAX_MODEL_BYTES",
    "MEDIA_TYPE",
    "MODEL_FILE",
    "MODEL_VERSION",
    "OPSET",
    "OUTPUT_LABEL",
    "OUTPUT_PROBABILITY",
    "PROTOCOL_VERSION",
    "RUNTIME",
    "SHA_ANNOTATION",
    "URI_ANNOTATION",
    "build_onnx",
    "export_model_repository",
    "inference_service",
    "load_model_repository",
    "onnx_bytes",
    "parse_onnx",
    "triton_config",
]

#: value of the `mlseal.format` metadata entry in every graph this module writes
FORMAT = "mlseal.serving.onnx.v1"
#: media type recorded for a model repository directory (Triton layout, one ONNX model)
MEDIA_TYPE = "application/vnd.mlseal.model-repository.onnx.v1"
DEFAULT_MODEL_NAME = "mlseal-model"
MODEL_VERSION = "1"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
#: ONNX IR 7 / opset 13 run on every ONNX Runtime since 1.7, so on KServe's default
#: Triton image (23.05) and every later one; GreaterOrEqual needs opset >= 12.
IR_VERSION = 7
OPSET = 13
MAX_MODEL_BYTES = 16 * 1024 * 1024
MAX_CONFIG_BYTES = 64 * 1024

#: KServe's stock runtime for `modelFormat: onnx` (config/runtimes/kserve-tritonserver.yaml)
RUNTIME = "kserve-tritonserver"
PROTOCOL_VERSION = "v2"
KSERVE_API = "serving.kserve.io/v1beta1"
#: the annotations `mlseal.admission.manifest` reads
SHA_ANNOTATION = "mlseal.dev/model-sha256"
URI_ANNOTATION = "mlseal.dev/model-uri"

INPUT = "input"
OUTPUT_PROBABILITY = "probability"
OUTPUT_LABEL = "label"
_BATCH = "batch"
_GRAPH_NAME = "mlseal_standardized_logistic"
_PRODUCER = "mlseal"
_META_KEYS = ("mlseal.classes", "mlseal.features", "mlseal.format", "mlseal.label", "mlseal.training")
#: what protobuf raises on malformed bytes (looked up at run time: protobuf ships no type stubs)
_DecodeError: type[Exception] = importlib.import_module("google.protobuf.message").DecodeError
_F64 = np.dtype("<f8")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_I64 = np.dtype("<i8")

# Triton model names become directory names and URL path segments; KServe names are DNS-1035.
_MODEL_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?")
_DNS1035_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS1123_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_S3_RE = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/(?:[^\s?#@]+/)?")


def _canonical_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


def _check_model_name(model_name: str) -> None:
    if not _MODEL_NAME_RE.fullmatch(model_name):
        raise ConfigurationError(
            f"model name {model_name!r} is not allowed: use 1-63 characters a-z, 0-9, '-' or '_', "
            "starting and ending with a letter or digit")


# -- the graph ---------------------------------------------------------------------------------


def build_onnx(model: LinearModel) -> onnx.ModelProto:
    """The ONNX graph for `model`; `onnx_bytes` serialises it."""
    n = len(model.features)
    if not all(_INT64_MIN <= c <= _INT64_MAX for c in model.classes):
        raise ModelFormatError(f"model classes {list(model.classes)} do not fit the graph's int64 labels")
    try:
        metadata = {
            "mlseal.classes": _canonical_json(list(model.classes)),
            "mlseal.features": _canonical_json(list(model.features)),
            "mlseal.format": FORMAT,
            "mlseal.label": model.label,
            "mlseal.training": _canonical_json(dict(model.training)),
        }
    except (TypeError, ValueError) as e:
        raise ModelFormatError(f"model training config is not plain JSON: {e}") from None
    initializers = [
        numpy_helper.from_array(np.asarray(model.mean, dtype=_F64), "mean"),
        numpy_helper.from_array(np.asarray(model.scale, dtype=_F64), "scale"),
        numpy_helper.from_array(np.asarray(model.weights, dtype=_F64), "weights"),
        numpy_helper.from_array(np.array(model.bias, dtype=_F64), "bias"),
        numpy_helper.from_array(np.array(0.5, dtype=_F64), "threshold"),
        numpy_helper.from_array(np.array(model.classes[0], dtype=_I64), "class_0"),
        numpy_helper.from_array(np.array(model.classes[1], dtype=_I64), "class_1"),
    ]
    nodes = [
        helper.make_node("Cast", [INPUT], ["x"], name="cast", to=TensorProto.DOUBLE),
        helper.make_node("Sub", ["x", "mean"], ["centered"], name="center"),
        helper.make_node("Div", ["centered", "scale"], ["z"], name="standardize"),
        helper.make_node("MatMul", ["z", "weights"], ["zw"], name="dot"),
        helper.make_node("Add", ["zw", "bias"], ["logit"], name="add_bias"),
        helper.make_node("Sigmoid", ["logit"], [OUTPUT_PROBABILITY], name="sigmoid"),
        # the same rule as LinearModel.predict: classes[1] when the probability is >= 0.5
        helper.make_node("GreaterOrEqual", [OUTPUT_PROBABILITY, "threshold"], ["positive"], name="decide"),
        helper.make_node("Where", ["positive", "class_1", "class_0"], [OUTPUT_LABEL], name="label"),
    ]
    graph = helper.make_graph(
        nodes, _GRAPH_NAME,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [_BATCH, n])],
        [helper.make_tensor_value_info(OUTPUT_PROBABILITY, TensorProto.DOUBLE, [_BATCH]),
         helper.make_tensor_value_info(OUTPUT_LABEL, TensorProto.INT64, [_BATCH])],
        initializer=initializers,
        doc_string="probability = sigmoid(((input - mean) / scale) . weights + bias); "
                   "label = class_1 if probability >= 0.5 else class_0",
    )
    proto = helper.make_model(graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=_PRODUCER, producer_version=FORMAT)
    helper.set_model_props(proto, metadata)
    return proto


def onnx_bytes(model: LinearModel) -> bytes:
    """Deterministic bytes: the same parameters give the same bytes and the same digest."""
    data: bytes = build_onnx(model).SerializeToString(deterministic=True)
    return data


def triton_config(model: LinearModel, *, model_name: str = DEFAULT_MODEL_NAME) -> bytes:
    """Triton's config.pbtxt for the graph: ONNX Runtime on CPU, version 1 and nothing else."""
    _check_model_name(model_name)
    n = len(model.features)
    # version_policy pins version 1: a stray 2/ directory in storage would otherwise be
    # served instead (Triton's default policy is the latest version).
    text = (
        f'name: "{model_name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f'default_model_filename: "{MODEL_FILE}"\n'
        "max_batch_size: 0\n"
        f"version_policy: {{ specific: {{ versions: [ {MODEL_VERSION} ] }} }}\n"
        "input [\n"
        f'  {{ name: "{INPUT}" data_type: TYPE_FP32 dims: [ -1, {n} ] }}\n'
        "]\n"
        "output [\n"
        f'  {{ name: "{OUTPUT_PROBABILITY}" data_type: TYPE_FP64 dims: [ -1 ] }},\n'
        f'  {{ name: "{OUTPUT_LABEL}" data_type: TYPE_INT64 dims: [ -1 ] }}\n'
        "]\n"
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )
    return text.encode("ascii")


# -- writing -----------------------------------------------------------------------------------


def export_model_repository(model: LinearModel, directory: Path, *, model_name: str = DEFAULT_MODEL_NAME) -> Path:
    """Write the Triton model repository for `model` at `directory`; returns `directory`.

    `directory` must not exist or be empty: Triton loads every model in a repository, so
    it holds this model and nothing else. The repository appears whole or not at all (it is
    built beside `directory` and renamed into place).
    """
    _check_model_name(model_name)
    directory = Path(directory)
    if directory.is_symlink() or (directory.exists() and (not directory.is_dir() or any(directory.iterdir()))):
        raise ConfigurationError(
            f"{directory} exists and is not an empty directory: a model repository holds one model "
            "and nothing else; pass a new or empty directory")
    payload, config = onnx_bytes(model), triton_config(model, model_name=model_name)
    onnx.checker.check_model(onnx.load_from_string(payload), full_check=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp makes a private (0700) staging directory; the tree inside gets the umask's modes
    stage = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        tree = stage / "repository"
        (tree / model_name / MODEL_VERSION).mkdir(parents=True)
        _write_synced(tree / model_name / CONFIG_FILE, config)
        _write_synced(tree / model_name / MODEL_VERSION / MODEL_FILE, payload)
        os.replace(tree, directory)  # rename(2) replaces an empty directory atomically
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return directory


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# -- reading -----------------------------------------------------------------------------------


def load_model_repository(directory: Path, *, model_name: str = DEFAULT_MODEL_NAME) -> LinearModel:
    """Read back a repository `export_model_repository` wrote, executing nothing.

    Raises `ModelFormatError` naming the problem for anything else: another layout, an
    extra file or version, a symlink, a file over the size cap, a graph with other
    operators, types, shapes or metadata, parameters outside the model file, or any byte
    that differs from the canonical encoding of the parameters found.
    """
    _check_model_name(model_name)
    root = Path(directory)
    # 1. the layout: exactly <root>/<name>/{config.pbtxt, 1/model.onnx}, no links, no extras
    _expect_entries(root, {model_name: "dir"}, "the repository")
    _expect_entries(root / model_name, {CONFIG_FILE: "file", MODEL_VERSION: "dir"}, f"model {model_name!r}")
    _expect_entries(root / model_name / MODEL_VERSION, {MODEL_FILE: "file"}, f"version {MODEL_VERSION}")
    config = _read_capped(root / model_name / CONFIG_FILE, MAX_CONFIG_BYTES)
    payload = _read_capped(root / model_name / MODEL_VERSION / MODEL_FILE, MAX_MODEL_BYTES)
    # 2. the graph: parameters and metadata out, then the whole graph against its canonical form
    model = parse_onnx(payload)
    # 3. the Triton configuration: exactly the one written for this graph
    expected = triton_config(model, model_name=model_name)
    if config != expected:
        raise ModelFormatError(
            f"{model_name}/{CONFIG_FILE} is not the configuration mlseal writes for this model "
            f"({_first_line_difference(config, expected)}); re-export the repository")
    return model


def parse_onnx(payload: bytes) -> LinearModel:
    """The `LinearModel` in an ONNX file written by `onnx_bytes`; anything else is refused."""
    if len(payload) > MAX_MODEL_BYTES:
        raise ModelFormatError(f"{MODEL_FILE} is {len(payload)} bytes, limit {MAX_MODEL_BYTES}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(payload)
    except (_DecodeError, RuntimeError, ValueError) as e:
        raise ModelFormatError(f"{MODEL_FILE} is not an ONNX protobuf: {e}") from None
    model = _extract(proto)
    expected_proto = build_onnx(model)
    problem = _structure_difference(proto, expected_proto)
    if problem is not None:
        raise ModelFormatError(f"{MODEL_FILE} is not an mlseal {FORMAT} graph: {problem}")
    if payload != expected_proto.SerializeToString(deterministic=True):
        raise ModelFormatError(
            f"{MODEL_FILE} carries fields or an encoding mlseal does not write (same graph, different "
            "bytes); re-export the model")
    return model


def _expect_entries(path: Path, expected: Mapping[str, str], what: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ModelFormatError(f"{what} is missing: no directory at {path}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ModelFormatError(f"{what} at {path} is not a directory (symlinks are refused)")
    names = sorted(os.listdir(path))
    extra = [n for n in names if n not in expected]
    missing = [n for n in expected if n not in names]
    if extra or missing:
        raise ModelFormatError(
            f"{what} at {path} must hold exactly {sorted(expected)}: "
            f"unexpected {extra}, missing {missing} (Triton would serve what is there)")
    for name, kind in expected.items():
        mode = os.lstat(path / name).st_mode
        if not (stat.S_ISDIR(mode) if kind == "dir" else stat.S_ISREG(mode)):
            raise ModelFormatError(f"{path / name} must be a regular {kind} (symlinks are refused)")


def _read_capped(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ModelFormatError(f"{path} is larger than the limit of {limit} bytes")
    return data


def _extract(proto: onnx.ModelProto) -> LinearModel:
    """Parameters and names from the graph, each checked for type and shape."""
    meta: dict[str, str] = {}
    for prop in proto.metadata_props:
        # ONNX is proto2: protobuf hands back invalid UTF-8 in a string field as bytes
        if not (isinstance(prop.key, str) and isinstance(prop.value, str)):
            raise ModelFormatError(f"{MODEL_FILE}: a metadata entry is not valid UTF-8")
        if prop.key in meta:
            raise ModelFormatError(f"{MODEL_FILE}: metadata key {prop.key!r} appears twice")
        meta[prop.key] = prop.value
    if meta.get("mlseal.format") != FORMAT:
        raise ModelFormatError(
            f"{MODEL_FILE} is not an mlseal model: metadata mlseal.format is {meta.get('mlseal.format')!r}, "
            f"expected {FORMAT!r}")
    if sorted(meta) != sorted(_META_KEYS):
        raise ModelFormatError(f"{MODEL_FILE}: metadata keys are {sorted(meta)}, expected {list(_META_KEYS)}")
    features = _meta_json(meta, "mlseal.features")
    classes = _meta_json(meta, "mlseal.classes")
    training = _meta_json(meta, "mlseal.training")
    if not (isinstance(features, list) and features and all(isinstance(f, str) for f in features)):
        raise ModelFormatError(f"{MODEL_FILE}: metadata mlseal.features must be a non-empty list of names")
    if not (isinstance(classes, list) and len(classes) == 2 and all(type(c) is int for c in classes)):
        raise ModelFormatError(f"{MODEL_FILE}: metadata mlseal.classes must be two integers")
    if not isinstance(training, dict):
        raise ModelFormatError(f"{MODEL_FILE}: metadata mlseal.training must be a JSON object")
    n = len(features)
    tensors: dict[str, TensorProto] = {}
    for t in proto.graph.initializer:
        if t.name in tensors:
            raise ModelFormatError(f"{MODEL_FILE}: initializer {t.name!r} appears twice")
        tensors[t.name] = t
    return LinearModel(
        features=tuple(features), label=meta["mlseal.label"], classes=(classes[0], classes[1]),
        mean=_tensor(tensors, "mean", TensorProto.DOUBLE, (n,)),
        scale=_tensor(tensors, "scale", TensorProto.DOUBLE, (n,)),
        weights=_tensor(tensors, "weights", TensorProto.DOUBLE, (n,)),
        bias=float(_tensor(tensors, "bias", TensorProto.DOUBLE, ())),
        training=training,
    )


def _meta_json(meta: Mapping[str, str], key: str) -> Any:
    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not a number")

    try:
        return json.loads(meta[key], parse_constant=no_constants)
    except ValueError as e:
        raise ModelFormatError(f"{MODEL_FILE}: metadata {key} is not JSON: {e}") from None
    except RecursionError:
        raise ModelFormatError(f"{MODEL_FILE}: metadata {key} is nested too deeply") from None


def _tensor(tensors: Mapping[str, TensorProto], name: str, dtype: int, shape: tuple[int, ...]) -> np.ndarray:
    t = tensors.get(name)
    if t is None:
        raise ModelFormatError(f"{MODEL_FILE}: the graph has no initializer {name!r}")
    # never numpy_helper.to_array: it would read external data from paths the file names
    if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
        raise ModelFormatError(
            f"{MODEL_FILE}: initializer {name!r} refers to external data; mlseal keeps every parameter "
            "inside the model file")
    if t.data_type != dtype or tuple(t.dims) != shape:
        raise ModelFormatError(
            f"{MODEL_FILE}: initializer {name!r} is {TensorProto.DataType.Name(t.data_type)} of shape "
            f"{list(t.dims)}, expected {TensorProto.DataType.Name(dtype)} of shape {list(shape)}")
    count = int(np.prod(shape, dtype=np.int64))
    if len(t.raw_data) != 8 * count:
        raise ModelFormatError(
            f"{MODEL_FILE}: initializer {name!r} must hold {count} values as raw little-endian data")
    out: np.ndarray = np.frombuffer(t.raw_data, dtype=_F64).reshape(shape).copy()
    return out


def _structure_difference(actual: onnx.ModelProto, expected: onnx.ModelProto) -> str | None:
    """The first way `actual` differs from the graph mlseal writes, in words; None if none found."""
    if actual.ir_version != expected.ir_version:
        return f"IR version {actual.ir_version}, expected {expected.ir_version}"
    opsets = [(o.domain, o.version) for o in actual.opset_import]
    if opsets != [(o.domain, o.version) for o in expected.opset_import]:
        return f"operator sets {opsets}, expected only the default domain at opset {OPSET}"
    got_meta = [(p.key, p.value) for p in actual.metadata_props]
    for key, value in ((p.key, p.value) for p in expected.metadata_props):
        if (key, value) not in got_meta:
            return f"metadata {key} is not in the canonical form mlseal writes ({value[:60]!r})"
    if [k for k, _ in got_meta] != [p.key for p in expected.metadata_props]:
        return f"metadata entries are not in the order mlseal writes ({list(_META_KEYS)})"
    if len(actual.functions):
        return f"it defines {len(actual.functions)} local function(s)"
    if len(actual.training_info):
        return "it carries training information"
    a, e = actual.graph, expected.graph
    if len(a.sparse_initializer):
        return "it has sparse initializers"
    for kind, got, want in (("input", a.input, e.input), ("output", a.output, e.output)):
        got_sig = [_value_signature(v) for v in got]
        want_sig = [_value_signature(v) for v in want]
        if got_sig != want_sig:
            return f"graph {kind}s are {got_sig}, expected {want_sig}"
    got_nodes = [(n.domain, n.op_type, list(n.input), list(n.output)) for n in a.node]
    want_nodes = [(n.domain, n.op_type, list(n.input), list(n.output)) for n in e.node]
    for i, (g, w) in enumerate(zip(got_nodes, want_nodes, strict=False)):
        if g != w:
            return f"node {i} is {_node_text(g)}, expected {_node_text(w)}"
    if len(got_nodes) != len(want_nodes):
        return f"the graph has {len(got_nodes)} nodes, expected {len(want_nodes)}"
    for i, (gn, wn) in enumerate(zip(a.node, e.node, strict=True)):
        if gn != wn:
            return f"node {i} ({gn.op_type}) has other attributes or names than mlseal writes"
    got_init = sorted(t.name for t in a.initializer)
    want_init = sorted(t.name for t in e.initializer)
    if got_init != want_init:
        return f"initializers are {got_init}, expected {want_init}"
    for g_t in a.initializer:
        w_t = next(t for t in e.initializer if t.name == g_t.name)
        if g_t != w_t:
            return f"initializer {g_t.name!r} differs from the one its parameters give (threshold 0.5, classes)"
    if len(a.value_info):
        return "it carries value_info annotations"
    return None


def _value_signature(v: onnx.ValueInfoProto) -> str:
    tt = v.type.tensor_type
    dims = ["?" if d.HasField("dim_param") or not d.HasField("dim_value") else str(d.dim_value)
            for d in tt.shape.dim]
    return f"{v.name}:{TensorProto.DataType.Name(tt.elem_type)}[{','.join(dims)}]"


def _node_text(node: tuple[str, str, list[str], list[str]]) -> str:
    domain, op, inputs, outputs = (_printable(x) for x in node)
    return f"{domain + '.' if domain else ''}{op}({inputs}) -> {outputs}"


def _printable(value: object) -> str:
    """Text for a message from a protobuf string field, which may hold bytes (invalid UTF-8)."""
    if isinstance(value, list):
        return ", ".join(_printable(v) for v in value)
    return value if isinstance(value, str) else repr(value)


def _first_line_difference(got: bytes, want: bytes) -> str:
    g, w = got.decode("utf-8", "replace").splitlines(), want.decode("ascii").splitlines()
    for i, (gl, wl) in enumerate(zip(g, w, strict=False), start=1):
        if gl != wl:
            return f"line {i} is {gl[:80]!r}, expected {wl!r}"
    return f"it has {len(g)} lines, expected {len(w)}"


# -- the InferenceService ----------------------------------------------------------------------


def inference_service(
    *,
    name: str,
    namespace: str,
    storage_uri: str,
    model_sha256: str,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    service_account_name: str | None = None,
    runtime: str = RUNTIME,
) -> dict[str, Any]:
    """A KServe v1beta1 InferenceService serving the repository at `storage_uri` with Triton.

    `storage_uri` is the `s3://bucket/prefix/` the repository directory was uploaded to
    (its contents at that prefix: `<model_name>/config.pbtxt`, ...). It must end with "/":
    KServe's storage initializer downloads every object whose key *starts with* the prefix,
    so `s3://b/run1` would also fetch `s3://b/run10/...`. S3 credentials come from
    `service_account_name` (KServe's S3 secret convention), never from the URI.
    `model_sha256` goes into the `mlseal.dev/model-sha256` annotation that admission checks.
    """
    if not _DNS1035_RE.fullmatch(name):
        raise ConfigurationError(
            f"InferenceService name {name!r} must be a DNS-1035 label (a-z, 0-9, '-', starting with a letter)")
    if not _DNS1123_RE.fullmatch(namespace):
        raise ConfigurationError(f"namespace {namespace!r} must be a DNS-1123 label (a-z, 0-9, '-')")
    if service_account_name is not None and not _DNS1123_RE.fullmatch(service_account_name):
        raise ConfigurationError(f"service account name {service_account_name!r} is not a DNS-1123 label")
    if not _S3_RE.fullmatch(storage_uri):
        raise ConfigurationError(
            f"storage URI {storage_uri!r} must be s3://<bucket>/<prefix>/ ending with '/', without "
            "credentials, query or fragment (KServe fetches every object under the prefix)")
    if not _SHA256_RE.fullmatch(model_sha256):
        raise ConfigurationError("model_sha256 must be 64 lowercase hex digits")
    if not runtime:
        raise ConfigurationError("runtime must name a ServingRuntime that supports modelFormat onnx")
    mlseal_annotations = {SHA_ANNOTATION: model_sha256, URI_ANNOTATION: storage_uri}
    merged = {**_string_map(annotations, "annotations"), **mlseal_annotations}
    clash = sorted(k for k in mlseal_annotations if (annotations or {}).get(k, merged[k]) != merged[k])
    if clash:
        raise ConfigurationError(f"annotations {clash} are set by mlseal from the model; do not pass them")
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": dict(sorted(merged.items()))}
    if labels:
        metadata["labels"] = dict(sorted(_string_map(labels, "labels").items()))
    predictor: dict[str, Any] = {
        "model": {
            "modelFormat": {"name": "onnx", "version": "1"},
            "runtime": runtime,
            "protocolVersion": PROTOCOL_VERSION,
            "storageUri": storage_uri,
        },
    }
    if service_account_name is not None:
        predictor["serviceAccountName"] = service_account_name
    return {"apiVersion": KSERVE_API, "kind": "InferenceService", "metadata": metadata,
            "spec": {"predictor": predictor}}


def _string_map(value: Mapping[str, str] | None, what: str) -> dict[str, str]:
    out = dict(value or {})
    bad = sorted(repr(k) for k, v in out.items() if not (isinstance(k, str) and k and isinstance(v, str)))
    if bad:
        raise ConfigurationError(f"{what} must map non-empty strings to strings; bad keys {bad}")
    return out
