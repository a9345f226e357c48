"""The one adapter between Airflow and rag_ops (the only module that imports Airflow).

Task bodies in ``dags/`` call these functions with the task context. They turn DAG params into
:class:`~rag_ops.config.Settings`, decide the run's document window from the run type, and
translate ragops errors into Airflow's: a retryable error becomes ``AirflowException`` (Airflow
retries with backoff), any other ``AirflowFailException`` (no retry can help).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, Callable, TypeVar

from rag_ops.config import Settings, load_settings
from rag_ops.errors import RagopsError

log = logging.getLogger(__name__)
T = TypeVar("T")


def default_args(retries: int = 2, delay_seconds: int = 30) -> dict[str, Any]:
    """The ``default_args`` of every ragops DAG: retries with exponential backoff (at most 10 min)."""
    from datetime import timedelta

    return {
        "owner": "ragops",
        "retries": retries,
        "retry_delay": timedelta(seconds=delay_seconds),
        "retry_exponential_backoff": 2.0,  # a multiplier in Airflow 3.3 (True is read back as 2.0)
        "max_retry_delay": timedelta(minutes=10),
    }


def translate_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Re-raise RagopsError as AirflowException (retryable) or AirflowFailException."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        try:
            return fn(*args, **kwargs)
        except RagopsError as exc:
            kind = AirflowException if exc.retryable else AirflowFailException
            raise kind(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


# executors that run every task on this machine: embedded state (files) is fine with them
LOCAL_EXECUTORS = {"LocalExecutor", "SequentialExecutor", "DebugExecutor"}


def executor_names(raw: str) -> list[str]:
    """Class names of the executors in Airflow's ``[core] executor`` value
    (``CeleryExecutor``, ``LocalExecutor,KubernetesExecutor``, ``alias:path.to.Class``)."""
    names = []
    for part in raw.split(","):
        part = part.strip()
        if part:
            names.append(part.rsplit(":", 1)[-1].rsplit(".", 1)[-1])
    return names


def distributed_executor() -> str:
    """The first configured executor that may run a task on another host, or "" (all local)."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # an Airflow whose task SDK has no configuration module
        from airflow.configuration import conf

    raw = conf.get("core", "executor", fallback="LocalExecutor") or "LocalExecutor"
    return next((n for n in executor_names(raw) if n not in LOCAL_EXECUTORS), "")


def fetch_connection(conn_id: str):
    """An Airflow connection's fields (any secrets backend), or None when it is not defined."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from rag_ops.config import Secret
    from rag_ops.connections import ConnectionInfo

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    return ConnectionInfo(
        conn_type=conn.conn_type or "", host=conn.host or "", port=conn.port, login=conn.login or "",
        password=Secret(conn.password or ""), schema=conn.schema or "", extra=dict(conn.extra_dejson or {}),
    )


def task_settings(**overrides: Any) -> Settings:
    """The settings of a task: defaults < Airflow connections < ``RAGOPS_*`` variables < ``overrides``.

    Raises:
        ConfigError: the executor is a distributed one and some state is still a local file.
    """
    from rag_ops.connections import MAPPINGS, settings_from_connections
    from rag_ops.logs import quiet_library_noise

    quiet_library_noise()
    base = load_settings()
    found = settings_from_connections({k: getattr(base, k) for k in MAPPINGS}, fetch_connection)
    if found:
        log.info("settings from Airflow connections: %s", ", ".join(sorted(found)))  # names only, never values
    settings = load_settings(fallbacks=found, **overrides)
    executor = distributed_executor()
    if executor:
        settings.require_shared_state(executor)
    return settings


def settings_from_params(params: dict[str, Any]) -> Settings:
    """Settings from the environment with the run's params on top (empty params keep defaults)."""
    stores = params.get("stores") or None
    return task_settings(
        source=params.get("source") or None,
        batch_size=params.get("batch_size") or None,
        stores=tuple(stores) if stores else None,
        quality_max_failure_share=params.get("quality_max_failure_share"),
        quality_min_printable_ratio=params.get("quality_min_printable_ratio"),
        quality_max_duplicate_rate=params.get("quality_max_duplicate_rate"),
        quality_max_near_duplicate_rate=params.get("quality_max_near_duplicate_rate"),
    )


