"""
### rag_reembed — nightly drift check: re-index only when something drifted

`check_drift` compares the live index versions with the settings (**config drift**: model id,
model files, chunker settings) and the embeddings of chunks indexed since the live version's
reference sample with that sample (**embedding drift**: domain-classifier ROC AUC, MMD
permutation test, centroid distance; thresholds `RAGOPS_DRIFT_*`). The result goes to the
catalog's `drift_reports` and the task log. `request_reindex` then emits the
`ragops_reindex_<index>` asset event, which schedules `rag_reindex`, or is **skipped** when
nothing drifted (a cheap no-op run: no event, nothing encoded).

**When it runs**: nightly at 02:00 UTC. **Params**: `stores`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, CronTriggerTimetable, Param, dag, get_current_context, task

from rag_ops.airflow import default_args as adapter_defaults
from rag_ops.config import KNOWN_STORES, load_settings

SETTINGS = load_settings()  # cheap: reads RAGOPS_* only
REINDEX_ASSET = Asset(name=f"ragops_reindex_{SETTINGS.collection}", uri=f"ragops://reindex/{SETTINGS.collection}")

default_args = adapter_defaults()


@dag(
    dag_id="rag_reembed",
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["ragops", "drift"],
    doc_md=__doc__,
    params={
        "stores": Param(list(SETTINGS.stores), type="array", items={"type": "string", "enum": list(KNOWN_STORES)},
                        title="Vector stores", description="Stores whose live versions are checked"),
    },
)
def rag_reembed():
    @task
    def check_drift() -> dict:
        """Config drift and embedding drift of the live versions (recorded in drift_reports)."""
        from rag_ops import airflow as adapter

        return adapter.check_drift(get_current_context())

    @task(outlets=[REINDEX_ASSET], retries=0)
    def request_reindex(result: dict) -> dict:
        """Emit the re-index asset event when something drifted; skipped otherwise."""
        from rag_ops import airflow as adapter

        return adapter.request_reindex(get_current_context(), result, REINDEX_ASSET)

    request_reindex(check_drift())


rag_reembed()
