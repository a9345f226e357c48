"""Re-index: build a new index version beside the live one, gate it, swap readers, keep the old.

The steps (each one call, so the ``rag_reindex`` DAG runs them as tasks and the CLI in a row):

1. :func:`begin` — take the index's re-index lock (a catalog row: a second re-index fails fast
   naming the running one), decide whether a re-index is needed (config drift, a recent
   embedding-drift report, or ``force``), plan its cost (:func:`plan_reindex`) and stop over
   budget before anything is encoded, then register version N (``building``) per store.
2. :func:`build` — a full-sync ingest of every source the index was fed from into the new
   physical collections, with the settings' model and chunker, recording the version's document
   and chunk state in a catalog of its own (``<data_dir>/versions/<index>/vN.db``). The
   embedding cache makes an unchanged model encode nothing.
3. :func:`catch_up` — the same ingest again: whatever was added, edited or deleted in the
   sources while the build ran is applied to the new version.
4. :func:`check` — the quality gate: every store holds exactly the chunks its state lists (the
   Great Expectations suites already ran on every batch of the build).
5. :func:`recall_gate` — the recall evaluator on the new version versus the live one, on the
   synthetic golden set; a metric falling by more than ``reindex_recall_tolerance`` fails.
6. :func:`swap` — one last catch-up, then Milvus' alias is altered and the catalog's live
   pointer and document/chunk state replaced in one transaction. A run writing the old version
   meanwhile is refused at its commit (``IndexSwapped``) and its documents go to the new one
   with the next run.
7. :func:`retire` — keep the newest ``index_keep_versions`` versions, drop older physical
   collections, release the lock.

:func:`abort` marks the version ``failed`` (the live one keeps serving) and releases the lock.
:func:`rollback` makes an earlier retained version live again.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterable, Sequence

from rag_ops.config import Settings
from rag_ops.errors import BudgetExceeded, ConfigError, GateFailed, RagopsError
from rag_ops.versions import (
    BUILD_FIELDS,
    WriteTarget,
    apply_overrides,
    build_config,
    config_differences,
    live_target,
    open_catalog,
    physical_name,
    drop_state,
    reset_state,
    state_db_url,
    state_url,
)

log = logging.getLogger(__name__)

GATE_METRICS = ("ndcg@10", "recall@10", "mrr@10")


# ---------------------------------------------------------------------------- cost
def encode_throughput(catalog, model_id: str, runs: int = 20) -> tuple[float | None, str]:
    """Tokens per second the model encoded in recent runs (the same model if any ran), and where from."""
    import json

    rows = catalog.last_runs(200)
    figures = []
    for r in rows:
        try:
            rep = json.loads(r.get("report") or "{}")
        except ValueError:
            continue
        if rep.get("tokens_encoded") and rep.get("encode_seconds"):
            figures.append((rep.get("model_id"), rep["tokens_encoded"], rep["encode_seconds"]))
    same = [f for f in figures if f[0] == model_id][:runs]
    use = same or figures[:runs]
    if not use:
        return None, "no run has encoded anything yet"
    tokens, secs = sum(f[1] for f in use), sum(f[2] for f in use)
    source = f"{len(use)} recent run(s)" + ("" if same else f" of another model ({use[0][0]})")
    return tokens / secs, source


def plan_reindex(settings: Settings, stores: Sequence[str] | None = None, catalog=None) -> dict[str, Any]:
    """What re-indexing with ``settings`` would cost, before anything is encoded.

    With the live chunker (same tokenizer and sizes) the chunks are the catalog's: those whose
    text the cache lacks for the settings' model are counted with their recorded tokens. With a
    changed chunker the chunks are estimated from the live chunks' texts tokenized with the new
    model's tokenizer (``exact`` is then False) and all are assumed to miss the cache.

    Returns:
        ``chunks`` (to encode), ``tokens``, ``estimated_seconds``, ``estimated_cost`` (None
        without a price), ``total_chunks``, ``documents``, ``tokens_per_second`` and where it
        comes from, ``exact``, ``model_id``.
    """
    from rag_ops.cache import open_cache

    own = catalog is None
    cat = catalog or open_catalog(settings)
    try:
        stores = list(stores or settings.stores)
        target = live_target(settings, stores, cat)
        live_settings = apply_overrides(settings, target.overrides)
        docs, chunk_rows = cat.export_state()
        live_docs = {d["doc_id"] for d in docs if d["status"] == "indexed"}
        chunk_rows = [c for c in chunk_rows if c["doc_id"] in live_docs]
        model_id = settings.model_id
        same_chunker = live_settings.chunker_fingerprint == settings.chunker_fingerprint
        if same_chunker:
            by_hash = {c["text_hash"]: int(c["tokens"] or 0) for c in chunk_rows}
            cache = open_cache(settings)
            try:
                cached = cache.get_many(model_id, list(by_hash))
            finally:
                cache.close()
            misses = [h for h in by_hash if h not in cached]
            n_chunks, tokens, total = len(misses), sum(by_hash[h] for h in misses), len(chunk_rows)
        else:
            n_chunks, tokens = _estimate_rechunk(settings, live_settings, stores[0], target, chunk_rows, len(live_docs))
            total = n_chunks
        tps, source = encode_throughput(cat, model_id)
        seconds = tokens / tps if tps else None
        price = settings.reindex_price_per_1k_tokens
        return {
            "chunks": n_chunks, "tokens": tokens,
            "estimated_seconds": round(seconds, 1) if seconds is not None else None,
            "estimated_cost": round(tokens / 1000 * price, 4) if price else None,
            "total_chunks": total, "documents": len(live_docs), "tokens_per_second": round(tps, 1) if tps else None,
            "throughput_from": source, "exact": same_chunker, "model_id": model_id,
        }
    finally:
        if own:
            cat.close()


def _estimate_rechunk(settings: Settings, live_settings: Settings, store: str, target: WriteTarget, chunk_rows, n_docs: int):
    """Chunks and tokens a new chunker would make, from the live chunks' texts and the new tokenizer.

    Tokens: the live chunks' texts counted with the new model's tokenizer (the overlap counted
    once more per extra chunk). Chunks: the live count, scaled by the ratio of the old to the
    new step (chunk size minus overlap) when the sizes change (documents are chunked per
    section, so chunks are rarely full: scaling the live count is closer than dividing tokens).
    """
    from rag_ops.chunk import make_chunker
    from rag_ops.stores import open_store

    ids = [c["chunk_id"] for c in chunk_rows]
    with open_store(store, live_settings, collection=target.collections[store]) as st:
        texts = [t for t, _ in st.get_texts(ids).values()]
    if not texts:
        return 0, 0
    count = make_chunker(settings).length
    old_step = live_settings.chunk_size - live_settings.chunk_overlap
    new_step = settings.chunk_size - settings.chunk_overlap
    n_chunks = max(n_docs, math.ceil(len(texts) * old_step / new_step))
    content = sum(count(t) for t in texts) - live_settings.chunk_overlap * max(0, len(texts) - n_docs)
    return n_chunks, int(content + settings.chunk_overlap * max(0, n_chunks - n_docs))


def enforce_budget(plan: dict[str, Any], max_tokens: int = 0, max_seconds: float = 0) -> None:
    """Raise :class:`BudgetExceeded` (giving the estimate and the budget) when the plan is over it."""
    over = []
    if max_tokens and plan["tokens"] > max_tokens:
        over.append(f"{plan['tokens']:,} tokens to encode > budget of {max_tokens:,} tokens")
    if max_seconds and plan["estimated_seconds"] is not None and plan["estimated_seconds"] > max_seconds:
        over.append(f"an estimated {plan['estimated_seconds']:,.0f} s of encoding > budget of {max_seconds:,.0f} s")
    if over:
        raise BudgetExceeded(
            "re-index stopped before encoding anything: " + "; ".join(over)
            + f" ({plan['chunks']:,} chunks of {plan['total_chunks']:,}, model {plan['model_id']}, "
            f"{plan['tokens_per_second'] or '?'} tokens/s from {plan['throughput_from']})"
        )


# ---------------------------------------------------------------------------- drift decision
def reasons_to_reindex(settings: Settings, stores: Sequence[str], catalog) -> list[str]:
    """Config drift of any store's live version, and embedding drift reported since it went live."""
    live = catalog.live_versions(settings.collection)
    reasons: list[str] = []
    for store in stores:
        if store in live:
            reasons.extend(config_differences(live[store], settings))
    swapped = min((live[s]["swapped_at"] or "" for s in stores if s in live), default="")
    for report in catalog.drift_reports(limit=5, collection=settings.collection):
        if report["drifted"] and report["created_at"] >= swapped:
            reasons.append("embedding drift: " + "; ".join(report["reasons"][:3]))
            break
    return reasons


