"""A self-contained HTML lineage report: raw data → … → deployment manifest.

The report shows one run's chain of ledger records as an inline SVG graph (one node per
stage, edges labelled with the artifact digests that link them) followed by a card per
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlseal.ledger.record import Record, Status

#: the order stages appear in, left to right
STAGE_ORDER = ("ingest", "process", "train", "evaluate", "deploy")

_NODE_W = 150
_NODE_H = 92
_GAP = 46
_MARGIN = 20


@dataclass(frozen=True)
class Verification:
    """What `ledger verify` said, shown in the report header."""

    ok: bool
    size: int
    root: str
    problems: Sequence[str] = field(default_factory=tuple)


def lineage_chain(records: Sequence[Record], last_seq: int) -> list[Record]:
    """The records `last_seq` descends from (following inputs' producer_seq), oldest first."""
    by_seq = {r.seq: r for r in records}
    seen: set[int] = set()
    todo = [last_seq]
    while todo:
        seq = todo.pop()
        if seq in seen or seq not in by_seq:
            continue
        seen.add(seq)
        todo.extend(i.producer_seq for i in by_seq[seq].inputs if i.producer_seq is not None)
    return [by_seq[s] for s in sorted(seen)]


def _short(digest: str | None, n: int = 12) -> str:
    return (digest or "—")[:n]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _node_label(r: Record) -> str:
    name = r.component.name or r.stage
    return name if name == r.stage else f"{r.stage}: {name}"


def render_svg(chain: Sequence[Record], *, source: str | None = None, manifest: str | None = None) -> str:
    """The lineage graph: source → one node per record → deployment manifest."""
    nodes: list[tuple[str, str, str, str]] = []  # (id, title, line2, css class)
    if source is not None:
        nodes.append(("raw", "raw data", source[-24:], "src"))
    for r in chain:
        status = "failed" if r.status is Status.FAILED else "ok"
        nodes.append((f"seq{r.seq}", _node_label(r), f"#{r.seq} · {r.signer.name}", f"stage {r.stage} {status}"))
    if manifest is not None:
        nodes.append(("manifest", "deployment manifest", manifest[-24:], "dst"))
    width = _MARGIN * 2 + len(nodes) * _NODE_W + max(0, len(nodes) - 1) * _GAP
    height = _MARGIN * 2 + _NODE_H + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="lineage" role="img" '
        f'aria-label="lineage graph" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#455a64"/></marker></defs>',
    ]
    for i, (nid, title, line2, css) in enumerate(nodes):
        x = _MARGIN + i * (_NODE_W + _GAP)
        y = _MARGIN
        stage = css.split()[1] if css.startswith("stage") else css
        parts.append(
            f'<g class="node {_e(css)}" id="{_e(nid)}" data-stage="{_e(stage)}">'
            f'<rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" rx="10"/>'
            f'<text x="{x + _NODE_W / 2}" y="{y + 34}" class="t1">{_e(title)}</text>'
            f'<text x="{x + _NODE_W / 2}" y="{y + 58}" class="t2">{_e(line2)}</text></g>'
        )
        if i + 1 < len(nodes):
            x1, x2, ym = x + _NODE_W, x + _NODE_W + _GAP, y + _NODE_H / 2
            parts.append(
                f'<line class="edge" x1="{x1}" y1="{ym}" x2="{x2 - 2}" y2="{ym}" marker-end="url(#arrow)"/>'
            )
            digest = _edge_digest(nodes, i, chain)
            if digest:
                parts.append(f'<text class="edge-label" x="{(x1 + x2) / 2}" y="{ym + _NODE_H / 2 + 18}">'
                             f"{_e(digest[:8])}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _edge_digest(nodes: Sequence[tuple[str, str, str, str]], i: int, chain: Sequence[Record]) -> str | None:
    """The digest of the artifact leaving node i (the first output of its record)."""
    nid = nodes[i][0]
    if not nid.startswith("seq"):
        return None
    seq = int(nid[3:])
    rec = next((r for r in chain if r.seq == seq), None)
    return rec.outputs[0].sha256 if rec and rec.outputs else None


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
svg .edge{stroke:#455a64;stroke-width:1.5}
svg .edge-label{font:10px ui-monospace,monospace;text-anchor:middle;fill:#546e7a}
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


def _param_text(v: Any) -> str:
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= 200 else text[:200] + "…"


def render_report(
    chain: Sequence[Record],
    *,
    title: str = "mlseal lineage report",
    verification: Verification | None = None,
    source: str | None = None,
    manifest: str | None = None,
    facts: Mapping[str, str] | None = None,
) -> str:
    """HTML for one lineage chain (oldest first). Everything is escaped; nothing is fetched."""
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
        f'<div class="summary">{_kv_table(header)}</div>'
        f'<h2>Lineage</h2><div class="graph">{render_svg(chain, source=source, manifest=manifest)}</div>'
        f"<h2>Stages</h2>{''.join(_card(r) for r in chain)}"
        "</body></html>\n"
    )
