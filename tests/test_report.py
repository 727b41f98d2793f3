"""report.html: pure rendering, and the demo's report opened in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from mlseal.ledger.record import (
    Component,
    InputRef,
    OutputRef,
    Record,
    RecordDraft,
    SecretRef,
    Sha256Hex,
    SignerRef,
    Status,
)
from mlseal.report import Verification, render_report, render_svg
from tests.fixtures_pipeline import DemoRun

SHA = [Sha256Hex(f"{i:x}" * 64) for i in range(1, 10)]


def _rec(seq: int, stage: str, name: str, inputs: tuple[int, ...] = (), *, failed: bool = False,
         **kw: Any) -> Record:
    draft = RecordDraft(
        stage=stage,
        component=Component(name=name),
        inputs=tuple(InputRef(name=f"in{p}", uri=f"file:///a/{p}", sha256=SHA[p], producer_seq=p) for p in inputs),
        outputs=() if failed else (
            OutputRef(name="out", uri=f"file:///a/{seq}", sha256=SHA[seq], bundle_sha256=SHA[8]),
        ),
        status=Status.FAILED if failed else Status.OK,
        error="VerificationError: nope" if failed else None,
        **kw,
    )
    return draft.complete(seq=seq, prev="0" * 64, time="2026-01-01T00:00:00Z", signer=SignerRef("pipeline", "k" * 64))


def test_report_escapes_and_shows_secrets_by_reference() -> None:
    recs = [_rec(0, "ingest", "ingest", params={"source": "<script>alert(1)</script>"}),
            _rec(1, "process", "anonymize", (0,), secrets=(SecretRef("mlseal/anonymize/hmac", 3),),
                 metrics={"rows": 569.0}),
            _rec(2, "train", "train", (1,), failed=True)]
    html = render_report(recs, verification=Verification(ok=True, size=3, root="ab" * 32), source="raw.csv",
                         manifest=None, facts={"run": "<b>x</b>"})
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>x</b>" not in html
    assert "mlseal/anonymize/hmac (version 3)" in html
    assert 'class="node stage failed"' in html
    assert SHA[1] in html  # digests in full in the stage cards
    # self-contained: no scripts, no external references of any kind
    assert not re.search(r"<script|<link|<img|@import|url\(http|src=", html)
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"]


def gate_rows(html: str) -> list[tuple[str, str, str, str, str]]:
    """(record, metric, threshold, value, verdict) for each row of the report's gate table."""
    table = re.search(r'<table id="gates">(.*?)</table>', html, re.S)
    assert table is not None, "no gate table"
    rows = re.findall(r'<tr class="gate (\w+)"><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>',
                      table.group(1))
    for verdict_class, *_, verdict in rows:
        assert verdict.lower() == verdict_class  # the colour and the word agree
    return [tuple(r[1:]) for r in rows]


def test_report_shows_each_gate_threshold_value_and_verdict() -> None:
    gates = {"accuracy": {"min": 0.9}, "mia_advantage": {"max": 0.2}, "loss": {"min": 0.05, "max": 0.35},
             "robust_accuracy": {"min": 0.7}}
    recs = [_rec(0, "train", "train"),
            _rec(1, "evaluate", "evaluate", (0,), params={"gates": gates},
                 metrics={"accuracy": 0.95, "mia_advantage": 0.31, "loss": 0.2})]
    html = render_report(recs)
    assert gate_rows(html) == [
        ("#1 evaluate", "accuracy", "&gt;= 0.9", "0.95", "pass"),
        ("#1 evaluate", "loss", "&gt;= 0.05 and &lt;= 0.35", "0.2", "pass"),
        ("#1 evaluate", "mia_advantage", "&lt;= 0.2", "0.31", "FAIL"),
        ("#1 evaluate", "robust_accuracy", "&gt;= 0.7", "missing", "FAIL"),
    ]
    # a gate spec the library cannot read is shown as such, not hidden
    bad = render_report([_rec(0, "evaluate", "evaluate", params={"gates": {"accuracy": 0.9}})])
    assert "unreadable gates" in bad and "bare number" in bad


def test_svg_places_every_node_and_edge() -> None:
    recs = [_rec(0, "ingest", "reference"), _rec(1, "ingest", "ingest"), _rec(2, "process", "validate", (0, 1)),
            _rec(3, "deploy", "deploy", (2,))]
    svg = render_svg(recs, source="raw.csv", manifest="isvc.yaml")
    ids = re.findall(r'<g class="[^"]*" id="([^"]+)"', svg)
    assert ids == ["raw", "seq1", "seq0", "seq2", "seq3", "manifest"]  # main path first in its column
    edges = set(re.findall(r'data-from="([^"]+)" data-to="([^"]+)"', svg))
    assert edges == {("raw", "seq0"), ("raw", "seq1"), ("seq0", "seq2"), ("seq1", "seq2"), ("seq2", "seq3"),
                     ("seq3", "manifest")}


# --- the demo's report in a real browser --------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("MLSEAL_REQUIRE_CHROMIUM"):
        pytest.fail("MLSEAL_REQUIRE_CHROMIUM is set but no chromium is installed (apt-get install chromium)")
    pytest.skip("chromium is not installed")


def _chromium_cmd(binary: str, profile: Path) -> list[str]:
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}"]


def _png_pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the inflated scanlines of a PNG (enough to tell blank from not)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo_run: DemoRun, tmp_path: Path) -> None:
    binary = _chromium()
    result, _ = demo_run
    report = result.workdir / "report.html"
    url = report.resolve().as_uri()
    dom = subprocess.run([*_chromium_cmd(binary, tmp_path / "p1"), "--dump-dom", url],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    svg = re.search(r'<svg[^>]*id="lineage".*?</svg>', dom, re.S)
    assert svg, "the lineage graph is missing from the rendered page"
    stages = set(re.findall(r'data-stage="([a-z]+)"', svg.group(0)))
    assert {"source", "ingest", "process", "train", "evaluate", "deploy", "manifest"} <= stages
    for name in ("ingest", "anonymize", "encrypt", "validate", "train", "evaluate", "deploy"):
        assert f">{name}</text>" in svg.group(0), name
    # the exports are linked, and each link opens a file beside the report
    links = re.findall(r'<ul class="exports" id="exports">(.*?)</ul>', dom, re.S)
    hrefs = re.findall(r'<a href="([^"]+)">', links[0]) if links else []
    assert hrefs == ["exports/model.intoto.jsonl", "exports/model.cdx.json", "exports/openlineage.jsonl",
                     "exports/model.pack"]
    assert all((report.parent / h).is_file() for h in hrefs)
    shot = tmp_path / "report.png"
    subprocess.run([*_chromium_cmd(binary, tmp_path / "p2"), "--window-size=1400,900", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    width, height, pixels = _png_pixels(shot.read_bytes())
    assert (width, height) == (1400, 900)
    assert len(set(pixels)) > 32, "the screenshot is blank"
