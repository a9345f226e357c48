"""The ingest pipeline: discover -> process batches -> quality gate -> write each store -> commit.

Each step is a plain function taking :class:`~rag_ops.config.Settings` and small references
(URLs of staged files, see :mod:`rag_ops.staging`), so Airflow can run them as separate tasks
on separate workers and the CLI can run them in one process. Order and risk, as in DESIGN.md:

* ``discover`` (:mod:`.plan`) lists the source and compares size/mtime/ETag with the catalog;
  documents whose metadata did not move are skipped without being read. It stages a plan and
  batch manifests under ``<staging>/<run>/``.
* ``process_batch`` (:mod:`.process`) reads, hashes (same bytes as last time: skipped before
  parsing), parses, cleans, chunks and embeds one batch, and stages chunks + vectors. Bad
  documents are recorded with their reason; the batch goes on.
* ``quality_gate``, ``upsert_store`` and ``commit_run`` (:mod:`.write`): the Great Expectations
  suites; then each store's writer: **new chunks first, then** the deletion of the document's
  chunks that are no longer produced, so a failed write never loses the previous version; last
  it prunes documents absent from a full listing. All writes to one store happen in one call, so
  an embedded store (one writer at a time) has one writer.
* ``commit_run`` writes the catalog **only after every store accepted the chunks**: a crash
  anywhere before leaves work to redo (idempotent, by content-derived ids), never a record of
  work that did not happen. Then the run's staging is removed.
* ``ingest`` (:mod:`.run`) does all of it in one process.
"""

from rag_ops.pipeline.plan import MAX_BATCHES, STAGING_KEEP_DAYS, Plan, discover, new_run_id, plan_ref_for
from rag_ops.pipeline.process import (
    TEXT_LIKE,
    PreparedBatch,
    embed_batch,
    load_result,
    merge_prepared,
    prepare_batch,
    process_batch,
    result_refs,
)
from rag_ops.pipeline.run import PREPARE_SLICE, ingest
from rag_ops.pipeline.runtime import Runtime
from rag_ops.pipeline.write import commit_run, quality_gate, quality_thresholds, upsert_store

__all__ = [
    "MAX_BATCHES", "PREPARE_SLICE", "STAGING_KEEP_DAYS", "TEXT_LIKE", "Plan", "PreparedBatch", "Runtime",
    "commit_run", "discover", "embed_batch", "ingest", "load_result", "merge_prepared", "new_run_id",
    "plan_ref_for", "prepare_batch", "process_batch", "quality_gate", "quality_thresholds", "result_refs",
    "upsert_store",
]
