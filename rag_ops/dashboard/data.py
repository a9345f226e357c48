"""The data behind each chart of the ragops page, from the catalog (JSON-safe dicts)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from rag_ops.config import Settings

CHARTS = ("versions", "runs", "encoding", "recall", "drift", "quarantine", "quality")
EMPTY = {
    "versions": "No index version yet: the first ingest registers version 1 (trigger rag_ingest, or run `ragops ingest`).",
    "runs": "No ingest run yet: trigger rag_ingest from the DAGs list, or run `ragops ingest`.",
    "encoding": "No ingest run yet: trigger rag_ingest from the DAGs list, or run `ragops ingest`.",
    "recall": "No recall score yet: trigger rag_recall (it also runs after each ingest), or run `ragops eval`.",
    "drift": "No drift check yet: trigger rag_reembed (nightly), or run `ragops drift`.",
    "quarantine": "No quarantined document.",
    "quality": "No quality result yet: every ingest run checks its documents, chunks and embeddings.",
}
RUN_LIMIT = 30


def collect(settings: Settings, chart: str | None = None) -> dict[str, Any]:
    """``{chart: data}`` for every chart (or just ``chart``); each has ``empty`` (a message) when
    it has nothing to show.

    Raises:
        KeyError: an unknown chart name.
    """
    from rag_ops.catalog import Catalog

    names = CHARTS if chart is None else (chart,)
    for name in names:
        if name not in CHARTS:
            raise KeyError(name)
    cat = Catalog(settings.catalog_db_url)
    try:
        cat.migrate()
        out = {name: globals()[f"_{name}"](settings, cat) for name in names}
    finally:
        cat.close()
    for name, data in out.items():
        data["empty"] = None if data.get("has_data") else EMPTY[name]
    return out


def _ingest_runs(cat) -> list[dict]:
    rows = []
    for run in reversed(cat.last_runs(200)):
        if run["status"] != "success" or not run.get("report") or run["run_id"].startswith(("drift__", "reindex__")):
            continue
        rows.append(json.loads(run["report"]) | {"started_at": run["started_at"]})
    return rows[-RUN_LIMIT:]


def _versions(settings: Settings, cat) -> dict:
    keys = ("store", "version", "status", "collection", "model_id", "chunks", "encoded", "reason", "error",
            "created_at", "swapped_at", "retired_at")
    rows = [{k: r.get(k) for k in keys} for r in cat.versions(settings.collection)]
    live = {r["store"]: r["version"] for r in rows if r["status"] == "live"}
    return {"index": settings.collection, "live": live, "history": rows, "has_data": bool(rows)}


def _runs(settings: Settings, cat) -> dict:
    runs = [{"run_id": r["run_id"], "started_at": r["started_at"], **{k: int(r.get(k) or 0) for k in
             ("new", "changed", "deleted", "failed", "unchanged")}} for r in _ingest_runs(cat)]
    return {"runs": runs, "has_data": bool(runs)}


def _encoding(settings: Settings, cat) -> dict:
    runs = []
    for r in _ingest_runs(cat):
        secs = float(r.get("encode_seconds") or 0)
        tokens = int(r.get("tokens_encoded") or 0)
        runs.append({"run_id": r["run_id"], "started_at": r["started_at"], "chunks": int(r.get("chunks") or 0),
                     "encoded": int(r.get("encoded") or 0), "cache_hits": int(r.get("cache_hits") or 0),
                     "tokens": tokens, "encode_seconds": round(secs, 3),
                     "tokens_per_second": round(tokens / secs, 1) if secs > 0 and tokens else None})
    return {"runs": runs, "has_data": bool(runs)}


def _recall(settings: Settings, cat) -> dict:
    series: dict[tuple[str, str, str], list] = {}
    for r in cat.recall_rows(limit=5000):
        if r["metric"] in ("ndcg@10", "recall@10"):
            series.setdefault((r["golden_set"], r["store"], r["metric"]), []).append(
                {"run_id": r["run_id"], "at": r["created_at"], "value": r["value"]})
    floors = {k: float(v) for k, v in json.loads(settings.recall_floors).items() if k in ("ndcg@10", "recall@10")}
    out = [{"golden_set": g, "store": s, "metric": m, "points": pts[-RUN_LIMIT:]} for (g, s, m), pts in sorted(series.items())]
    return {"series": out, "floors": floors, "tolerance": settings.recall_tolerance, "window": settings.recall_window,
            "has_data": bool(out)}


def _drift(settings: Settings, cat) -> dict:
    checks = [{"run_id": r["run_id"], "at": r["created_at"], "store": r["store"], "auc": r["auc"], "p_value": r["p_value"],
               "centroid_distance": r["centroid_distance"], "drifted": r["drifted"], "reasons": r["reasons"][:5]}
              for r in cat.drift_reports(limit=RUN_LIMIT, collection=settings.collection)]
    thresholds = {"auc": settings.drift_auc_threshold, "p_value": settings.drift_mmd_p_value,
                  "centroid_distance": settings.drift_centroid_threshold}
    measured = [c for c in checks if any(c[k] is not None for k in thresholds)]
    return {"checks": checks, "thresholds": thresholds, "rule": settings.drift_rule, "has_data": bool(measured)}


def _quarantine(settings: Settings, cat) -> dict:
    rows = cat.quarantined()
    groups = Counter((r["stage"] or "?", (r["reason"] or "")[:120]) for r in rows)
    out = [{"stage": s, "reason": reason, "documents": n} for (s, reason), n in groups.most_common(30)]
    listed = [{"uri": r["uri"], "stage": r["stage"], "reason": r["reason"]} for r in rows[:50]]
    return {"groups": out, "documents": len(rows), "listed": listed, "has_data": bool(rows)}


def _quality(settings: Settings, cat) -> dict:
    runs = _ingest_runs(cat)
    results: list[dict] = []
    run_id = None
    for r in reversed(runs):
        results = cat.quality_results_of(r["run_id"])
        if results:
            run_id = r["run_id"]
            break
    rows = [{"suite": q["suite"], "expectation": q["expectation"], "column": q["column_name"],
             "success": bool(q["success"]), "observed": q["observed_value"], "unexpected": q["unexpected_count"]}
            for q in results]
    docs = Path(settings.data_dir) / "quality" / "data_docs" / "index.html"
    return {"run_id": run_id, "results": rows, "failed": sum(1 for q in rows if not q["success"]),
            "data_docs": "data-docs/index.html" if docs.is_file() else None, "has_data": bool(rows)}
