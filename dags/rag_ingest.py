"""
### rag_ingest — keep the vector indexes in step with the documents

`discover_documents` → `process_batch` (mapped, one per batch: read, parse, clean, chunk, embed)
→ `quality_gate` (Great Expectations: quarantines bad documents, stops a bad run before any
write; Data Docs under `<data_dir>/quality/data_docs`) → `upsert_chroma`, `upsert_milvus` (per store: upsert new chunks, drop stale ones, prune deleted
documents; a store not selected in `stores` is skipped) → `commit_catalog` (writes the catalog
once every store has accepted the run; updates the `ragops://index/…` asset).

**What a run processes**
- *Scheduled and backfill runs*: documents modified in the run's data interval (a day).
- *Manual runs* (Trigger button, REST API): every new or changed document.
- *full_sync*: every document, and documents gone from the source are removed from the stores.
  Unchanged documents are skipped before parsing; an unchanged chunk is never encoded twice.

**Params**: `source` (folder or `s3://bucket/prefix`, empty = `RAGOPS_SOURCE`), `full_sync`,
`batch_size`, `stores`, `scope` (`auto` | `interval` | `all`), `retry_quarantined`, and the
quality thresholds `quality_max_failure_share`, `quality_min_printable_ratio`,
`quality_max_duplicate_rate`, `quality_max_near_duplicate_rate`.

Embedded stores take one writer at a time: every write to a store happens in its one upsert
task, and at most `RAGOPS_STORE_WRITERS` (default 1) instances of it run at once across all
runs of this DAG (raise it for a Chroma or Milvus server). Settings come from `RAGOPS_*`
variables (docs/settings.md). Dict results are one XCom each (`multiple_outputs=False`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, get_current_context, task

from rag_ops.airflow import default_args as adapter_defaults
from rag_ops.config import KNOWN_STORES, load_settings

SETTINGS = load_settings()  # cheap: reads RAGOPS_* only, imports no heavy library
STORE_NAMES = KNOWN_STORES
INDEX_ASSET = Asset(name=f"ragops_index_{SETTINGS.collection}", uri=f"ragops://index/{SETTINGS.collection}")

default_args = adapter_defaults(retries=3, delay_seconds=20)


@dag(
    dag_id="rag_ingest",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["ragops", "ingest"],
    doc_md=__doc__,
    params={
        "source": Param("", type="string", title="Source", description="Folder or s3://bucket/prefix; empty = RAGOPS_SOURCE"),
        "full_sync": Param(False, type="boolean", title="Full sync", description="List everything and remove deleted documents"),
        "batch_size": Param(SETTINGS.batch_size, type="integer", minimum=1, maximum=10000, title="Documents per batch"),
        "stores": Param(list(SETTINGS.stores), type="array", items={"type": "string", "enum": ["chroma", "milvus"]},
                        title="Vector stores", description="Stores to write"),
        "scope": Param("auto", type="string", enum=["auto", "interval", "all"], title="Scope",
                       description="auto: data interval for scheduled/backfill runs, everything changed for manual runs"),
        "retry_quarantined": Param(False, type="boolean", title="Retry quarantined",
                                   description="Process quarantined documents again even if their bytes did not change"),
        "quality_max_failure_share": Param(SETTINGS.quality_max_failure_share, type="number", minimum=0, maximum=1,
                                           title="Quality: max failure share",
                                           description="Fail the run when more of its documents than this fail quality"),
        "quality_min_printable_ratio": Param(SETTINGS.quality_min_printable_ratio, type="number", minimum=0, maximum=1,
                                             title="Quality: min printable ratio"),
        "quality_max_duplicate_rate": Param(SETTINGS.quality_max_duplicate_rate, type="number", minimum=0, maximum=1,
                                            title="Quality: max duplicate chunk-text rate"),
        "quality_max_near_duplicate_rate": Param(SETTINGS.quality_max_near_duplicate_rate, type="number", minimum=0,
                                                 maximum=1, title="Quality: max near-duplicate embedding rate"),
    },
)
def rag_ingest():
    @task
    def discover_documents() -> list[str]:
        """List the source, skip unchanged documents, stage batches; returns batch file paths."""
        from rag_ops import airflow as adapter

        return adapter.discover(get_current_context())

    @task(max_active_tis_per_dagrun=SETTINGS.parallel_batches, map_index_template="{{ batch_name }}", multiple_outputs=False)
    def process_batch(batch_ref: str) -> dict:
        """Read, parse, clean, chunk and embed one batch (bad documents are recorded, not fatal)."""
        from rag_ops import airflow as adapter

        return adapter.process_batch(get_current_context(), batch_ref)

    @task(retries=0, multiple_outputs=False)
    def quality_gate() -> dict:
        """Great Expectations suites over the run's documents, chunks and embeddings (no retry:
        the same data gives the same verdict)."""
        from rag_ops import airflow as adapter

        return adapter.quality_gate(get_current_context())

    def upsert_task(store: str):
        @task(
            task_id=f"upsert_{store}", trigger_rule="none_failed", max_active_tis_per_dag=SETTINGS.store_writers,
            multiple_outputs=False,
        )
        def upsert() -> dict:
            """Upsert staged chunks, drop stale ones, prune deleted documents (skipped if not selected)."""
            from rag_ops import airflow as adapter

            return adapter.upsert_store(get_current_context(), store)

        return upsert()

    @task(trigger_rule="none_failed", outlets=[INDEX_ASSET], multiple_outputs=False)
    def commit_catalog() -> dict:
        """Record the run in the catalog, after every store accepted it; returns the run report."""
        from rag_ops import airflow as adapter

        return adapter.commit_catalog(get_current_context(), [f"upsert_{s}" for s in STORE_NAMES])

    batches = discover_documents()
    processed = process_batch.expand(batch_ref=batches)
    writes = [upsert_task(store) for store in STORE_NAMES]
    gate = quality_gate()
    processed >> gate >> writes >> commit_catalog()


rag_ingest()
