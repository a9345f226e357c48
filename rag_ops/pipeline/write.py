"""Write a processed run: the quality gate, each store's writer, and the catalog commit (last)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag_ops.config import Settings
from rag_ops.errors import RagopsError, StagingMissing
from rag_ops.pipeline.helpers import peak_rss_mb
from rag_ops.pipeline.plan import Plan
from rag_ops.pipeline.process import load_result
from rag_ops.pipeline.runtime import Runtime
from rag_ops.staging import staging_at

log = logging.getLogger(__name__)


def quality_thresholds(settings: Settings):
    """The gate's thresholds, from the settings and the model's declared dimension."""
    from rag_ops.encoders import model_dimension  # not rag_ops.embed: the gate's helper needs no SQLAlchemy
    from rag_ops.quality import Thresholds

    return Thresholds(
        max_document_bytes=settings.max_document_bytes,
        min_printable_ratio=settings.quality_min_printable_ratio,
        max_chunk_tokens=settings.chunk_size,
        max_duplicate_chunk_rate=settings.quality_max_duplicate_rate,
        embedding_dim=model_dimension(settings.model_path) or 384,
        max_near_duplicate_rate=settings.quality_max_near_duplicate_rate,
        max_failure_share=settings.quality_max_failure_share,
    )


def _gate_ref(plan: Plan) -> str:
    return plan.file("quality.json")


_PENDING_DOCS: list = []  # in the gate's helper process: the Data Docs builds left for later


@dataclass
class GateChecks:
    """What the quality checks of a run found, before the catalog records it: :func:`check_gate`
    makes it (in the CLI, in the gate's helper process, which needs no catalog connection) and
    :func:`record_gate` records it (in the run's process)."""

    run_id: str
    documents: int
    chunks: int
    outcomes: list[dict]  # one per expectation and suite
    quarantined: dict[str, str]  # doc_id -> reason(s)
    uris: dict[str, str]  # doc_id -> source URI, of the quarantined documents
    batch_failures: list[str]
    data_docs: str | None
    seconds: float  # the checks, without Great Expectations' import
    import_seconds: float
    peak_rss_mb: float  # of the process that ran the checks


def quality_gate(settings: Settings, plan_ref: str, runtime: Runtime | None = None, defer_docs: bool = False) -> dict:
    """Run the Great Expectations suites over everything this run is about to upsert.

    Row-level failures quarantine the offending documents (they are not upserted; the rest go
    on); batch-level failures (wrong dimension, too many duplicates, too large a failure share)
    stop the run here, before any store is written. Results go to the catalog
    (``quality_results``) and to a Data Docs site under ``<data_dir>/quality/data_docs``.

    Returns:
        ``{"checked", "quarantined", "data_docs", "seconds", "imports", "peak_rss_mb"}``.

    With ``defer_docs`` a gate that passes leaves its Data Docs pages to
    :func:`build_quality_docs` in the same process (the CLI's gate helper builds them while the
    stores are written); a failing gate builds them at once, for the user to read.

    Raises:
        QualityGateError: a batch-level expectation failed (message names it and the observed value).
    """
    own = runtime is None
    rt = runtime or Runtime(settings)
    try:
        return record_gate(check_gate(settings, plan_ref, defer_docs), rt)
    finally:
        if own:
            rt.close()


def check_gate(settings: Settings, plan_ref: str, defer_docs: bool = False) -> GateChecks:
    """The checks of :func:`quality_gate`, their Data Docs and the gate's staged verdict (which
    the store writers read), without recording them in the catalog."""
    from rag_ops import quality

    t0 = time.perf_counter()
    plan = Plan.load(plan_ref, settings)
    documents, chunk_rows, vector_parts = [], [], []
    for batch_ref in plan.batches:
        result, vectors = load_result(batch_ref, settings)
        for d in result["docs"]:
            if d["outcome"] not in ("new", "changed", "restored"):
                continue
            lo, hi = d["chunk_rows"]
            documents.append({"doc_id": d["doc_id"], "uri": d["uri"], "size": d["size"], **d["stats"]})
            chunk_rows.extend(result["chunks"][lo:hi])
            vector_parts.append(vectors[lo:hi])
    vectors = np.concatenate(vector_parts) if vector_parts else np.zeros((0, 0), dtype=np.float32)
    gate = quality.check_quality(
        documents, chunk_rows, vectors, quality_thresholds(plan.settings_for(settings)),
        run_id=plan.run_id, docs_dir=settings.data_dir / "quality" / "data_docs", defer_docs=defer_docs,
    )
    if gate.build_docs is not None:
        if gate.ok:
            _PENDING_DOCS.append(gate.build_docs)
        else:
            gate.build_docs()
    staging_at(plan.ref, settings).write_json(
        _gate_ref(plan),
        {"quarantined": gate.quarantined, "batch_failures": gate.batch_failures, "data_docs": gate.data_docs},
    )
    return GateChecks(
        run_id=plan.run_id, documents=len(documents), chunks=len(chunk_rows),
        outcomes=[dict(o.__dict__) for o in gate.outcomes], quarantined=dict(gate.quarantined),
        uris={d["doc_id"]: d["uri"] for d in documents if d["doc_id"] in gate.quarantined},
        batch_failures=list(gate.batch_failures), data_docs=gate.data_docs,
        seconds=round(time.perf_counter() - t0 - gate.import_seconds, 4), import_seconds=round(gate.import_seconds, 4),
        peak_rss_mb=peak_rss_mb(),
    )


def record_gate(checks: GateChecks, runtime: Runtime) -> dict:
    """Record the checks' outcomes in the catalog, report them, and stop the run when a
    batch-level check failed (see :func:`quality_gate`)."""
    from rag_ops.quality.types import raise_for_batch_failures

    t0 = time.perf_counter()
    runtime.catalog.write_quality_results(checks.run_id, checks.outcomes)
    failed = sum(1 for o in checks.outcomes if not o["success"])
    log.info(
        "quality: %d documents, %d chunks checked; %d expectations failed; %d documents quarantined; "
        "Data Docs: %s", checks.documents, checks.chunks, failed, len(checks.quarantined), checks.data_docs,
    )
    for doc_id, reason in checks.quarantined.items():
        log.warning("quality: quarantined %s: %s", checks.uris[doc_id], reason)
    raise_for_batch_failures(checks.batch_failures)
    return {
        "checked": checks.documents, "quarantined": len(checks.quarantined), "data_docs": checks.data_docs,
        "seconds": round(checks.seconds + time.perf_counter() - t0, 4), "imports": checks.import_seconds,
        "peak_rss_mb": checks.peak_rss_mb,
    }


def build_quality_docs() -> float:
    """Build the Data Docs pages :func:`quality_gate` left for later in this process; returns
    the seconds it took."""
    t0 = time.perf_counter()
    while _PENDING_DOCS:
        _PENDING_DOCS.pop(0)()
    return round(time.perf_counter() - t0, 4)


def _quarantined_by_gate(plan: Plan, settings: Settings) -> dict[str, str]:
    try:
        gate = staging_at(plan.ref, settings).read_json(_gate_ref(plan))
    except StagingMissing:
        return {}
    if gate["batch_failures"]:
        raise RagopsError("the quality gate failed for this run: refusing to write it: " + "; ".join(gate["batch_failures"]))
    return gate["quarantined"]


# ---------------------------------------------------------------------------- stores
def upsert_store(settings: Settings, store_name: str, plan_ref: str, runtime: Runtime | None = None) -> dict:
    """Write every staged batch of a run into one store: upsert, drop stale chunks, prune.

    Only chunk ids the store does not hold yet are written (ids come from content, so a held id
    holds the same text and vector). Stale chunks of changed documents are deleted after the
    upsert succeeded. Then every chunk of the documents a full sync found deleted is removed.

    Returns:
        ``{"store", "upserted", "removed", "pruned", "seconds"}`` (``removed`` counts stale and
        pruned chunks together).

    Raises:
        StoreError: the store is unreachable or refused (retryable).
    """
    from rag_ops.stores import StoredChunk

    own = runtime is None
    plan = Plan.load(plan_ref, settings)
    rt = runtime or Runtime(plan.settings_for(settings), target=plan.target)
    t0 = time.perf_counter()
    upserted = removed = 0
    stack = contextlib.ExitStack()
    from rag_ops.stores import embedded_write_lock

    try:
        quarantined = _quarantined_by_gate(plan, settings)
        # one writer per embedded store across processes (ingest tasks, a re-index, the CLI)
        stack.enter_context(embedded_write_lock(store_name, settings))
        store = rt.store(store_name)
        for batch_ref in plan.batches:
            result, vectors = load_result(batch_ref, settings)
            docs = [
                d for d in result["docs"]
                if d["outcome"] in ("new", "changed", "restored") and d["doc_id"] not in quarantined
            ]
            if not docs:
                continue
            existing = store.ids_by_doc([d["doc_id"] for d in docs])
            rows, idx, stale = [], [], []
            for d in docs:
                lo, hi = d["chunk_rows"]
                have = existing.get(d["doc_id"], set())
                produced = set()
                for i in range(lo, hi):
                    c = result["chunks"][i]
                    produced.add(c["chunk_id"])
                    if c["chunk_id"] not in have:
                        rows.append(
                            StoredChunk(
                                id=c["chunk_id"], text=c["text"], doc_id=c["doc_id"], source_uri=c["source_uri"],
                                seq=c["seq"], page=c["page"], section=c["section"],
                            )
                        )
                        idx.append(i)
                stale.extend(sorted(have - produced))
            if rows:
                store.ensure_collection(int(vectors.shape[1]))
                upserted += store.upsert(rows, vectors[idx])
            # only after the new chunks are in: remove what the documents no longer produce
            if stale:
                removed += store.delete_ids(stale)
            log.info("%s: %s -> %d upserted, %d stale removed", store_name, Path(batch_ref).name, len(rows), len(stale))
        pruned = store.delete_docs(plan.deleted) if plan.deleted else 0
        if plan.deleted:
            log.info("%s: pruned %d chunks of %d deleted documents", store_name, pruned, len(plan.deleted))
        return {
            "store": store_name, "upserted": upserted, "removed": removed + pruned, "pruned": pruned,
            "seconds": round(time.perf_counter() - t0, 4), "peak_rss_mb": peak_rss_mb(),
        }
    finally:
        if own:
            rt.close()
        stack.close()


# ---------------------------------------------------------------------------- commit
_CATALOG_CHUNK_FIELDS = ("chunk_id", "seq", "text_hash", "tokens")


def commit_run(
    settings: Settings,
    plan_ref: str,
    store_results: list[dict],
    runtime: Runtime | None = None,
    keep_staging: bool = False,
) -> dict:
    """Record the run in the catalog (after every store accepted it) and return the report.

    Returns:
        The run report: ``seen, new, changed, unchanged, deleted, failed, chunks, encoded,
        cache_hits`` (ints), ``upserted`` and ``removed`` (store -> count), ``seconds``
        (stage -> seconds), plus ``run_id``, ``restored`` and ``failures`` (uri -> reason).
    """
    own = runtime is None
    rt = runtime or Runtime(settings)
    t0 = time.perf_counter()
    try:
        plan = Plan.load(plan_ref, settings)
        quarantined = _quarantined_by_gate(plan, settings)
        indexed, failed, touched = [], [], []
        counts: Counter[str] = Counter()
        seconds: Counter[str] = Counter(plan.seconds)
        failures: dict[str, str] = {}
        for batch_ref in plan.batches:
            result, _ = load_result(batch_ref, settings)
            counts.update(result["counts"])
            seconds.update(result["seconds"])
            for d in result["docs"]:
                if d["doc_id"] in quarantined:
                    counts[d["outcome"]] -= 1
                    counts["failed"] += 1
                    d = {**d, "outcome": "failed", "error_stage": "quality", "error": quarantined[d["doc_id"]]}
                if d["outcome"] in ("new", "changed", "restored"):
                    lo, hi = d["chunk_rows"]
                    # changed content lives only in this run's stores; restored content keeps the old ones
                    prev_stores = set(d["prev_stores"]) if d["outcome"] == "restored" else set()
                    # what the catalog records of a chunk, not its text: the run is committed in one
                    # transaction, and this keeps a whole run's rows small (tens of bytes a chunk)
                    chunk_rows = [{k: c[k] for k in _CATALOG_CHUNK_FIELDS} for c in result["chunks"][lo:hi]]
                    indexed.append({**d, "chunks": chunk_rows, "stores": prev_stores | set(plan.stores)})
                elif d["outcome"] == "failed":
                    failures[d["uri"]] = f"{d['error_stage']}: {d['error']}"
                    failed.append(d)
                elif d["outcome"] == "unchanged":
                    touched.append(d)
        upserted = {r["store"]: r["upserted"] for r in store_results}
        removed = {r["store"]: r["removed"] for r in store_results}
        for r in store_results:
            seconds[f"upsert_{r['store']}"] += r["seconds"]
        missing = [s for s in plan.stores if s not in upserted]
        if missing:
            raise RagopsError(f"no upsert result for store(s) {missing}: refusing to commit the catalog")

        target = plan.target or {}
        rt.catalog.write_results(
            indexed=indexed, failed=failed, touched=touched, deleted=plan.deleted, run_id=plan.run_id,
            expect_live=(target["index_name"], target["collections"]) if target.get("live") else None,
        )
        seconds["commit"] += time.perf_counter() - t0
        report = {
            "run_id": plan.run_id,
            "source": plan.source,
            "full_sync": plan.full_sync,
            "stores": plan.stores,
            "seen": plan.counts.get("seen", 0),
            "new": counts["new"],
            "changed": counts["changed"],
            "restored": counts["restored"],
            "unchanged": plan.counts.get("unchanged", 0) + counts["unchanged"],
            "deleted": len(plan.deleted),
            "failed": counts["failed"],
            "chunks": counts["chunks"],
            "encoded": counts["encoded"],
            "cache_hits": counts["cache_hits"],
            "tokens_encoded": counts["tokens_encoded"],
            "model_id": plan.settings_for(settings).model_id,
            "versions": (plan.target or {}).get("versions", {}),
            "encode_seconds": round(seconds.pop("encode_model", 0.0), 3),
            "model_load_seconds": round(seconds.get("model_load", 0.0), 3),
            "upserted": upserted,
            "removed": removed,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "failures": failures,
        }
        from rag_ops.steps import step_counts

        if step_counts(counts):
            report["steps"] = step_counts(counts)
        rt.catalog.finish_run(plan.run_id, report)
        if not keep_staging:
            staging_at(plan.ref, settings).remove_run(plan.run_url)
        log.info(
            "run %s: seen %d, new %d, changed %d, unchanged %d, deleted %d, failed %d; chunks %d, encoded %d, "
            "cache hits %d; upserted %s, removed %s",
            plan.run_id, report["seen"], report["new"], report["changed"], report["unchanged"], report["deleted"],
            report["failed"], report["chunks"], report["encoded"], report["cache_hits"], upserted, removed,
        )
        return report
    finally:
        if own:
            rt.close()
