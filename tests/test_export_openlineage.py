"""`mlseal export openlineage`: one RunEvent per stage run, rebuilt and re-serialised by openlineage-python
(its generated spec classes check every field), posted to a local Marquez-compatible receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attr
import jsonschema
import pytest
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated import dataset_version_dataset, error_message_run, job_type_job, parent_run
from openlineage.client.generated.base import DatasetFacet, RunFacet
from openlineage.client.serde import Serde

import mlseal.export
from mlseal.cli import main
from mlseal.export.openlineage import ARTIFACT_FACET, RECORD_FACET
from tests.export_world import World, make_world, records

SCHEMAS = Path(mlseal.export.__file__).parent / "schemas"


@attr.define(kw_only=True)
class MlsealRecordRunFacet(RunFacet):
    """The custom run facet, declared the way openlineage-python declares facets."""

    seq: int
    entrySha256: str
    stage: str
    status: str
    signer: dict[str, str]
    ledger: dict[str, str]
    component: dict[str, str] = attr.field(factory=dict)
    metrics: dict[str, float] = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return RECORD_FACET


@attr.define(kw_only=True)
class MlsealArtifactDatasetFacet(DatasetFacet):
    digest: dict[str, str]
    role: str
    name: str
    mediaType: str | None = None
    bundleSha256: str | None = None
    producerSeq: int | None = None

    @staticmethod
    def _get_schema() -> str:
        return ARTIFACT_FACET


def _fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def rebuild(e: dict[str, Any]) -> RunEvent:
    """The event as openlineage-python objects: its validators run on every field (UUID run ids,
    ISO 8601 times with a time, URIs) and required fields must be present."""
    rf = e["run"]["facets"]
    record = rf["mlseal_record"]
    run_facets: dict[str, RunFacet] = {
        "mlseal_record": MlsealRecordRunFacet(producer=record["_producer"], **_fields(record))}
    if "parent" in rf:
        p = rf["parent"]
        run_facets["parent"] = parent_run.ParentRunFacet(
            producer=p["_producer"], run=parent_run.Run(runId=p["run"]["runId"]),
            job=parent_run.Job(namespace=p["job"]["namespace"], name=p["job"]["name"]))
    if "errorMessage" in rf:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            producer=rf["errorMessage"]["_producer"], **_fields(rf["errorMessage"]))

    def facets(d: dict[str, Any]) -> dict[str, DatasetFacet]:
        f = d["facets"]
        return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(
                    producer=f["version"]["_producer"], datasetVersion=f["version"]["datasetVersion"]),
                "mlseal_artifact": MlsealArtifactDatasetFacet(producer=f["mlseal_artifact"]["_producer"],
                                                              **_fields(f["mlseal_artifact"]))}

    jt = e["job"]["facets"]["jobType"]
    return RunEvent(
        eventType=RunState(e["eventType"]), eventTime=e["eventTime"], producer=e["producer"],
        run=Run(runId=e["run"]["runId"], facets=run_facets),
        job=Job(namespace=e["job"]["namespace"], name=e["job"]["name"],
                facets={"jobType": job_type_job.JobTypeJobFacet(producer=jt["_producer"], **_fields(jt))}),
        inputs=[InputDataset(namespace=d["namespace"], name=d["name"], facets=facets(d)) for d in e["inputs"]],
        outputs=[OutputDataset(namespace=d["namespace"], name=d["name"], facets=facets(d)) for d in e["outputs"]],
    )


def _no_empty(v: Any) -> Any:
    """Without the empty facet maps the library adds (``inputFacets: {}``): the spec makes them optional."""
    if isinstance(v, dict):
        return {k: _no_empty(x) for k, x in v.items() if x != {}}
    if isinstance(v, list):
        return [_no_empty(x) for x in v]
    return v


def _schema(name: str) -> dict[str, Any]:
    doc = json.loads((SCHEMAS / f"{name}.json").read_text())
    return {**doc["$defs"][name], "$defs": doc["$defs"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("ol") / "w", failed_evaluation=True)


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_event_is_what_openlineage_python_makes_of_it(world: World, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    assert main(["export", "openlineage", *world.run_args(), "--out", str(out)]) == 0
    events = _events(out)
    assert len(events) == len(records(world))
    for e in events:
        # serialised back by the library, the event is exactly what mlseal wrote: field names,
        # types, the spec's schema URLs for the event and the standard facets
        assert _no_empty(Serde.to_dict(rebuild(e))) == _no_empty(e)
        jsonschema.validate(e["run"]["facets"]["mlseal_record"], _schema("MlsealRecordRunFacet"),
                            format_checker=jsonschema.FormatChecker())
        for d in (*e["inputs"], *e["outputs"]):
            jsonschema.validate(d["facets"]["mlseal_artifact"], _schema("MlsealArtifactDatasetFacet"),
                                format_checker=jsonschema.FormatChecker())


def test_one_event_per_stage_run_with_digests_seq_and_signer(world: World, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    assert main(["export", "openlineage", *world.run_args(), "--out", str(out)]) == 0
    events = _events(out)
    recs = records(world)
    for e, r in zip(events, recs, strict=True):
        facet = e["run"]["facets"]["mlseal_record"]
        assert (facet["seq"], facet["stage"], facet["signer"]["name"]) == (r.seq, r.stage, r.stage)
        assert facet["signer"]["keyId"] == r.signer.key_id
        assert e["eventTime"] == r.time and e["job"]["name"] == r.component.name
        assert [d["facets"]["version"]["datasetVersion"] for d in e["inputs"]] == [f"sha256:{i.sha256}"
                                                                                  for i in r.inputs]
        assert [d["facets"]["mlseal_artifact"]["digest"]["sha256"] for d in e["outputs"]] == [o.sha256
                                                                                              for o in r.outputs]
    train = events[world.seqs["train"]]
    assert train["outputs"][0]["namespace"] == "file"
    assert train["outputs"][0]["name"] == str(world.model_dir)
    assert train["run"]["facets"]["parent"]["job"]["name"] == "mlseal-reference"
    failed = events[world.seqs["reevaluate"]]
    assert failed["eventType"] == "FAIL"
    assert failed["run"]["facets"]["errorMessage"]["message"].startswith("gate accuracy: observed 0.61")
    # run ids are stable (posting twice is idempotent) and distinct per record
    again = tmp_path / "again.jsonl"
    assert main(["export", "openlineage", *world.run_args(), "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()
    assert len({e["run"]["runId"] for e in events}) == len(events)


def test_model_and_run_selections(world: World, tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    assert main(["export", "openlineage", world.model_sha256, *world.run_args(), "--out", str(out)]) == 0
    seqs = [e["run"]["facets"]["mlseal_record"]["seq"] for e in _events(out)]
    assert seqs == sorted(world.seqs.values())  # the lineage, what was made from the model, its evaluations
    assert main(["export", "openlineage", *world.run_args(), "--run", "4f1c2d9e-run", "--out", str(out)]) == 0
    assert [e["run"]["facets"]["mlseal_record"]["seq"] for e in _events(out)] == [
        s for k, s in world.seqs.items() if k != "reference"]


class _Receiver:
    def __init__(self, status: int = 201) -> None:
        self.status = status
        self.posts: list[tuple[str, dict[str, str], Any]] = []


@pytest.fixture
def receiver() -> Iterator[tuple[_Receiver, str]]:
    state = _Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.posts.append((self.path, dict(self.headers), json.loads(body)))
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_emit_posts_every_event_to_a_marquez_endpoint(world: World, receiver: tuple[_Receiver, str],
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state, url = receiver
    monkeypatch.setenv("OPENLINEAGE_API_KEY", "k-123")
    assert main(["export", "openlineage", *world.run_args(), "--emit", url]) == 0
    assert [p for p, _, _ in state.posts] == ["/api/v1/lineage"] * len(records(world))
    assert all(h["Authorization"] == "Bearer k-123" and h["Content-Type"] == "application/json"
               for _, h, _ in state.posts)
    out = tmp_path / "e.jsonl"
    assert main(["export", "openlineage", *world.run_args(), "--out", str(out)]) == 0
    assert [b for _, _, b in state.posts] == _events(out)


def test_a_refusing_server_is_an_environment_error(world: World, receiver: tuple[_Receiver, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    state, url = receiver
    state.status = 500
    assert main(["export", "openlineage", *world.run_args(), "--emit", url + "/custom/path"]) == 2
    err = capsys.readouterr().err
    assert f"the lineage server at {url}/custom/path refused event 1 of" in err and "HTTP 500" in err


def test_an_untrusted_record_stops_the_export_before_anything_is_sent(
        tmp_path: Path, receiver: tuple[_Receiver, str], capsys: pytest.CaptureFixture[str]) -> None:
    from mlseal.ledger import open_ledger
    from mlseal.ledger.record import Component, OutputRef, RecordDraft, Sha256Hex

    world = make_world(tmp_path / "w", checkpoint=False)
    with open_ledger(world.url) as led:
        seq = led.append(RecordDraft(stage="train", component=Component(name="train"),
                                     outputs=(OutputRef(name="m", uri="file:///m", sha256=Sha256Hex("cd" * 32)),)),
                         world.keys["rogue"], signer_name="train").seq
    state, url = receiver
    out = tmp_path / "e.jsonl"
    assert main(["export", "openlineage", *world.run_args(), "--emit", url, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"the ledger holds records that do not verify: record {seq}:" in err and "does not list" in err
    assert state.posts == [] and not out.exists()
