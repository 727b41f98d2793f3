"""A self-contained HTML lineage report: raw data → … → deployment manifest.

The report shows one run's chain of ledger records: a table of every evaluation gate
(metric, threshold, observed value, pass or FAIL), an inline SVG graph (one node per
stage, edges labelled with the artifact digests that link them), then a card per
stage: digests of inputs and outputs, signer, metrics, and the secrets it used by path
and version. It has no external assets (no scripts, fonts, images or stylesheets from
elsewhere), so it opens offline and can be archived with an audit.

Rendering is pure: records in, HTML text out.

    >>> from mlseal.report import render_report
    >>> html = render_report([], title="empty")
    >>> html.startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlseal.errors import ConfigurationError
from mlseal.gates import parse_gates
from mlseal.ledger.record import Record, Status

__all__ = ["Verification", "render_report", "render_svg"]

_NODE_W = 124
_NODE_H = 92
_GAP_X = 30
_GAP_Y = 22
_MARGIN = 12


@dataclass(frozen=True)
class Verification:
    """What `ledger verify` said, shown in the report header."""

    ok: bool
    size: int
    root: str
    problems: Sequence[str] = field(default_factory=tuple)
    #: the size of the signed checkpoint the ledger was verified against (None: none)
    checkpoint: int | None = None


def _short(digest: str | None, n: int = 12) -> str:
    return (digest or "—")[:n]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _node_label(r: Record) -> str:
    name = r.component.name or r.stage
    return name if name == r.stage else f"{r.stage}: {name}"


@dataclass(frozen=True)
class _Node:
    id: str
    lines: tuple[str, ...]
    css: str
    stage: str
    col: int = 0
    row: int = 0


def _layout(
    chain: Sequence[Record], source: str | None, manifest: str | None
) -> tuple[list[_Node], list[tuple[str, str]]]:
    """Nodes in columns by depth (longest path from a root), and the edges between them."""
    in_chain = {r.seq for r in chain}
    depth: dict[int, int] = {}
    edges: list[tuple[str, str]] = []
    offset = 1 if source is not None else 0
    for r in sorted(chain, key=lambda x: x.seq):  # producers always have smaller seqs
        parents = sorted({i.producer_seq for i in r.inputs if i.producer_seq in in_chain})
        depth[r.seq] = offset + (1 + max(depth[p] - offset for p in parents) if parents else 0)
        edges.extend((f"seq{p}", f"seq{r.seq}") for p in parents)
        if source is not None and r.stage == "ingest":
            edges.append(("raw", f"seq{r.seq}"))
    nodes: list[_Node] = []
    rows: dict[int, int] = {}

    def place(nid: str, lines: tuple[str, ...], css: str, stage: str, col: int) -> None:
        rows[col] = rows.get(col, -1) + 1
        nodes.append(_Node(nid, lines, css, stage, col, rows[col]))

    if source is not None:
        place("raw", ("raw data", _tail(source, 18), "(not a stage)"), "node src", "source", 0)
    # The main path (from the last record back through its deepest input) goes on row 0.
    by_seq = {r.seq: r for r in chain}
    main: set[int] = set()
    cur = max(by_seq) if by_seq else None
    while cur is not None:
        main.add(cur)
        parents = [i.producer_seq for i in by_seq[cur].inputs if i.producer_seq in in_chain]
        cur = max(parents, key=lambda p: (depth[p], p)) if parents else None
    for r in sorted(chain, key=lambda x: (depth[x.seq], x.seq not in main, x.seq)):
        status = "failed" if r.status is Status.FAILED else "ok"
        out = f"sha256 {r.outputs[0].sha256[:10]}" if r.outputs else ("FAILED" if status == "failed" else "—")
        place(f"seq{r.seq}", (r.component.name or r.stage, f"{r.stage} · #{r.seq}", out, r.signer.name),
              f"node stage {status}", r.stage, depth[r.seq])
    if manifest is not None:
        last = max((depth[r.seq] for r in chain if r.stage == "deploy"), default=max(depth.values(), default=-1))
        place("manifest", ("deployment", "manifest", _tail(manifest, 18)), "node dst", "manifest", last + 1)
        edges.extend((f"seq{r.seq}", "manifest") for r in chain if r.stage == "deploy" and r.outputs)
    return nodes, edges


def _tail(text: str, n: int) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


def render_svg(chain: Sequence[Record], *, source: str | None = None, manifest: str | None = None) -> str:
    """The lineage graph: raw data → one node per record (columns by depth) → deployment manifest.

    The SVG has a viewBox and scales to the page width, so every stage stays visible.
    """
    nodes, edges = _layout(chain, source, manifest)
    cols = max((n.col for n in nodes), default=0) + 1
    rows = max((n.row for n in nodes), default=0) + 1
    width = _MARGIN * 2 + cols * _NODE_W + (cols - 1) * _GAP_X
    height = _MARGIN * 2 + rows * _NODE_H + (rows - 1) * _GAP_Y
    pos = {n.id: (_MARGIN + n.col * (_NODE_W + _GAP_X), _MARGIN + n.row * (_NODE_H + _GAP_Y)) for n in nodes}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="lineage" role="img" aria-label="lineage graph" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'style="max-width:{width * 1.25:.0f}px">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#455a64"/></marker></defs>',
    ]
    for a, b in edges:
        if a not in pos or b not in pos:
            continue
        (xa, ya), (xb, yb) = pos[a], pos[b]
        x1, y1, x2, y2 = xa + _NODE_W, ya + _NODE_H / 2, xb - 2, yb + _NODE_H / 2
        # Long edges run straight along their source row, then bend into the target.
        bend = max(x1, x2 - _GAP_X + 4) if y1 != y2 else x1
        mid = (bend + x2) / 2
        parts.append(f'<path class="edge" data-from="{_e(a)}" data-to="{_e(b)}" '
                     f'd="M{x1},{y1} L{bend},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y = pos[n.id]
        texts = "".join(
            f'<text x="{x + _NODE_W / 2}" y="{y + 22 + 19 * i}" class="{"t1" if i == 0 else "t2"}">{_e(t)}</text>'
            for i, t in enumerate(n.lines)
        )
        parts.append(f'<g class="{_e(n.css)}" id="{_e(n.id)}" data-stage="{_e(n.stage)}">'
                     f'<rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" rx="10"/>{texts}</g>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2327;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.ok{color:#1b5e20}.bad{color:#b71c1c}
.summary{background:#fff;border:1px solid #dde;border-radius:8px;padding:12px 16px}
.graph{overflow-x:auto;background:#fff;border:1px solid #dde;border-radius:8px;padding:8px}
svg .node rect{fill:#e3f2fd;stroke:#1565c0;stroke-width:1.5}
svg .node.failed rect{fill:#ffebee;stroke:#b71c1c}
svg .node.src rect,svg .node.dst rect{fill:#f1f8e9;stroke:#558b2f}
svg .t1{font:600 13px system-ui,sans-serif;text-anchor:middle;fill:#0d47a1}
svg .t2{font:11px ui-monospace,monospace;text-anchor:middle;fill:#37474f}
svg .edge{stroke:#455a64;stroke-width:1.5;fill:none}
tr.gate.pass td:last-child{color:#1b5e20;font-weight:600}tr.gate.fail td:last-child{color:#b71c1c;font-weight:700}
tr.gate.fail{background:#ffebee}
.card{background:#fff;border:1px solid #dde;border-radius:8px;padding:10px 16px;margin:10px 0}
.card h3{margin:4px 0 8px;font-size:15px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;
vertical-align:top}code{font:12px ui-monospace,monospace;word-break:break-all}
"""


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    if not rows:
        return "<p>—</p>"
    body = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _card(r: Record) -> str:
    rows: list[tuple[str, str]] = [
        ("status", r.status.value + (f" ({r.error})" if r.error else "")),
        ("signer", f"{r.signer.name} (key {r.signer.key_id[:16]}…)"),
        ("time", r.time),
        ("component source", _short(r.component.source_sha256, 64)),
    ]
    if r.component.image:
        rows.append(("image", r.component.image))
    if r.run.run_id or r.run.task:
        rows.append(("KFP run / task", f"{r.run.run_id or '—'} / {r.run.task or '—'}"))
    for i in r.inputs:
        rows.append((f"input {i.name}", f"sha256:{i.sha256} ← record #{i.producer_seq}"))
    for o in r.outputs:
        rows.append((f"output {o.name}", f"sha256:{o.sha256} ({o.media_type}); bundle sha256:{o.bundle_sha256}"))
    for s in r.secrets:
        rows.append(("secret", f"{s.path} (version {s.version if s.version is not None else '—'})"))
    for k, m in sorted(r.metrics.items()):
        rows.append((f"metric {k}", f"{m:.4g}"))
    for k, v in sorted(r.params.items()):
        rows.append((f"param {k}", _param_text(v)))
    return (
        f'<div class="card" id="card-{r.seq}" data-stage="{_e(r.stage)}"><h3>#{r.seq} · {_e(_node_label(r))}</h3>'
        f"{_kv_table(rows)}</div>"
    )


