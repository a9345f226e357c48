"""
### ragops_after_ingest — your own task after every successful ingest (an example to copy)

Scheduled on the index asset `ragops://index/<collection>`, which `rag_ingest`'s
`commit_catalog` updates each time a run has written every store and the catalog: this DAG runs
once per successful ingest, whatever triggered it (schedule, backfill, the UI). Its one task
exports the run's figures (new, changed, deleted, failed, chunks, encoded, cache hits, seconds)
as JSON under `<data_dir>/exports/`; put your own call in its place (a report to your chat, a
custom check that fails the DAG, a warm-up of a cache). Keep the body one call into your code or
`rag_ops`, imported inside the task so parsing the DAG stays fast. See docs/extending.md.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task

from rag_ops.config import load_settings

SETTINGS = load_settings()  # cheap: reads RAGOPS_* only
INDEX_ASSET = Asset(name=f"ragops_index_{SETTINGS.collection}", uri=f"ragops://index/{SETTINGS.collection}")


@dag(
    dag_id="ragops_after_ingest",
    schedule=[INDEX_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["ragops", "example"],
    doc_md=__doc__,
)
def ragops_after_ingest():
    @task(retries=2)
    def export_run_figures() -> str:
        """Write the last ingest's figures as JSON; returns the file's path."""
        from rag_ops.airflow import task_settings
        from rag_ops.reports import export_last_ingest

        return str(export_last_ingest(task_settings()))

    export_run_figures()


ragops_after_ingest()
