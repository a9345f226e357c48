"""Run reports for your own tasks: the figures of the last ingest, as a file to ship elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

from rag_ops.config import Settings
from rag_ops.errors import RagopsError

FIGURES = ("run_id", "new", "changed", "restored", "unchanged", "deleted", "failed", "chunks", "encoded",
           "cache_hits", "tokens_encoded", "encode_seconds", "upserted", "removed", "steps")


def last_ingest(settings: Settings) -> dict:
    """The report of the last successful ingest run of the catalog (counts, seconds, failures).

    Raises:
        RagopsError: no ingest has succeeded yet.
    """
    from rag_ops.catalog import Catalog

    cat = Catalog(settings.catalog_db_url)
    try:
        cat.migrate()
        for run in cat.last_runs(50):
            if run["status"] == "success" and run.get("report") and not run["run_id"].startswith(("reindex__", "drift__")):
                return json.loads(run["report"])
    finally:
        cat.close()
    raise RagopsError("no successful ingest run in the catalog yet")


def export_last_ingest(settings: Settings, dest: str | Path | None = None) -> Path:
    """Write the last ingest's figures (:data:`FIGURES`) as JSON; the file's path.

    ``dest``: a folder (default ``<data_dir>/exports``); the file is named after the run.
    """
    report = last_ingest(settings)
    out = Path(dest) if dest else settings.data_dir / "exports"
    out.mkdir(parents=True, exist_ok=True)
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in report["run_id"])
    path = out / f"ingest_{name}.json"
    path.write_text(json.dumps({k: report.get(k) for k in FIGURES if k in report}, indent=2, sort_keys=True))
    return path