def _gates(chain: Sequence[Record]) -> str:
    """Each evaluation's gates at a glance: metric, threshold, observed value, pass or FAIL
    (judged by `mlseal.gates`, as the evaluate stage and admission judge them)."""
    rows: list[str] = []
    for r in chain:
        if "gates" not in r.params:
            continue
        where = f"#{r.seq} {_node_label(r)}"
        try:
            gates = parse_gates(r.params["gates"])
        except ConfigurationError as exc:
            rows.append(f'<tr class="gate fail"><td>{_e(where)}</td><td colspan="4">unreadable gates: {_e(exc)}'
                        '</td><td>FAIL</td></tr>')
            continue
        for g in sorted(gates, key=lambda g: g.metric):
            value = r.metrics.get(g.metric)
            verdict = "pass" if g.met_by(value) else "FAIL"
            threshold = g.bounds()
            shown = "missing" if value is None else f"{value:.4g}"
            rows.append(f'<tr class="gate {verdict.lower()}"><td>{_e(where)}</td><td>{_e(g.metric)}</td>'
                        f"<td>{_e(threshold)}</td><td>{_e(shown)}</td><td>{verdict}</td></tr>")
    if not rows:
        return ""
    head = "<tr><th>record</th><th>metric</th><th>threshold</th><th>value</th><th>verdict</th></tr>"
    return f'<h2>Gates</h2><div class="summary"><table id="gates">{head}{"".join(rows)}</table></div>'


