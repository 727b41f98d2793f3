"""Malformed admission requests are never allowed and never crash the server (hypothesis).

Where each case runs:

- `test_malformed_reviews_are_denied`: 10,000 generated bodies straight into
  `AdmissionController.review` — the function the HTTP endpoint hands every body to —
  against the real ledger. This is the volume part; it skips HTTP/TLS for speed.
- `test_malformed_over_tls`: a 300-case sample of the same generator POSTed over real
  TLS to the running uvicorn server, on one keep-alive connection, checking after each
  that the server still answers.
- `test_huge_and_deep_over_tls`: the extreme sizes (deeply nested JSON, multi-MiB
  strings, oversized bodies) over real TLS, case by case.

Every generated body is broken in a way that must deny: bytes that are not JSON, JSON
that is not an AdmissionReview, or the allowed review of the trusted model with one
field on its decision path replaced by a wrong type or value, or removed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlseal.admission.webhook import AdmissionController, DecisionCache
from mlseal.ledger import open_ledger
from tests.fixtures_admission import AdmissionWorld, RunningWebhook, isvc, review

# Flat strategies: hypothesis' own cost per example dominates these tests, and a wrong
# value need not be deep to be wrong (deep and huge bodies have their own strategies).
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
_TEXT = st.text(max_size=8)
_LIST = st.lists(_SCALARS | _TEXT, max_size=3)
_DICT = st.dictionaries(st.text(max_size=4), _SCALARS | _TEXT, max_size=3)
JSON_VALUES = _SCALARS | _TEXT | _LIST | _DICT
NOT_STRING = _SCALARS | _LIST | _DICT
NOT_OBJECT = _SCALARS | _TEXT | _LIST
_NOT_NONE_SCALARS = st.booleans() | st.integers() | st.floats(allow_nan=False)

# (path into the review, strategy for a wrong value): paths on the decision path of the
# good InferenceService review; any wrong value there must deny.
def _text_unlike(original: str) -> st.SearchStrategy[str]:
    return st.text(max_size=70).filter(lambda s: original not in s and s.strip().rstrip("/") != original)


def _mutations(good: dict[str, Any]) -> list[tuple[tuple[str, ...], st.SearchStrategy[Any]]]:
    obj = good["request"]["object"]
    sha = obj["metadata"]["annotations"]["mlseal.dev/model-sha256"]
    uri = obj["spec"]["predictor"]["model"]["storageUri"]
    return [
        (("apiVersion",), NOT_STRING | _text_unlike("admission.k8s.io/v1")),
        (("kind",), NOT_STRING | _text_unlike("AdmissionReview")),
        (("request",), NOT_OBJECT),
        (("request", "uid"), NOT_STRING | st.just("")),
        (("request", "operation"), NOT_STRING | st.text(max_size=10).filter(
            lambda s: s not in ("CREATE", "UPDATE", "DELETE", "CONNECT"))),
        (("request", "dryRun"), st.integers() | st.floats(allow_nan=False) | _LIST | _DICT),
        (("request", "namespace"), _NOT_NONE_SCALARS | _LIST | _DICT),
        (("request", "object"), _NOT_NONE_SCALARS | _TEXT | _LIST),
        (("request", "object", "kind"), NOT_STRING | _text_unlike("InferenceService")),
        (("request", "object", "apiVersion"), NOT_STRING | _text_unlike("serving.kserve.io/v1beta1")),
        (("request", "object", "metadata"), NOT_OBJECT),
        (("request", "object", "metadata", "annotations"), _NOT_NONE_SCALARS | _TEXT | _LIST
         | st.dictionaries(st.text(max_size=20), JSON_VALUES, max_size=3)),
        (("request", "object", "metadata", "annotations", "mlseal.dev/model-sha256"), NOT_STRING | _text_unlike(sha)
         | st.text("0123456789abcdef", min_size=64, max_size=64).filter(lambda s: s != sha)),
        (("request", "object", "spec"), NOT_OBJECT),
        (("request", "object", "spec", "predictor"), NOT_OBJECT | st.dictionaries(
            st.sampled_from(["model", "sklearn", "containers", "minReplicas"]), NOT_OBJECT, max_size=2)),
        (("request", "object", "spec", "predictor", "model"), _NOT_NONE_SCALARS | _TEXT | _LIST
         | st.dictionaries(st.sampled_from(["storageUri", "storage", "modelFormat"]), NOT_STRING, min_size=1)),
        (("request", "object", "spec", "predictor", "model", "storageUri"), NOT_STRING | _text_unlike(uri)),
    ]


REMOVABLE = [
    ("apiVersion",), ("kind",), ("request",), ("request", "uid"), ("request", "operation"), ("request", "object"),
    ("request", "object", "kind"), ("request", "object", "apiVersion"), ("request", "object", "metadata"),
    ("request", "object", "metadata", "annotations"),
    ("request", "object", "metadata", "annotations", "mlseal.dev/model-sha256"),
    ("request", "object", "spec"), ("request", "object", "spec", "predictor"),
    ("request", "object", "spec", "predictor", "model"),
    ("request", "object", "spec", "predictor", "model", "storageUri"),
]


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any, *, remove: bool = False) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    for k in path[:-1]:
        node = node[k]
    if remove:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def _encode_with(good: dict[str, Any], path: tuple[str, ...]) -> Callable[[Any], bytes]:
    """`good` with the value at `path` replaced by the argument, as JSON bytes."""
    return lambda v: json.dumps(_set(good, path, v)).encode()


def malformed_bodies(good: dict[str, Any]) -> st.SearchStrategy[bytes]:
    mutated = st.one_of(*[val.map(_encode_with(good, path)) for path, val in _mutations(good)])
    removed = st.sampled_from(REMOVABLE).map(lambda p: json.dumps(_set(good, p, None, remove=True)).encode())
    raw = st.binary(max_size=300).filter(lambda b: not b.strip().startswith(b"{"))
    junk_json = JSON_VALUES.map(lambda v: json.dumps(v).encode())
    truncated = st.integers(1, 2000).map(lambda n: json.dumps(good).encode()[:-n])
    deep = st.tuples(st.integers(500, 3_000), st.sampled_from(["[", '{"a":'])).map(
        lambda t: json.dumps(_set(good, ("request", "object", "metadata", "annotations"), "X"))
        .replace('"X"', t[1] * t[0] + "1" + ("]" if t[1] == "[" else "}") * t[0]).encode())
    huge = st.integers(1_000, 100_000).map(
        lambda n: json.dumps(_set(good, ("request", "object", "metadata", "annotations", "mlseal.dev/model-sha256"),
                                  "f" * n)).encode())
    return st.one_of(mutated, mutated, removed, raw, junk_json, truncated, deep, huge)


@pytest.fixture(scope="module")
def good_review(admission_world: AdmissionWorld) -> dict[str, Any]:
    return review(isvc(admission_world.models["good"]), uid="fuzz-uid")


@pytest.fixture(scope="module")
def controller(admission_world: AdmissionWorld, good_review: dict[str, Any]) -> AdmissionController:
    c = AdmissionController(admission_world.policy,
                            ledger_factory=lambda: open_ledger(admission_world.ledger_url, create=False),
                            cache=DecisionCache(256))
    c.follow()  # build the verified ledger view (the server's background thread does this)
    status, out = c.review(json.dumps(good_review).encode())
    assert status == 200 and out["response"]["allowed"] is True, out  # the unmutated review is allowed
    return c


def check_denied(status: int, out: dict[str, Any], body: bytes) -> None:
    assert status in (200, 400, 413), status
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    assert out["response"]["allowed"] is False, body[:300]
    assert out["response"]["status"]["message"].startswith("mlseal: ")
    json.dumps(out)  # serialisable


def test_malformed_reviews_are_denied(controller: AdmissionController, good_review: dict[str, Any]) -> None:
    @settings(max_examples=10_000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(malformed_bodies(good_review))
    def run(body: bytes) -> None:
        status, out = controller.review(body)
        check_denied(status, out, body)

    run()
    assert controller.metrics.decisions.value("denied", "internal_error") == 0, "a malformed body hit a bug"


def test_malformed_over_tls(webhook: RunningWebhook, good_review: dict[str, Any]) -> None:
    assert webhook.validate(good_review)["response"]["allowed"] is True
    conn = webhook.connection()

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(malformed_bodies(good_review))
    def run(body: bytes) -> None:
        status, data = webhook.request("POST", "/validate", body, conn)
        check_denied(status, json.loads(data), body)

    try:
        run()
    finally:
        conn.close()
    assert webhook.request("GET", "/healthz")[0] == 200
    assert webhook.validate(good_review)["response"]["allowed"] is True


@pytest.mark.parametrize(
    "make",
    [
        lambda g: b"[" * 200_000 + b"]" * 200_000,
        lambda g: json.dumps(_set(g, ("request", "object", "spec"), "S")).replace(
            '"S"', '{"a":' * 100_000 + "1" + "}" * 100_000).encode(),
        lambda g: json.dumps(_set(_set(g, ("request", "object", "metadata", "labels"),
                                       {f"k{i}": "v" * 100 for i in range(30_000)}),
                                  ("request", "object", "metadata", "annotations"), list(range(1000)))).encode(),
        lambda g: json.dumps(_set(g, ("request", "object", "metadata", "annotations", "mlseal.dev/model-sha256"),
                                  "a" * 7_000_000)).encode(),
        lambda g: b'{"apiVersion": "admission.k8s.io/v1", "x": "' + b"y" * (9 * 1024 * 1024) + b'"}',
        lambda g: json.dumps(good_uid_only(g)).encode(),
    ],
    ids=["deep-list", "deep-object", "many-keys", "7MiB-string", "oversized", "no-object"],
)
def test_huge_and_deep_over_tls(webhook: RunningWebhook, good_review: dict[str, Any], make: Any) -> None:
    body = make(good_review)
    status, data = webhook.request("POST", "/validate", body)
    check_denied(status, json.loads(data), body)
    assert webhook.validate(good_review)["response"]["allowed"] is True


def good_uid_only(g: dict[str, Any]) -> dict[str, Any]:
    return _set(g, ("request", "object"), None, remove=True)
