"""The ragops page: one HTML document with inline SVG charts and tables (nothing loaded from elsewhere)."""

from __future__ import annotations

import html
from typing import Any

from rag_ops.dashboard.svg import bar_chart, hbar_chart, line_chart

STYLE = """body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
section{margin-bottom:1em}table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 6px;font-size:12px;text-align:left}
.empty{color:#666;font-style:italic}.json{font-size:11px;margin-left:.6em}.charts{display:flex;flex-wrap:wrap;gap:1em}
.ok{color:#2a7}.bad{color:#c33}"""


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _short(run_id: str) -> str:
    return run_id.split("__")[-1][:19] if "__" in run_id else run_id[:19]


def _section(chart: str, title: str, data: dict, body: str) -> str:
    link = f'<a class="json" href="api/{chart}">JSON</a>'
    inner = f'<p class="empty" data-empty="{chart}">{_esc(data["empty"])}</p>' if data.get("empty") else body
    return f'<section id="{chart}"><h2>{_esc(title)}{link}</h2>{inner}</section>'


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _versions(d: dict) -> str:
    hist = sorted(d["history"], key=lambda r: (r["created_at"] or "", r["version"]))
    labels = [f"v{r['version']} {(r['created_at'] or '')[:16]}" for r in hist]
    stores = sorted({r["store"] for r in hist})
    series = [(f"{s} version", [r["version"] if r["store"] == s else None for r in hist]) for s in stores]
    live = ", ".join(f"{s}: v{v}" for s, v in sorted(d["live"].items())) or "none"
    rows = [[r["store"], r["version"], r["status"], r["collection"], r["created_at"], r["swapped_at"], r["retired_at"],
             r["error"] or r["reason"]] for r in sorted(hist, key=lambda r: (r["store"], -r["version"]))]
    return (f"<p>Live: <b>{_esc(live)}</b> (index {_esc(d['index'])})</p>" + line_chart("versions", labels, series)
            + _table(["store", "version", "status", "collection", "built", "swapped", "retired", "reason / error"], rows))


def _runs(d: dict) -> str:
    labels = [_short(r["run_id"]) for r in d["runs"]]
    series = [(k, [r[k] for r in d["runs"]]) for k in ("new", "changed", "deleted", "failed")]
    return bar_chart("runs", labels, series, stacked=True)


def _encoding(d: dict) -> str:
    labels = [_short(r["run_id"]) for r in d["runs"]]
    bars = bar_chart("encoding", labels, [("encoded", [r["encoded"] for r in d["runs"]]),
                                          ("cache hits", [r["cache_hits"] for r in d["runs"]])], stacked=False)
    speed = line_chart("speed", labels, [("tokens/s", [r["tokens_per_second"] for r in d["runs"]])])
    rows = [[r["run_id"], r["chunks"], r["encoded"], r["cache_hits"], r["tokens"], r["encode_seconds"], r["tokens_per_second"]]
            for r in reversed(d["runs"][-10:])]
    return (f'<div class="charts">{bars}{speed}</div>'
            + _table(["run", "chunks", "encoded", "cache hits", "tokens", "encode s", "tokens/s"], rows))


def _recall(d: dict) -> str:
    charts = []
    for n, golden in enumerate(sorted({s["golden_set"] for s in d["series"]})):
        mine = [s for s in d["series"] if s["golden_set"] == golden]
        first_at: dict[str, str] = {}  # one scoring run scores every store: one x position per run
        for s in mine:
            for p in s["points"]:
                first_at[p["run_id"]] = min(first_at.get(p["run_id"], p["at"]), p["at"])
        runs = sorted(first_at, key=first_at.get)
        labels = [first_at[r][:16] for r in runs]
        series = []
        for s in mine:
            by_run = {p["run_id"]: p["value"] for p in s["points"]}
            series.append((f"{s['store']} {s['metric']}", [by_run.get(r) for r in runs]))
        lines = [(f"floor {m}", v) for m, v in sorted(d["floors"].items())]
        charts.append(f"<div><h3>{_esc(golden)}</h3>{line_chart(f'recall-{n}', labels, series, lines)}</div>")
    note = (f"<p>A run fails when a metric falls more than {_esc(d['tolerance'])} below the median of the last "
            f"{_esc(d['window'])} runs, or below a floor.</p>")
    return note + f'<div class="charts">{"".join(charts)}</div>'


def _drift(d: dict) -> str:
    checks = d["checks"]
    labels = [(c["at"] or "")[:16] for c in checks]
    th = d["thresholds"]
    charts = [
        line_chart("drift-auc", labels, [("classifier AUC", [c["auc"] for c in checks])], [("threshold", th["auc"])]),
        line_chart("drift-p", labels, [("MMD p-value", [c["p_value"] for c in checks])], [("threshold", th["p_value"])]),
        line_chart("drift-centroid", labels, [("centroid distance", [c["centroid_distance"] for c in checks])],
                   [("threshold", th["centroid_distance"])]),
    ]
    rows = [[c["at"], c["store"], "drift" if c["drifted"] else "no drift", "; ".join(c["reasons"])] for c in reversed(checks[-10:])]
    return (f"<p>Verdict rule: {_esc(d['rule'])}.</p><div class=\"charts\">{''.join(charts)}</div>"
            + _table(["checked", "store", "verdict", "reasons"], rows))


def _quarantine(d: dict) -> str:
    rows = [(f"{g['stage']}: {g['reason']}", g["documents"]) for g in d["groups"]]
    return (f"<p>{d['documents']} quarantined document(s), by stage and reason (<code>ragops quarantine</code> lists them).</p>"
            + hbar_chart("quarantine", rows)
            + _table(["document", "stage", "reason"], [[q["uri"], q["stage"], q["reason"]] for q in d["listed"]]))


def _quality(d: dict) -> str:
    docs = f' Data Docs: <a href="{_esc(d["data_docs"])}">the latest validation results</a>.' if d["data_docs"] else ""
    rows = [[q["suite"], q["expectation"], q["column"], "passed" if q["success"] else "FAILED", q["observed"], q["unexpected"]]
            for q in d["results"]]
    return (f"<p>Run {_esc(d['run_id'])}: {len(d['results']) - d['failed']} of {len(d['results'])} expectations passed.{docs}</p>"
            + _table(["suite", "expectation", "column", "result", "observed", "unexpected"], rows))


SECTIONS = (
    ("versions", "Index versions", _versions),
    ("runs", "Documents per run (new, changed, deleted, failed)", _runs),
    ("encoding", "Chunks encoded and cache hits; encoding speed", _encoding),
    ("recall", "Retrieval recall per store and golden set (nDCG@10, recall@10)", _recall),
    ("drift", "Embedding drift checks against their thresholds", _drift),
    ("quarantine", "Quarantined documents", _quarantine),
    ("quality", "Latest quality results", _quality),
)


def render(data: dict[str, dict], collection: str) -> str:
    """The whole page for :func:`rag_ops.dashboard.collect`'s data."""
    body = "".join(_section(chart, title, data[chart], "" if data[chart].get("empty") else draw(data[chart]))
                   for chart, title, draw in SECTIONS)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>ragops — {_esc(collection)}</title>'
            f"<style>{STYLE}</style></head><body><h1>ragops — index {_esc(collection)}</h1>"
            f'<p>Everything below as JSON: <a href="api">api</a>; catalog status: <a href="status">status</a>.</p>'
            f"{body}</body></html>")
