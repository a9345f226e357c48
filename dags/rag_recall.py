"""
### rag_recall — score retrieval recall every night, and fail on a regression

`prepare_golden_sets` (ingest each BEIR golden corpus of `RAGOPS_RECALL_GOLDEN_DIRS` into its own
collection, incrementally; load or build the synthetic set of the live collection) →
`score_golden_set` (mapped, one per set: every store is scored; recall@1/5/10/20/100, nDCG@10,
MRR@10 and hit rates go to the catalog's `recall_scores`) → `check_recall` (fails, without retry,
when a metric fell more than `tolerance` below the median of the last `window` runs, or below
its floor; the message names the metric, the value, the baseline and the golden set) and
`plot_recall` (a PNG of the trend per store in `<data_dir>/recall/`, its path in the log; drawn
whether or not the check passed).

**When it runs**: nightly at 04:00 UTC, and also whenever `rag_ingest` updates the index asset.

**Params**: `stores`, `window`, `tolerance`, `floors` (JSON: metric → lowest acceptable value).
Documents are ranked by their best chunk; see docs/recall.md.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    get_current_context,
    task,
)

from rag_ops.airflow import default_args as adapter_defaults
from rag_ops.config import KNOWN_STORES, load_settings

SETTINGS = load_settings()  # cheap: reads RAGOPS_* only
INDEX_ASSET = Asset(name=f"ragops_index_{SETTINGS.collection}", uri=f"ragops://index/{SETTINGS.collection}")

default_args = adapter_defaults()


@dag(
    dag_id="rag_recall",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 4 * * *", timezone="UTC"), assets=[INDEX_ASSET]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["ragops", "recall"],
    doc_md=__doc__,
    params={
        "stores": Param(list(SETTINGS.stores), type="array", items={"type": "string", "enum": list(KNOWN_STORES)},
                        title="Vector stores", description="Stores to score"),
        "window": Param(SETTINGS.recall_window, type="integer", minimum=1, maximum=365, title="Baseline window",
                        description="The baseline is the median of this many latest runs"),
        "tolerance": Param(SETTINGS.recall_tolerance, type="number", minimum=0, maximum=1, title="Tolerance",
                           description="How far below the baseline a metric may fall (absolute, e.g. 0.02)"),
        "floors": Param({}, type="object", title="Floors",
                        description='Lowest acceptable values, e.g. {"ndcg@10": 0.3, "recall@100": 0.6}'),
    },
)
def rag_recall():
    @task
    def prepare_golden_sets() -> list[dict]:
        """Ingest the BEIR golden corpora and load (or build once) the synthetic set."""
        from rag_ops import airflow as adapter

        return adapter.prepare_golden_sets(get_current_context())

    @task(map_index_template="{{ golden_name }}", multiple_outputs=False)
    def score_golden_set(golden: dict) -> dict:
        """Score every store on one golden set and record the scores."""
        from rag_ops import airflow as adapter

        return adapter.score_golden_set(get_current_context(), golden)

    @task(retries=0, multiple_outputs=False)
    def check_recall(results: list[dict]) -> dict:
        """Fail when a metric regressed beyond tolerance or fell below its floor (no retry)."""
        from rag_ops import airflow as adapter

        return adapter.check_recall(list(results))

    @task(trigger_rule="all_done")
    def plot_recall() -> list[str]:
        """Write the recall trend PNG of every store and log where."""
        from rag_ops import airflow as adapter

        return adapter.plot_recall(get_current_context())

    scored = score_golden_set.expand(golden=prepare_golden_sets())
    scored >> plot_recall()
    check_recall(scored)


rag_recall()