# ---------------------------------------------------------------------------- steps
def begin(
    settings: Settings,
    *,
    stores: Sequence[str] | None = None,
    reason: str = "",
    force: bool = False,
    max_tokens: int | None = None,
    max_seconds: float | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Lock, decide, plan and register the new version. Returns the context the other steps take.

    The context has ``skipped`` True (and the lock released) when nothing drifted and not ``force``.

    Raises:
        IndexLocked: another re-index of this index is running.
        BudgetExceeded: over ``max_tokens`` / ``max_seconds`` (default the settings' budgets).
        ConfigError: a model or chunker change asked for a subset of the stores.
    """
    from rag_ops.pipeline import new_run_id

    run_id = run_id or new_run_id().replace("cli__", "reindex__")
    index = settings.collection
    stores = list(stores or settings.stores)
    cat = open_catalog(settings)
    try:
        cat.acquire_lock(index, run_id, settings.reindex_lock_ttl_seconds)
        try:
            live_target(settings, stores, cat)  # registers v1 of a store that has none
            drift = reasons_to_reindex(settings, stores, cat)
            config_changed = any(r.startswith("config drift") for r in drift)
            if config_changed and set(stores) != set(settings.stores):
                raise ConfigError(
                    f"a model or chunker change re-indexes every store of {index!r} together (the catalog keeps one "
                    f"chunk layout): re-index {list(settings.stores)}, not {stores}. " + "; ".join(drift)
                )
            reasons = ([reason] if reason else []) + drift + (["forced"] if force and not drift else [])
            if not drift and not force:
                cat.release_lock(index, run_id)
                log.info("re-index of %r: nothing drifted (config and embeddings); nothing to do", index)
                return {"skipped": True, "run_id": run_id, "index": index, "stores": stores, "reasons": ["nothing drifted"]}
            plan = plan_reindex(settings, stores, cat)
            log.info(
                "re-index plan for %r: %d chunks to encode (of %d), %d tokens, ~%s s%s; reasons: %s",
                index, plan["chunks"], plan["total_chunks"], plan["tokens"], plan["estimated_seconds"],
                f", cost {plan['estimated_cost']}" if plan["estimated_cost"] is not None else "", "; ".join(reasons),
            )
            enforce_budget(
                plan,
                settings.reindex_budget_tokens if max_tokens is None else max_tokens,
                settings.reindex_budget_seconds if max_seconds is None else max_seconds,
            )
            mine = [r for r in cat.versions(index) if r["run_id"] == run_id and r["status"] == "building"]
            if mine:  # a retried first task of the same run: go on with its version
                version = mine[0]["version"]
                return {
                    "skipped": False, "run_id": run_id, "index": index, "stores": stores, "version": version,
                    "collection": physical_name(index, version), "state_url": mine[0]["state_url"], "reasons": reasons,
                    "plan": plan, "sources": _sources(settings), "config_changed": config_changed,
                }
            version = 1 + max((r["version"] for r in cat.versions(index) if r["store"] in stores), default=0)
            config = build_config(settings)
            url = state_url(settings, index, version)
            reset_state(settings, url)  # a failed earlier attempt's state
            for store in stores:
                cat.add_version(
                    {
                        "index_name": index, "store": store, "version": version,
                        "collection": physical_name(index, version), "status": "building",
                        "reason": "; ".join(reasons)[:2000], "state_url": url, "run_id": run_id, **config,
                    }
                )
        except BaseException:
            cat.release_lock(index, run_id)
            raise
    finally:
        cat.close()
    log.info("re-index of %r: building version %d (%s) in %s", index, version, physical_name(index, version), ", ".join(stores))
    return {
        "skipped": False, "run_id": run_id, "index": index, "stores": stores, "version": version,
        "collection": physical_name(index, version), "state_url": url, "reasons": reasons, "plan": plan,
        "sources": _sources(settings), "config_changed": config_changed,
    }


def _sources(settings: Settings) -> list[str]:
    """Every source the index was fed from that still holds live documents (else the setting's)."""
    from pathlib import Path as _P

    cat = open_catalog(settings)
    try:
        uris = [d["uri"] for d in cat.export_state()[0] if d["status"] in ("indexed", "failed")]
        seen = []
        for r in cat.last_runs(1000):
            src = r.get("source")
            if r.get("status") == "success" and src and src not in seen:
                seen.append(src)
    finally:
        cat.close()
    out = []
    for src in seen:
        prefix = src if src.startswith("s3://") else str(_P(src).expanduser().absolute()).rstrip("/") + "/"
        if any(u.startswith(prefix) for u in uris) and not any(prefix.startswith(o if o.startswith("s3://") else o.rstrip("/") + "/") for o in out):
            out.append(src)
    return out or [settings.source]


def _build_settings(settings: Settings, ctx: dict[str, Any]) -> Settings:
    return settings.with_catalog(state_db_url(settings, ctx["state_url"]))


def _build_target(settings: Settings, ctx: dict[str, Any]) -> WriteTarget:
    return WriteTarget(
        index_name=ctx["index"], collections={s: ctx["collection"] for s in ctx["stores"]},
        versions={s: ctx["version"] for s in ctx["stores"]},
        overrides={f: getattr(settings, f) for f in BUILD_FIELDS}, live=False,
    )


def _ingest_all(settings: Settings, ctx: dict[str, Any], label: str, helper_processes: bool) -> dict[str, int]:
    from rag_ops.pipeline import ingest

    return _record_and_total(settings, (
        ingest(
            _build_settings(settings, ctx), source=src, full_sync=True, stores=ctx["stores"],
            run_id=f"{ctx['run_id']}__{label}{i}", target=_build_target(settings, ctx), helper_processes=helper_processes,
        )
        for i, src in enumerate(ctx["sources"])
    ))


def _record_and_total(settings: Settings, reports: Iterable[dict]) -> dict[str, Any]:
    """Record each run report of a build or catch-up (:func:`_record_run`) as it comes; their sums."""
    totals: dict[str, Any] = {k: 0 for k in ("new", "changed", "deleted", "failed", "chunks", "encoded", "cache_hits", "tokens_encoded")}
    secs = 0.0
    for report in reports:
        for k in totals:
            totals[k] += int(report.get(k, 0))
        secs += float(report.get("encode_seconds") or 0)
        _record_run(settings, report)
    totals["encode_seconds"] = round(secs, 3)
    return totals


def _record_run(settings: Settings, report: dict) -> None:
    """Copy a build run's figures into the main catalog's runs (the planner learns from them)."""
    cat = open_catalog(settings)
    try:
        cat.start_run(report["run_id"], report.get("source", ""), True)
        cat.finish_run(report["run_id"], {k: v for k, v in report.items() if k != "failures"})
    finally:
        cat.close()


def build(settings: Settings, ctx: dict[str, Any], helper_processes: bool = False) -> dict[str, Any]:
    """Build the new version from every source (full sync into its own state). Returns counts."""
    t0 = time.perf_counter()
    totals = _ingest_all(settings, ctx, "build", helper_processes)
    log.info(
        "re-index %r v%d built in %.1fs: %d documents, %d chunks, %d encoded, %d from cache",
        ctx["index"], ctx["version"], time.perf_counter() - t0, totals["new"] + totals["changed"], totals["chunks"],
        totals["encoded"], totals["cache_hits"],
    )
    _update(settings, ctx, encoded=totals["encoded"])
    return totals


def plan_build(settings: Settings, ctx: dict[str, Any]) -> list[str]:
    """Mapped build, step 1 (the DAG): discover every source into the new version; the batch paths.

    The same work as :func:`build`, split so that Airflow maps :func:`build_batch` over the
    batches (``parallel_batches`` at once) and writes every store in one task
    (:func:`commit_build`), as the ingest DAG does.
    """
    from rag_ops.pipeline import discover

    refs: list[str] = []
    for i, src in enumerate(ctx["sources"]):
        plan = discover(
            _build_settings(settings, ctx), source=src, full_sync=True, stores=ctx["stores"],
            run_id=f"{ctx['run_id']}__build{i}", target=_build_target(settings, ctx),
        )
        refs.extend(plan.batches)
    log.info("re-index %r v%d: %d batch(es) to build from %d source(s)", ctx["index"], ctx["version"], len(refs), len(ctx["sources"]))
    return refs


def build_batch(settings: Settings, ctx: dict[str, Any], batch_ref: str) -> dict[str, Any]:
    """Mapped build, step 2: read, parse, chunk and embed one batch (cache first) for the new version."""
    from rag_ops.pipeline import process_batch

    return process_batch(_build_settings(settings, ctx), batch_ref, concurrent_encoders=settings.parallel_batches)


def commit_build(settings: Settings, ctx: dict[str, Any]) -> dict[str, Any]:
    """Mapped build, step 3: quality suites, one writer per store, the version's catalog; counts."""
    from rag_ops.pipeline import commit_run, plan_ref_for, quality_gate, upsert_store

    bs = _build_settings(settings, ctx)

    def commit(ref: str) -> dict:
        quality_gate(bs, ref)
        return commit_run(bs, ref, [upsert_store(bs, store, ref) for store in ctx["stores"]])

    totals = _record_and_total(
        settings, (commit(plan_ref_for(bs, f"{ctx['run_id']}__build{i}")) for i in range(len(ctx["sources"])))
    )
    _update(settings, ctx, encoded=totals["encoded"])
    log.info("re-index %r v%d built: %s", ctx["index"], ctx["version"], totals)
    return totals


def catch_up(settings: Settings, ctx: dict[str, Any], helper_processes: bool = False) -> dict[str, Any]:
    """Apply to the new version what changed in the sources since the build listed them."""
    totals = _ingest_all(settings, ctx, "catchup", helper_processes)
    log.info(
        "re-index %r v%d caught up: %d new, %d changed, %d deleted documents since the build",
        ctx["index"], ctx["version"], totals["new"], totals["changed"], totals["deleted"],
    )
    return totals


def _update(settings: Settings, ctx: dict[str, Any], **values: Any) -> None:
    cat = open_catalog(settings)
    try:
        for store in ctx["stores"]:
            if "encoded" in values:
                row = next(r for r in cat.versions(ctx["index"], store) if r["version"] == ctx["version"])
                values = {**values, "encoded": int(row["encoded"] or 0) + int(values["encoded"])}
            cat.update_version(ctx["index"], store, ctx["version"], **values)
    finally:
        cat.close()


def check(settings: Settings, ctx: dict[str, Any]) -> dict[str, Any]:
    """Quality gate of the built version: each store holds exactly the chunk ids of its state.

    Raises:
        GateFailed: a store lacks chunks or holds others (names the store and the counts).
    """
    from rag_ops.catalog import Catalog
    from rag_ops.stores import open_store

    state = Catalog(state_db_url(settings, ctx["state_url"]))
    try:
        expected = state.all_chunk_ids()
        docs = state.counts()["documents"]
    finally:
        state.close()
    dims = {}
    for store in ctx["stores"]:
        with open_store(store, settings, collection=ctx["collection"]) as st:
            held = st.all_ids()
        missing, extra = expected - held, held - expected
        if missing or extra or not expected:
            raise GateFailed(
                f"quality gate of {ctx['collection']} in {store}: {len(missing)} chunk(s) missing and {len(extra)} "
                f"unexpected of {len(expected)} the version's catalog lists" + ("; the version is empty" if not expected else "")
            )
        dims[store] = len(held)
    from rag_ops.embed import model_dimension

    _update(settings, ctx, status="gated", documents=docs, chunks=len(expected), dimension=model_dimension(settings.model_path))
    log.info("re-index %r v%d passed the quality gate: %s chunks per store", ctx["index"], ctx["version"], dims)
    return {"chunks": len(expected), "documents": docs}


def recall_gate(settings: Settings, ctx: dict[str, Any], tolerance: float | None = None) -> dict[str, Any]:
    """Score the new version against the live one on the golden sets; refuse a worse one.

    * the **synthetic set** of the index: both versions hold the same documents (the build
      caught up), so its document ids are valid in both;
    * every **BEIR golden set** of ``recall_golden_dirs`` that has been ingested (the nightly
      recall run does that): when the model or chunker changes, a candidate version of the
      set's own collection is built with the new settings (and swapped in with the index, so the
      nightly scores stay comparable); otherwise both sides are the same collection, not scored.

    Each side's queries are encoded with its own model.

    Raises:
        GateFailed: a metric of the new version is lower than the live version's by more than
            ``tolerance`` (default ``reindex_recall_tolerance``): names the metric, both values,
            the tolerance, the store and the set.
    """
    from rag_ops import evaluate as ev

    tol = settings.reindex_recall_tolerance if tolerance is None else tolerance
    cat = open_catalog(settings)
    try:
        live = cat.live_versions(ctx["index"])
    finally:
        cat.close()
    if not any(s in live for s in ctx["stores"]):
        return {"skipped": "no live version"}
    results: dict[str, Any] = {}
    failures: list[str] = []
    golden = ev.make_synthetic_golden(settings, n_queries=settings.recall_synthetic_queries)
    if len(golden) == 0:
        log.warning("recall gate: the synthetic set has no query (too little indexed text); not scored")
    else:
        pairs = {
            s: ((_serving(settings, s, live), live[s]["collection"], live[s]["version"]), (settings, ctx["collection"], ctx["version"]))
            for s in ctx["stores"] if s in live
        }
        results[golden.name] = _compare(golden, pairs, tol, failures)
    for raw in settings.recall_golden_dirs:
        name, scores = _golden_set_gate(settings, ctx, raw, tol, failures)
        results[name] = scores
    log.info("re-index %r v%d recall gate: %s", ctx["index"], ctx["version"], results)
    if failures:
        raise GateFailed("recall gate refused the new version: " + "; ".join(failures))
    return {"metrics": results, "tolerance": tol}


def _serving(settings: Settings, store: str, live: dict[str, dict]) -> Settings:
    return apply_overrides(settings, {f: live[store][f] for f in BUILD_FIELDS})


def _compare(golden, pairs: dict[str, tuple], tol: float, failures: list[str]) -> dict[str, Any]:
    """Score ``{store: ((old settings, collection, version), (new settings, collection, version))}``."""
    from rag_ops import evaluate as ev

    qids = sorted(golden.queries)
    out: dict[str, Any] = {}
    for store, ((old_s, old_c, old_v), (new_s, new_c, new_v)) in pairs.items():
        old = ev.evaluate_store(old_s, store, golden, query_vectors=ev._encode_queries(old_s, golden, qids), collection=old_c)
        new = ev.evaluate_store(new_s, store, golden, query_vectors=ev._encode_queries(new_s, golden, qids), collection=new_c)
        out[store] = {m: {"live": round(old[m], 4), "new": round(new[m], 4)} for m in GATE_METRICS}
        for m in GATE_METRICS:
            if new[m] < old[m] - tol:
                failures.append(
                    f"{m} {new[m]:.4f} (new v{new_v}) < {old[m]:.4f} (live v{old_v}) - tolerance {tol} in {store} "
                    f"on golden set {golden.name!r} ({len(qids)} queries)"
                )
    return out


def _golden_run_id(ctx: dict[str, Any]) -> str:
    return f"{ctx['run_id']}__golden"


def _golden_set_gate(settings: Settings, ctx: dict[str, Any], raw: str, tol: float, failures: list[str]):
    """Build a candidate version of a BEIR set's collection with the new settings and compare."""
    from rag_ops import evaluate as ev

    golden = ev.load_golden(raw)
    bs = ev.beir_settings(settings, raw)
    cat = open_catalog(bs)
    try:
        live = cat.live_versions(bs.collection)
    finally:
        cat.close()
    stores = [s for s in ctx["stores"] if s in live]
    if not stores:
        log.warning("recall gate: golden set %s is not ingested yet (the nightly recall run does it); not scored", golden.name)
        return golden.name, {"skipped": "not ingested yet"}
    if not any(config_differences(live[s], bs) for s in stores):
        return golden.name, {"skipped": "same model and chunker as the live version: same scores"}
    cand = begin(bs, stores=stores, force=True, reason=f"candidate for {ctx['index']} v{ctx['version']}", run_id=_golden_run_id(ctx))
    try:
        build(bs, cand)
        check(bs, cand)
    except Exception as exc:
        abort(bs, cand, f"{type(exc).__name__}: {exc}")
        raise
    pairs = {
        s: ((_serving(bs, s, live), live[s]["collection"], live[s]["version"]), (bs, cand["collection"], cand["version"]))
        for s in stores
    }
    n_before = len(failures)
    scores = _compare(golden, pairs, tol, failures)
    if len(failures) > n_before:
        abort(bs, cand, "recall gate: " + "; ".join(failures[n_before:]))
    else:
        _release(bs, cand)  # gated; swapped with the index (swap) or marked failed (abort)
    return golden.name, scores


def _release(settings: Settings, ctx: dict[str, Any]) -> None:
    cat = open_catalog(settings)
    try:
        cat.release_lock(ctx["index"], ctx["run_id"])
    finally:
        cat.close()


def _golden_candidates(settings: Settings, ctx: dict[str, Any]) -> list[tuple[Settings, dict[str, Any]]]:
    """The gated candidate versions of the BEIR sets' collections this re-index built."""
    from rag_ops import evaluate as ev

    out = []
    for raw in settings.recall_golden_dirs:
        bs = ev.beir_settings(settings, raw)
        cat = open_catalog(bs)
        try:
            rows = [r for r in cat.versions(bs.collection) if r["run_id"] == _golden_run_id(ctx) and r["status"] == "gated"]
        finally:
            cat.close()
        if rows:
            out.append((bs, {
                "skipped": False, "run_id": _golden_run_id(ctx), "index": bs.collection, "stores": sorted({r["store"] for r in rows}),
                "version": rows[0]["version"], "collection": rows[0]["collection"], "state_url": rows[0]["state_url"],
                "sources": _sources(bs),
            }))
    return out


def swap(settings: Settings, ctx: dict[str, Any], helper_processes: bool = False) -> dict[str, Any]:
    """Catch up once more, then make the new version live (Milvus alias, catalog pointer and state)."""
    from rag_ops.catalog import Catalog
    from rag_ops.stores import embedded_write_lock, open_store

    last = catch_up(settings, ctx, helper_processes)
    state = Catalog(state_db_url(settings, ctx["state_url"]))
    try:
        new_state = state.export_state()
    finally:
        state.close()
    cat = open_catalog(settings)
    try:
        live = cat.live_versions(ctx["index"])
        old_versions = {s: live[s]["version"] for s in ctx["stores"] if s in live}
        full = set(ctx["stores"]) == set(settings.stores)
        snapshot = None
        if full and old_versions:
            # the retiring version's state, kept so that a rollback can make it live again
            snapshot = _save_state(settings, cat, ctx["index"], max(old_versions.values()), ctx["version"])
        moved = []
        try:
            for store in ctx["stores"]:
                if store == "milvus":
                    with embedded_write_lock(store, settings), open_store(store, settings, collection=ctx["collection"]) as st:
                        previous = st.alias_target(ctx["index"])
                        st.point_alias(ctx["index"])
                        moved.append(previous)
            cat.set_live(ctx["index"], {s: ctx["version"] for s in ctx["stores"]}, state=new_state if full else None,
                         retired_state_url=snapshot)
            from rag_ops.drift import ensure_reference

            now_live = cat.live_versions(ctx["index"])
            for store in ctx["stores"]:  # the new version's drift reference, from the cache
                ensure_reference(settings, cat, now_live[store], force=True)
        except Exception:
            for previous in moved:  # put Milvus readers back on the version the catalog still calls live
                if previous:
                    with open_store("milvus", settings, collection=previous) as st:
                        st.point_alias(ctx["index"])
            raise
    finally:
        cat.close()
    if full:  # its state is the catalog's now
        drop_state(settings, ctx["state_url"])
    for bs, cand in _golden_candidates(settings, ctx):  # golden sets' collections follow the model
        swap(bs, cand)
        retire(bs, cand)
    log.info(
        "re-index %r: version %d is live in %s (was %s); %d documents changed during the build were applied",
        ctx["index"], ctx["version"], ", ".join(ctx["stores"]), old_versions, last["new"] + last["changed"] + last["deleted"],
    )
    return {"version": ctx["version"], "previous": old_versions, "caught_up": last}


def _save_state(settings: Settings, cat, index: str, retiring: int, by: int) -> str:
    """Copy the catalog's document/chunk state (the retiring version's) to a file; its URL."""
    from rag_ops.catalog import Catalog

    url = state_url(settings, index, retiring, suffix=f"_retired_by_v{by}")
    reset_state(settings, url)
    keep = Catalog(state_db_url(settings, url))
    try:
        keep.migrate()
        keep.import_state(*cat.export_state())
    finally:
        keep.close()
    return url


def retire(settings: Settings, ctx: dict[str, Any] | None = None, keep: int | None = None) -> dict[str, Any]:
    """Retention: per store, the live version and the newest ``keep - 1`` retired ones (rollback
    targets; ``keep`` defaults to ``index_keep_versions``) keep their collections; older retired
    versions and every failed one (never a rollback target) are dropped; the rows stay. Then the
    lock is released."""
    from rag_ops.catalog import utcnow
    from rag_ops.stores import embedded_write_lock, open_store

    keep = settings.index_keep_versions if keep is None else keep
    index = ctx["index"] if ctx else settings.collection
    cat = open_catalog(settings)
    dropped = []
    try:
        for store in settings.stores:
            rows = [r for r in cat.versions(index, store) if not r["dropped_at"]]
            retired_kept = 0
            for r in sorted(rows, key=lambda r: -r["version"]):
                if r["status"] in ("live", "building", "gated"):
                    continue
                if r["status"] == "retired" and retired_kept < keep - 1:
                    retired_kept += 1
                    continue
                with embedded_write_lock(store, settings), open_store(store, settings, collection=r["collection"]) as st:
                    st.drop()
                cat.update_version(index, store, r["version"], dropped_at=utcnow(), state_url=None)
                if r["state_url"]:
                    still = any(x["state_url"] == r["state_url"] for x in cat.versions(index) if not x["dropped_at"])
                    if not still:
                        drop_state(settings, r["state_url"])
                dropped.append(f"{store}:{r['collection']}")
        if ctx:
            cat.release_lock(index, ctx["run_id"])
    finally:
        cat.close()
    if dropped:
        log.info("retention (keep %d): dropped %s", keep, ", ".join(dropped))
    return {"dropped": dropped}


def abort(settings: Settings, ctx: dict[str, Any], error: str) -> None:
    """Mark the version ``failed`` with the reason, drop nothing, release the lock."""
    if ctx.get("skipped"):
        return
    for bs, cand in _golden_candidates(settings, ctx):
        abort(bs, cand, f"the re-index of {ctx['index']} failed: {error}")
    cat = open_catalog(settings)
    try:
        for store in ctx["stores"]:
            rows = [r for r in cat.versions(ctx["index"], store) if r["version"] == ctx["version"]]
            if rows and rows[0]["status"] != "live":
                cat.update_version(ctx["index"], store, ctx["version"], status="failed", error=error[:4000])
        cat.release_lock(ctx["index"], ctx["run_id"])
    finally:
        cat.close()
    log.error("re-index %r v%d failed, the live version keeps serving: %s", ctx["index"], ctx["version"], error)


def break_lock(settings: Settings, holder: str | None = None) -> dict[str, Any]:
    """Release the re-index lock of a run that died (``ragops unlock``).

    The lock of a crashed re-index would otherwise hold until it expires
    (``RAGOPS_REINDEX_LOCK_TTL_SECONDS``). Its unfinished versions (``building``/``gated``) are
    marked ``failed``, so the next retention drops their collections; the live version is not
    touched. Run it only when the holder (shown by ``ragops versions``) is really gone.

    Args:
        holder: release only if this run holds the lock (guards against breaking a newer run's).

    Returns:
        ``{"index", "released", "holder", "acquired_at", "failed_versions"}``.

    Raises:
        ConfigError: ``holder`` was given and another run holds the lock.
    """
    from rag_ops.catalog import utcnow

    index = settings.collection
    cat = open_catalog(settings)
    try:
        lock = cat.lock_holder(index)
        if lock is None:
            return {"index": index, "released": False, "holder": None, "acquired_at": None, "failed_versions": []}
        if holder is not None and lock["holder"] != holder:
            raise ConfigError(f"the re-index lock of {index!r} is held by {lock['holder']!r}, not {holder!r}; nothing released")
        released = cat.release_lock(index, lock["holder"])
        failed = []
        for r in cat.versions(index):
            if r["run_id"] == lock["holder"] and r["status"] in ("building", "gated"):
                cat.update_version(
                    index, r["store"], r["version"], status="failed",
                    error=f"abandoned: its re-index lock was broken at {utcnow()} (ragops unlock)",
                )
                failed.append(f"{r['store']}:v{r['version']}")
    finally:
        cat.close()
    log.warning(
        "re-index lock of %r held by %s since %s broken; versions marked failed: %s",
        index, lock["holder"], lock["acquired_at"], ", ".join(failed) or "none",
    )
    return {"index": index, "released": released, "holder": lock["holder"], "acquired_at": lock["acquired_at"], "failed_versions": failed}


# ---------------------------------------------------------------------------- all in one
def reindex(
    settings: Settings,
    *,
    stores: Sequence[str] | None = None,
    reason: str = "",
    force: bool = False,
    max_tokens: int | None = None,
    max_seconds: float | None = None,
    run_id: str | None = None,
    helper_processes: bool = False,
    recall: bool = True,
) -> dict[str, Any]:
    """Every step in this process (``ragops reindex``). Returns ``version, status, encoded, swapped`` and details."""
    t0 = time.perf_counter()
    ctx = begin(settings, stores=stores, reason=reason, force=force, max_tokens=max_tokens, max_seconds=max_seconds, run_id=run_id)
    if ctx["skipped"]:
        return {"version": None, "status": "skipped", "encoded": 0, "swapped": False, "reasons": ctx["reasons"]}
    try:
        built = build(settings, ctx, helper_processes)
        caught = catch_up(settings, ctx, helper_processes)
        checked = check(settings, ctx)
        gate = recall_gate(settings, ctx) if recall else {"skipped": "recall gate off"}
        swapped = swap(settings, ctx, helper_processes)
    except RagopsError as exc:
        abort(settings, ctx, f"{type(exc).__name__}: {exc}")
        raise
    except BaseException as exc:
        abort(settings, ctx, f"{type(exc).__name__}: {exc}")
        raise
    retired = retire(settings, ctx)
    encoded = built["encoded"] + caught["encoded"] + swapped["caught_up"]["encoded"]
    return {
        "version": ctx["version"], "status": "live", "swapped": True, "encoded": encoded,
        "collection": ctx["collection"], "stores": ctx["stores"], "reasons": ctx["reasons"], "plan": ctx["plan"],
        "chunks": checked["chunks"], "documents": checked["documents"], "recall": gate,
        "previous": swapped["previous"], "dropped": retired["dropped"], "seconds": round(time.perf_counter() - t0, 1),
    }


def rollback(settings: Settings, to: int | None = None) -> dict[str, Any]:
    """Make an earlier retained version live again (default: the newest retired one below the live).

    Its document/chunk state as it was when it retired goes back into the catalog: the next
    ingest applies what changed in the sources since.

    Raises:
        ConfigError: no such version, or its collection was dropped by retention.
        IndexLocked: a re-index is running.
    """
    from rag_ops.catalog import Catalog
    from rag_ops.pipeline import new_run_id

    index = settings.collection
    holder = new_run_id().replace("cli__", "rollback__")
    cat = open_catalog(settings)
    try:
        cat.acquire_lock(index, holder, 600)
        try:
            live = cat.live_versions(index)
            if not live:
                raise ConfigError(f"index {index!r} has no live version: nothing to roll back")
            current = max(r["version"] for r in live.values())
            candidates = [
                r for r in cat.versions(index) if r["status"] == "retired" and not r["dropped_at"] and r["store"] in settings.stores
            ]
            if to is None:
                below = sorted({r["version"] for r in candidates if r["version"] < current})
                if not below:
                    raise ConfigError(f"index {index!r}: no retained retired version below the live v{current} to roll back to")
                to = below[-1]
            rows = {r["store"]: r for r in candidates if r["version"] == to}
            missing = [s for s in settings.stores if s not in rows]
            if missing:
                raise ConfigError(
                    f"index {index!r} has no retained retired version {to} in {missing} (see `ragops versions`; "
                    "dropped versions cannot come back)"
                )
            url = next((r["state_url"] for r in rows.values() if r["state_url"]), None)
            if url is None:
                raise ConfigError(f"version {to} of {index!r} has no saved state to roll back to")
            saved = Catalog(state_db_url(settings, url))
            try:
                state = saved.export_state()
            finally:
                saved.close()
            snapshot = _save_state(settings, cat, index, current, to)
            from rag_ops.stores import embedded_write_lock, open_store

            if "milvus" in rows:
                with embedded_write_lock("milvus", settings), open_store("milvus", settings, collection=rows["milvus"]["collection"]) as st:
                    st.point_alias(index)
            cat.set_live(index, {s: to for s in rows}, state=state, retired_state_url=snapshot)
        finally:
            cat.release_lock(index, holder)
    finally:
        cat.close()
    log.info("index %r rolled back: version %d is live again (was %d)", index, to, current)
    return {"version": to, "previous": current, "stores": sorted(rows)}