def run_window(context: dict[str, Any]) -> tuple[Any, Any, str]:
    """The document window of this run: ``(since, until, why)``.

    * ``full_sync`` param: everything (and deletions), whatever the run type.
    * ``scope`` param ``all``: everything changed, no window.
    * ``scope`` ``interval``, or ``auto`` on a scheduled or backfill run: documents modified in
      the run's data interval ``[data_interval_start, data_interval_end)``.
    * ``auto`` on a manual run (UI trigger, REST, ``dags test``): everything changed, because a
      manual run has no meaningful interval of its own.
    """
    params = context["params"]
    if params.get("full_sync"):
        return None, None, "full sync: every document, deletions propagated"
    scope = params.get("scope", "auto")
    run_type = str(getattr(context.get("dag_run"), "run_type", "") or "").lower()
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    use_interval = scope == "interval" or (scope == "auto" and ("scheduled" in run_type or "backfill" in run_type))
    if use_interval and start is not None and end is not None and start < end:
        return start, end, f"documents modified in [{start}, {end}) ({run_type or 'run'})"
    return None, None, f"every new or changed document ({run_type or 'run'}, scope={scope})"


def _plan_ref(context: dict[str, Any]) -> str:
    from rag_ops import pipeline

    return pipeline.plan_ref_for(settings_from_params(context["params"]), context["run_id"])


@translate_errors
def discover(context: dict[str, Any]) -> list[str]:
    """Stage the run's batches; returns their paths (the list ``process_batch`` maps over)."""
    from rag_ops import pipeline

    params = context["params"]
    settings = settings_from_params(params)
    since, until, why = run_window(context)
    log.info("discover: %s; source %s; stores %s", why, settings.source, ",".join(settings.stores))
    plan = pipeline.discover(
        settings,
        full_sync=bool(params.get("full_sync")),
        since=since,
        until=until,
        run_id=context["run_id"],
        retry_quarantined=bool(params.get("retry_quarantined")),
    )
    return plan.batches


@translate_errors
def process_batch(context: dict[str, Any], batch_ref: str) -> dict[str, Any]:
    from pathlib import Path

    from rag_ops import pipeline

    context["batch_name"] = Path(batch_ref).stem  # shown as the map index in the UI
    settings = settings_from_params(context["params"])
    # up to parallel_batches of these tasks encode at once on a worker: share its cores
    return pipeline.process_batch(settings, batch_ref, concurrent_encoders=settings.parallel_batches)


@translate_errors
def quality_gate(context: dict[str, Any]) -> dict[str, Any]:
    """Run the quality suites over the staged run; a batch-level failure fails the task."""
    from rag_ops import pipeline

    return pipeline.quality_gate(settings_from_params(context["params"]), _plan_ref(context))


@translate_errors
def upsert_store(context: dict[str, Any], store: str) -> dict[str, Any]:
    """Upsert the run's staged batches into ``store`` and prune deleted documents from it.

    The task is skipped when the run does not use the store.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from rag_ops import pipeline

    settings = settings_from_params(context["params"])
    if store not in settings.stores:
        raise AirflowSkipException(f"store {store!r} is not selected for this run (stores={list(settings.stores)})")
    return pipeline.upsert_store(settings, store, _plan_ref(context))


@translate_errors
def commit_catalog(context: dict[str, Any], upsert_task_ids: list[str]) -> dict:
    """Record the run in the catalog once every selected store has accepted it."""
    from rag_ops import pipeline
    from rag_ops.cli import format_report

    ti = context["ti"]
    store_results = [r for r in (ti.xcom_pull(task_ids=tid) for tid in upsert_task_ids) if r]
    report = pipeline.commit_run(settings_from_params(context["params"]), _plan_ref(context), store_results)
    log.info("run report:\n%s", format_report(report))
    return report


# ---------------------------------------------------------------------------- rag_recall
def recall_settings(params: dict[str, Any]) -> Settings:
    """Settings for the recall DAG: the environment, with the trigger form's overrides."""
    stores = params.get("stores") or None
    floors = params.get("floors")
    return task_settings(
        stores=tuple(stores) if stores else None,
        recall_window=params.get("window") or None,
        recall_tolerance=params.get("tolerance"),
        recall_floors=json.dumps(floors) if floors else None,
    )


@translate_errors
def prepare_golden_sets(context: dict[str, Any]) -> list[dict[str, str]]:
    """Ingest the BEIR golden corpora (incremental) and load or build the synthetic set."""
    from rag_ops import evaluate

    settings = recall_settings(context["params"])
    return [ref.as_dict() for ref in evaluate.prepare_golden_sets(settings)]


@translate_errors
def score_golden_set(context: dict[str, Any], golden: dict[str, str]) -> dict[str, Any]:
    """Score every store on one golden set; scores go to the catalog (``recall_scores``)."""
    from rag_ops import evaluate

    context["golden_name"] = golden["name"]  # shown as the map index in the UI
    return evaluate.score_golden_set(recall_settings(context["params"]), golden, run_id=context["run_id"])


