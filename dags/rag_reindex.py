"""
### rag_reindex — build a new index version, gate it, swap readers over

`plan_reindex` (take the index's re-index lock, decide: config drift, embedding drift reported
since the live version went live, or `force`; estimate chunks, tokens, seconds and cost; stop
over the budget before anything is encoded; register version N) → `build_version` (full-sync
ingest of every source into `<index>__vN`, cache first) → `catch_up` (what changed meanwhile)
→ `quality_gate` (each store holds exactly the version's chunks) → `recall_gate` (synthetic
golden set, new version vs live; fails naming the metric, both values and the tolerance) →
`swap` (last catch-up, Milvus `alter_alias`, catalog live pointer and state in one transaction)
→ `retire_old_versions` (keep `RAGOPS_INDEX_KEEP_VERSIONS`, release the lock). When any step
fails, `mark_failed` marks the version `failed` and releases the lock; the live version keeps
serving.

**When it runs**: on the `ragops_reindex_<index>` asset (emitted by `rag_reembed` on drift), or
triggered by hand. **Params**: `reason`, `stores`, `force`, `max_tokens`, `max_seconds`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from rag_ops.airflow import default_args as adapter_defaults
from rag_ops.config import KNOWN_STORES, load_settings

SETTINGS = load_settings()  # cheap: reads RAGOPS_* only
REINDEX_ASSET = Asset(name=f"ragops_reindex_{SETTINGS.collection}", uri=f"ragops://reindex/{SETTINGS.collection}")
INDEX_ASSET = Asset(name=f"ragops_index_{SETTINGS.collection}", uri=f"ragops://index/{SETTINGS.collection}")

default_args = adapter_defaults()


@dag(
    dag_id="rag_reindex",
    schedule=[REINDEX_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["ragops", "reindex"],
    doc_md=__doc__,
    params={
        "reason": Param("", type="string", title="Reason", description="Recorded with the new version"),
        "stores": Param(list(SETTINGS.stores), type="array", items={"type": "string", "enum": list(KNOWN_STORES)},
                        title="Vector stores", description="Stores to re-index (a model or chunker change needs all)"),
        "force": Param(False, type="boolean", title="Force",
                       description="Build a new version even when nothing drifted"),
        "max_tokens": Param(SETTINGS.reindex_budget_tokens, type="integer", minimum=0, title="Token budget",
                            description="Stop before encoding when the plan needs more tokens (0: no budget)"),
        "max_seconds": Param(SETTINGS.reindex_budget_seconds, type="number", minimum=0, title="Time budget (s)",
                             description="Stop when the estimated encode time is longer (0: no budget)"),
    },
)
def rag_reindex():
    @task(task_id="plan_reindex", retries=0)
    def plan_reindex() -> dict:
        """Lock, decide, estimate the cost, enforce the budget, register the new version."""
        from rag_ops import airflow as adapter

        return adapter.begin_reindex(get_current_context())

    @task(task_id="plan_build")
    def plan_build(ctx: dict) -> list[str]:
        """Discover every source into the new version (full sync); the staged batches' paths."""
        from rag_ops import airflow as adapter

        return adapter.plan_build(get_current_context(), ctx)

    @task(task_id="build_batch", max_active_tis_per_dagrun=SETTINGS.parallel_batches,
          map_index_template="{{ batch_name }}", multiple_outputs=False)
    def build_batch(ctx: dict, batch_ref: str) -> dict:
        """Read, parse, chunk and embed one batch for the new version (embedding cache first)."""
        from rag_ops import airflow as adapter

        return adapter.build_batch(get_current_context(), ctx, batch_ref)

    @task(task_id="commit_build", trigger_rule="none_failed", max_active_tis_per_dag=SETTINGS.store_writers)
    def commit_build(ctx: dict) -> dict:
        """Quality suites, then each store written by this one task, then the version's catalog."""
        from rag_ops import airflow as adapter

        return adapter.commit_build(get_current_context(), ctx)

    @task(task_id="catch_up")
    def catch_up(ctx: dict) -> dict:
        """Apply what changed in the sources while the version was built."""
        from rag_ops import airflow as adapter

        return adapter.catch_up(get_current_context(), ctx)

    @task(task_id="quality_gate", retries=0)
    def quality_gate(ctx: dict) -> dict:
        """Each store holds exactly the chunks of the version's catalog."""
        from rag_ops import airflow as adapter

        return adapter.quality_gate_version(get_current_context(), ctx)

    @task(task_id="recall_gate", retries=0)
    def recall_gate(ctx: dict) -> dict:
        """Recall of the new version vs the live one on the synthetic set; refuse a worse one."""
        from rag_ops import airflow as adapter

        return adapter.recall_gate(get_current_context(), ctx)

    @task(task_id="swap", outlets=[INDEX_ASSET])
    def swap(ctx: dict) -> dict:
        """Last catch-up, then swap readers to the new version (alias and catalog pointer)."""
        from rag_ops import airflow as adapter

        return adapter.swap_version(get_current_context(), ctx)

    @task(task_id="retire_old_versions")
    def retire_old_versions(ctx: dict) -> dict:
        """Drop collections beyond the retention and release the re-index lock."""
        from rag_ops import airflow as adapter

        return adapter.retire_versions(get_current_context(), ctx)

    @task(task_id="mark_failed", trigger_rule="one_failed", retries=0)
    def mark_failed() -> None:
        """A step failed: mark the version failed and release the lock (the live version keeps serving)."""
        from rag_ops import airflow as adapter

        context = get_current_context()
        adapter.abort_reindex(context, context["ti"].xcom_pull(task_ids="plan_reindex"))

    ctx = plan_reindex()
    refs = plan_build(ctx)
    built = build_batch.partial(ctx=ctx).expand(batch_ref=refs)
    steps = [refs, built, commit_build(ctx), catch_up(ctx), quality_gate(ctx), recall_gate(ctx), swap(ctx),
             retire_old_versions(ctx)]
    for a, b in zip(steps, steps[1:]):
        a >> b
    steps >> mark_failed()


rag_reindex()
