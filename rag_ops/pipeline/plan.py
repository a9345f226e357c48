"""Discover: list the source, decide what needs work, and stage the run's plan and batches."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rag_ops.config import Settings
from rag_ops.identity import doc_id_for
from rag_ops.pipeline.runtime import Runtime
from rag_ops.sources import SourceDocument, open_source
from rag_ops.staging import open_staging, staging_at

log = logging.getLogger(__name__)

STAGING_KEEP_DAYS = 7  # a run's staging is removed at its commit; a failed run's after this many days
MAX_BATCHES = 1000  # below Airflow's default max_map_length of 1024


@dataclass
class Plan:
    """What one run will do; saved as ``plan.json`` in the run's staging folder."""

    run_id: str
    run_url: str  # the run's staging folder (a path or s3://…)
    source: str
    full_sync: bool
    stores: list[str]
    since: float | None
    until: float | None
    batches: list[str]  # batch manifest URLs
    deleted: list[str]  # doc ids to prune
    counts: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    target: dict | None = None  # rag_ops.versions.WriteTarget.as_dict(): collections and build settings

    @property
    def ref(self) -> str:
        return self.file("plan.json")

    def file(self, name: str) -> str:
        """The URL of a file of this run's staging folder."""
        return self.run_url.rstrip("/") + "/" + name

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def save(self, settings: Settings) -> str:
        staging_at(self.ref, settings).write_json(self.ref, self.as_dict())
        return self.ref

    @classmethod
    def load(cls, ref: str, settings: Settings) -> "Plan":
        """The plan staged at ``ref`` (its ``plan.json``, or the run folder).

        Raises:
            StagingMissing: no plan there (``discover`` did not run, or the run was committed).
        """
        if not ref.endswith(".json"):
            ref = ref.rstrip("/") + "/plan.json"
        return cls(**staging_at(ref, settings).read_json(ref))

    def settings_for(self, settings: Settings) -> Settings:
        """``settings`` with the model and chunker of the version(s) this run writes."""
        from rag_ops.versions import apply_overrides

        return apply_overrides(settings, (self.target or {}).get("overrides"))


def plan_ref_for(settings: Settings, run_id: str) -> str:
    """Where ``discover`` saves the plan of a run (so later tasks need only the run id)."""
    staging = open_staging(settings)
    return staging.join(staging.run_url(run_id), "plan.json")


def new_run_id() -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"cli__{now}__{uuid.uuid4().hex[:8]}"


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def discover(
    settings: Settings,
    *,
    source: str | None = None,
    full_sync: bool = False,
    since: Any = None,
    until: Any = None,
    stores: Iterable[str] | None = None,
    run_id: str | None = None,
    retry_quarantined: bool = False,
    runtime: Runtime | None = None,
    target: Any = None,
) -> Plan:
    """List the source, decide what needs work, and stage the batches.

    Args:
        settings: the settings (``batch_size`` documents per batch).
        source: folder or ``s3://bucket/prefix``; default ``settings.source``.
        full_sync: consider every document and propagate deletions of documents no longer listed.
        since, until: a data interval (datetime, ISO string or epoch). Without ``full_sync`` only
            documents modified in ``[since, until)`` are considered; either may be None (open).
        stores: stores this run writes; default ``settings.stores``.
        run_id: the run's id (Airflow's run id); a new one when None.
        retry_quarantined: process quarantined documents again even if their bytes did not change.
        runtime: shared resources; one is made (and closed) when None.
        target: the :class:`~rag_ops.versions.WriteTarget` written; default the live versions
            of ``stores`` (version 1 is registered on the first run).

    Returns:
        The saved :class:`Plan`.

    Raises:
        SourceError: the source cannot be listed (retryable).
    """
    t0 = time.perf_counter()
    own = runtime is None
    rt = runtime or Runtime(settings)
    try:
        source = source or settings.source
        stores = list(stores or settings.stores)
        run_id = run_id or new_run_id()
        lo, hi = (None, None) if full_sync else (_epoch(since), _epoch(until))
        src = open_source(source, settings)
        catalog = rt.catalog
        if target is None:
            from rag_ops.versions import live_target

            target = live_target(settings, stores, catalog)
        known = catalog.documents_by_id()
        listed: list[SourceDocument] = list(src.list_documents())
        counts: Counter[str] = Counter()
        entries: list[dict] = []
        listed_ids: set[str] = set()
        for doc in listed:
            did = doc_id_for(doc.uri)
            listed_ids.add(did)
            if lo is not None and doc.modified < lo or hi is not None and doc.modified >= hi:
                continue  # outside this run's data interval
            counts["seen"] += 1
            prev = known.get(did)
            if prev is not None and prev.status != "deleted" and not doc.refused and _same_metadata(prev, doc):
                quarantined_as_is = prev.status == "failed" and not retry_quarantined
                if quarantined_as_is or (prev.status == "indexed" and set(stores) <= prev.stores):
                    counts["unchanged"] += 1
                    continue
            entries.append(
                {
                    **doc.as_dict(),
                    "doc_id": did,
                    "prev_status": prev.status if prev else None,
                    "prev_hash": prev.content_hash if prev and prev.status != "deleted" else None,
                    "prev_error_hash": prev.error_hash if prev else None,
                    "prev_stores": sorted(prev.stores) if prev else [],
                    "retry": retry_quarantined,
                }
            )
        deleted: list[str] = []
        if full_sync:
            prefix = source if source.startswith("s3://") else str(Path(source).expanduser().absolute()).rstrip("/") + "/"
            deleted = sorted(
                did for did, row in known.items()
                if row.status != "deleted" and row.uri.startswith(prefix) and did not in listed_ids
            )
        counts["deleted"] = len(deleted)
        counts["candidates"] = len(entries)

        staging = open_staging(settings)
        run_url = staging.run_url(run_id)
        staging.remove_run(run_url)  # a retried discover starts clean
        # Airflow caps a mapped task at max_map_length (1024) expansions: grow batches instead
        size = max(settings.batch_size, math.ceil(len(entries) / MAX_BATCHES))
        if size > settings.batch_size:
            log.info("discover: %d documents: batch size raised to %d to stay within %d batches", len(entries), size, MAX_BATCHES)
        batches = []
        for n, i in enumerate(range(0, len(entries), size)):
            url = staging.join(run_url, f"batch-{n:05d}.json")
            staging.write_json(
                url, {"source": source, "stores": stores, "overrides": target.overrides, "docs": entries[i : i + size]}
            )
            batches.append(url)
        plan = Plan(
            run_id=run_id, run_url=run_url, source=source, full_sync=full_sync, stores=stores,
            since=lo, until=hi, batches=batches, deleted=deleted, counts=dict(counts),
            seconds={"discover": round(time.perf_counter() - t0, 4)}, target=target.as_dict(),
        )
        plan.save(settings)
        catalog.start_run(run_id, source, full_sync)
        stale = staging.clean_stale(STAGING_KEEP_DAYS * 86400, keep=run_url)
        if stale:
            log.info("discover: removed the staging of %d run(s) older than %d days", stale, STAGING_KEEP_DAYS)
        log.info(
            "discover: %d listed, %d in scope, %d unchanged (skipped unread), %d to process in %d batch(es), %d deleted",
            len(listed), counts["seen"], counts["unchanged"], len(entries), len(batches), len(deleted),
        )
        return plan
    finally:
        if own:
            rt.close()


def _same_metadata(prev, doc: SourceDocument) -> bool:
    if prev.size_bytes != doc.size:
        return False
    if doc.etag and prev.etag:
        return prev.etag == doc.etag
    return prev.modified_at == doc.modified