@translate_errors
def check_recall(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Fail (no retry) when a metric fell below its baseline or floor; the message names them."""
    from rag_ops import evaluate

    results = [r for r in results if r]
    evaluate.raise_recall_failures(results)
    return {"golden_sets": [r["golden_set"] for r in results], "failures": 0}


@translate_errors
def plot_recall(context: dict[str, Any]) -> list[str]:
    """Write the trend PNG of every store into ``<data_dir>/recall/`` and log the paths."""
    from rag_ops import evaluate

    return [str(p) for p in evaluate.plot_recall_trends(recall_settings(context["params"]))]


# ---------------------------------------------------------------------------- rag_reembed / rag_reindex
def reindex_asset_extra(result: dict[str, Any]) -> dict[str, Any]:
    """What the drift check puts on the re-index asset event (small, JSON-safe)."""
    return {"reasons": list(result.get("reasons", []))[:10], "drift_run": result.get("run_id")}


@translate_errors
def check_drift(context: dict[str, Any]) -> dict[str, Any]:
    """Config and embedding drift of the live index (``drift_reports`` and the log)."""
    from rag_ops.drift import check_index

    result = check_index(settings_from_params(context["params"]), run_id=context["run_id"])
    for reason in result["reasons"]:
        log.info("drift: %s", reason)
    return {k: result[k] for k in ("drifted", "reasons", "config", "run_id")}


def request_reindex(context: dict[str, Any], result: dict[str, Any], asset: Any) -> dict[str, Any]:
    """Emit the re-index asset event when something drifted; otherwise skip (no event: a cheap no-op)."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not result.get("drifted"):
        raise AirflowSkipException("nothing drifted: no re-index requested")
    extra = reindex_asset_extra(result)
    context["outlet_events"][asset].extra = extra
    log.info("drift found: re-index requested (%s)", "; ".join(extra["reasons"]))
    return extra


def reindex_settings(params: dict[str, Any]) -> Settings:
    return task_settings()


def _triggering_reasons(context: dict[str, Any]) -> list[str]:
    reasons = []
    events = context.get("triggering_asset_events") or {}
    for _asset, evs in getattr(events, "items", lambda: [])():
        for ev in evs:
            reasons.extend((getattr(ev, "extra", None) or {}).get("reasons", []))
    return reasons


@translate_errors
def begin_reindex(context: dict[str, Any]) -> dict[str, Any]:
    """Lock, decide (drift or ``force``), plan the cost, stop over budget, register the version."""
    from rag_ops import reindex

    p = context["params"]
    reason = p.get("reason") or "; ".join(_triggering_reasons(context)[:3]) or ""
    ctx = reindex.begin(
        reindex_settings(p), stores=p.get("stores") or None, reason=reason, force=bool(p.get("force")),
        max_tokens=p.get("max_tokens"), max_seconds=p.get("max_seconds"), run_id=context["run_id"],
    )
    if not ctx["skipped"]:
        plan = ctx["plan"]
        log.info(
            "plan: %d chunks to encode (of %d), %d tokens, estimated %s s, cost %s", plan["chunks"], plan["total_chunks"],
            plan["tokens"], plan["estimated_seconds"], plan["estimated_cost"],
        )
    return ctx


def _step(name: str):
    """A re-index step task body: skip when begin skipped; on failure mark the version failed."""

    def run(context: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

        from rag_ops import reindex

        if ctx.get("skipped"):
            raise AirflowSkipException("nothing drifted: nothing to " + name.replace("_", " "))
        settings = reindex_settings(context["params"])
        try:
            return getattr(reindex, name)(settings, ctx)
        except RagopsError as exc:
            if not exc.retryable:
                reindex.abort(settings, ctx, f"{name}: {type(exc).__name__}: {exc}")
                raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
            raise AirflowException(f"{type(exc).__name__}: {exc}") from exc

    run.__name__ = name
    return run


plan_build = _step("plan_build")
commit_build = _step("commit_build")
catch_up = _step("catch_up")
quality_gate_version = _step("check")
recall_gate = _step("recall_gate")
swap_version = _step("swap")
retire_versions = _step("retire")


@translate_errors
def build_batch(context: dict[str, Any], ctx: dict[str, Any], batch_ref: str) -> dict[str, Any]:
    """One mapped batch of a re-index build (same retries as the ingest DAG's process_batch)."""
    from pathlib import Path

    from rag_ops import reindex

    context["batch_name"] = Path(batch_ref).name  # shown as the map index in the UI
    return reindex.build_batch(reindex_settings(context["params"]), ctx, batch_ref)


def abort_reindex(context: dict[str, Any], ctx: dict[str, Any]) -> None:
    """After a failed step: the version is marked failed and the lock released (live keeps serving)."""
    from rag_ops import reindex

    if ctx and not ctx.get("skipped"):
        reindex.abort(reindex_settings(context["params"]), ctx, f"run {context['run_id']} failed")