def _exports(exports: Sequence[tuple[str, str, str]]) -> str:
    if not exports:
        return ""
    items = "".join(f'<li><a href="{_e(href)}">{_e(label)}</a> <code>{_e(href)}</code>: {_e(what)}</li>'
                    for label, href, what in exports)
    return f'<h2>Exports</h2><ul class="exports" id="exports">{items}</ul>'


def _param_text(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return text if len(text) <= 200 else text[:200] + "…"


def render_report(
    chain: Sequence[Record],
    *,
    title: str = "mlseal lineage report",
    verification: Verification | None = None,
    source: str | None = None,
    manifest: str | None = None,
    facts: Mapping[str, str] | None = None,
    exports: Sequence[tuple[str, str, str]] = (),
) -> str:
    """HTML for one lineage chain (oldest first). Everything is escaped; nothing is fetched.

    `exports` are (label, relative link, description) of files written beside the report
    (the provenance, ML-BOM, lineage events and audit pack): listed with links.
    """
    header: list[tuple[str, str]] = list((facts or {}).items())
    if verification is not None:
        verdict = "verified" if verification.ok else "FAILED: " + "; ".join(verification.problems)
        header = [("ledger", f"{verdict} · {verification.size} entries · root {verification.root}"), *header]
    ok_class = "ok" if verification is None or verification.ok else "bad"
    stages = " → ".join(_node_label(r) for r in chain) or "no records"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class=\"{ok_class}\">{_e(stages)}</p>"
        f'<div class="summary">{_kv_table(header)}</div>{_gates(chain)}'
        f"{_exports(exports)}"
        f'<h2>Lineage</h2><div class="graph">{render_svg(chain, source=source, manifest=manifest)}</div>'
        f"<h2>Stages</h2>{''.join(_card(r) for r in chain)}"
        "</body></html>\n"
    )
