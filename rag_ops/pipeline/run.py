"""The whole pipeline in one process (the CLI, the benchmark, a re-index build), with optional
low-priority helper processes that prepare batches ahead of the encoder and write extra stores."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from rag_ops.config import Settings
from rag_ops.errors import RagopsError, StoreError
from rag_ops.pipeline.helpers import (
    Helper, helper_event, helper_pool, init_gate, init_store_writer, peak_rss_mb, run_gate, start_helper,
)
from rag_ops.pipeline.plan import Plan, discover
from rag_ops.pipeline.process import PreparedBatch, embed_batch, merge_prepared, prepare_batch, process_batch
from rag_ops.pipeline.runtime import Runtime
from rag_ops.pipeline.write import build_quality_docs, commit_run, quality_gate, record_gate, upsert_store
from rag_ops.staging import staging_at

log = logging.getLogger(__name__)


# The model keeps both cores busy while it encodes, and any busy process at normal priority
# stalls it badly (measured here: torch's two threads wait for each other at every operation,
# 2.6x slower with one spinning competitor). A helper process at the lowest CPU priority (nice
# 19) did not slow the encode at all and still got ~9% of a core from the gaps between
# operations; and while this process reads and parses (single-threaded) the helper has the
# other core to itself. So: the helper prepares (read, parse, clean, chunk) the next unclaimed
# batch; this process embeds whatever batch is ready and, when none is, prepares the next
# unclaimed one itself. Batches are independent, so the order they are embedded in is free.
_WORKER_RT: Runtime | None = None


def _init_prepare_worker(settings: Settings, level: str) -> None:
    global _WORKER_RT
    import os

    start_helper(level)
    with contextlib.suppress(OSError):
        os.nice(19)
    _WORKER_RT = Runtime(settings)


def _prepare_in_worker(settings: Settings, batch_ref: str, start: int, stop: int) -> PreparedBatch:
    assert _WORKER_RT is not None, "prepare worker not initialised"
    return prepare_batch(settings, batch_ref, _WORKER_RT, start, stop)


PREPARE_SLICE = 16  # documents a helper or this process prepares at a time


def _process_batches(settings: Settings, batch_refs: list[str], rt: Runtime, helpers: int = 0) -> Counter:
    """Prepare and embed every batch, in order; low-priority helpers prepare slices ahead.
    Returns the batches' counts, summed.

    Work is shared in slices of :data:`PREPARE_SLICE` documents taken from the front of one
    queue: a helper always holds one slice; this process, when the batch it is to embed next
    still has unclaimed slices, prepares them itself (the helper works on in parallel), and
    otherwise waits for the helper's. With no ``helpers`` or a single batch, batches are processed
    one after the other in this process.
    """
    total = len(batch_refs)
    counts: Counter = Counter()
    if helpers < 1 or total < 2:
        for n, ref in enumerate(batch_refs, 1):
            log.info("processing batch %d/%d", n, total)
            counts.update(process_batch(settings, ref, runtime=rt)["counts"])
        return counts
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, wait

    units: deque[tuple[int, int, int]] = deque()  # (batch index, start, stop), unclaimed
    expected: list[int] = []
    for b, ref in enumerate(batch_refs):
        n_docs = len(staging_at(ref, settings).read_json(ref)["docs"])
        starts = list(range(0, n_docs, PREPARE_SLICE)) or [0]
        expected.append(len(starts))
        units.extend((b, s, s + PREPARE_SLICE) for s in starts)
    parts: dict[int, dict[int, PreparedBatch]] = {b: {} for b in range(total)}
    with helper_pool(helpers, _init_prepare_worker, settings) as pool:
        in_flight: dict = {}

        def collect_and_feed() -> None:
            for fut in [f for f in in_flight if f.done()]:
                b, start, _ = in_flight.pop(fut)
                parts[b][start] = fut.result()  # a SourceError from a helper is raised here
            while units and len(in_flight) < helpers:
                unit = units.popleft()
                in_flight[pool.submit(_prepare_in_worker, settings, batch_refs[unit[0]], unit[1], unit[2])] = unit

        for b, ref in enumerate(batch_refs):
            collect_and_feed()
            while len(parts[b]) < expected[b]:
                if units and units[0][0] == b:
                    _, start, stop = units.popleft()
                    parts[b][start] = prepare_batch(settings, ref, rt, start, stop)
                else:
                    wait(list(in_flight), return_when=FIRST_COMPLETED)
                collect_and_feed()
            prepared = merge_prepared([parts[b][k] for k in sorted(parts[b])])
            del parts[b]
            log.info("processing batch %d/%d", b + 1, total)
            counts.update(embed_batch(prepared, rt)["counts"])
    return counts


# ---------------------------------------------------------------------------- all in one
def ingest(
    settings: Settings,
    *,
    source: str | None = None,
    full_sync: bool = False,
    stores: Iterable[str] | None = None,
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
    retry_quarantined: bool = False,
    runtime: Runtime | None = None,
    helper_processes: bool = False,
    target: Any = None,
) -> dict:
    """Run the whole pipeline in this process (what the CLI does). Returns the run report.

    ``target`` (a :class:`~rag_ops.versions.WriteTarget`) is where it writes: default the live
    versions, embedded with their own model and chunker; a re-index passes the version it builds.

    With ``helper_processes`` (the CLI and the benchmark set it) the run may start helper
    processes: ``settings.prepare_workers`` that parse batches ahead of the encoder, one that
    runs the quality gate and one per store that writes it (see :func:`_run_plan`). They are
    started with ``spawn``, which imports the caller's main module again: only a main module
    guarded by ``if __name__ == "__main__":`` (or run with ``python -m``) may ask for them.
    """
    t0 = time.perf_counter()
    own = runtime is None
    from rag_ops.versions import apply_overrides, live_target

    if target is None:
        target = live_target(settings, stores, runtime.catalog if runtime is not None else None)
    settings = apply_overrides(settings, target.overrides)  # embed with the written version's model
    rt = runtime or Runtime(settings, target=target.as_dict())
    startup = time.perf_counter() - t0  # the live versions looked up, the catalog opened
    try:
        plan = discover(
            settings, source=source, full_sync=full_sync, since=since, until=until, stores=stores,
            run_id=run_id, retry_quarantined=retry_quarantined, runtime=rt, target=target,
        )
        try:
            report = _run_plan(settings, plan, rt, t0, helper_processes)
            report["seconds"]["startup"] = round(report["seconds"].get("startup", 0.0) + startup, 3)
            return report
        except RagopsError as exc:
            rt.catalog.finish_run(plan.run_id, {"error": f"{type(exc).__name__}: {exc}"}, status="failed")
            raise
    finally:
        if own:
            rt.close()


def _run_plan(settings: Settings, plan: Plan, rt: Runtime, t0: float, helper_processes: bool = False) -> dict:
    """Process, gate, write and commit a discovered plan in this process (and its helpers)."""
    # With helper processes allowed and documents to process, the gate and every store's writes
    # each get a process of their own, started now: their libraries are imported while this
    # process imports its parsers, parses and encodes, and a small edit pays these imports side
    # by side rather than one after another. Great Expectations' is the longest (2-3 s): the
    # writers wait for it to end (or for the encoding to, whichever comes first) before they
    # import their store's client, which otherwise took half the spare core from it. Stores are
    # independent and were measured to serialise in threads of one process (4,000 chunks:
    # Chroma 3.1 s and Milvus 1.9 s alone, 4.9 s together in threads, 3.1 s from two
    # processes). And this process then holds no more than one batch at a time: the gate's
    # frames of the whole run and an embedded store's index live in their processes.
    helpers = helper_processes and bool(plan.batches)
    go = helper_event() if helpers else None
    gate_helper = Helper(init_gate, settings, go) if helpers else None
    writers = {s: Helper(init_store_writer, settings, s, go) for s in plan.stores if s not in rt._stores} if helpers else {}
    if helpers:
        log.info("helper processes started: the quality gate's%s", "".join(f", {s}'s writes" for s in writers))
    abandon = False
    try:
        counts = _process_batches(settings, plan.batches, rt, helpers=settings.prepare_workers if helper_processes else 0)
        to_write = sum(counts[k] for k in ("new", "changed", "restored"))
        if not to_write:  # nothing new to check: neither GX nor a store client is needed
            if gate_helper is not None:
                gate_helper.close(abandon=True)
                gate_helper = None
            if not plan.deleted:
                for helper in writers.values():
                    helper.close(abandon=True)
                writers = {}
        if go is not None:
            go.set()  # the encoding is over: the writers import now if GX has not let them yet
        t_gate = time.perf_counter()
        docs = None  # the gate's helper builds the Data Docs pages while the stores are written
        if gate_helper is not None:
            checks = _helper_result(gate_helper.submit(run_gate, settings, plan.ref), "quality gate", RagopsError)
            docs = gate_helper.submit(build_quality_docs)
            gate = record_gate(checks, rt)  # the catalog is this process's
        else:
            gate = quality_gate(settings, plan.ref, runtime=rt)
        gate_seconds = time.perf_counter() - t_gate
        t_write = time.perf_counter()
        remote = {name: helper.submit(upsert_store, settings, name, plan.ref) for name, helper in writers.items()}
        local = [s for s in plan.stores if s not in remote]
        with ThreadPoolExecutor(max_workers=max(1, len(local)), thread_name_prefix="ragops-upsert") as pool:
            futures = [pool.submit(upsert_store, settings, name, plan.ref, rt) for name in local]
            results = {name: f.result() for name, f in zip(local, futures)}
        for name, fut in remote.items():
            results[name] = _helper_result(fut, f"{name} store writes", StoreError)  # the writer's StoreError too
        store_results = [results[name] for name in plan.stores]
        t_docs = time.perf_counter()
        if docs is not None:
            _helper_result(docs, "Data Docs build", RagopsError)
        docs_wait = time.perf_counter() - t_docs  # what the pages took beyond the writes
    except BaseException:
        abandon = True
        raise
    finally:
        for helper in [gate_helper, *writers.values()]:
            if helper is not None:
                helper.close(abandon=abandon)
    write_seconds = time.perf_counter() - t_write - docs_wait  # with the writers' exit, which it waits for
    report = commit_run(settings, plan.ref, store_results, runtime=rt)
    seconds = report["seconds"]
    # this process's wait for the gate: its checks, and the rest is its library's import (here,
    # or still under way in the helper process when the encoding ended first)
    seconds["quality"] = round(min(gate["seconds"], gate_seconds), 3)
    seconds["imports"] = round(seconds.get("imports", 0.0) + gate_seconds - seconds["quality"], 3)
    seconds["quality"] = round(seconds["quality"] + docs_wait, 3)  # the Data Docs build not hidden by the writes
    # the stores were written side by side: the stage is the wall time of the writes, and each
    # store's own time is reported beside it (summed, they would count the overlap twice)
    report["upsert_seconds"] = {s: seconds.pop(f"upsert_{s}", 0.0) for s in plan.stores}
    seconds["upsert"] = round(write_seconds, 3)
    report["data_docs"] = gate["data_docs"]
    # each process's own high-water mark: this one's, the gate's and each store writer's (the
    # same figure where they ran here); an embedded store's writer holds that store's index
    report["peak_rss_mb"] = {
        "ingest": peak_rss_mb(), "quality": gate.get("peak_rss_mb"),
        **{r["store"]: r.get("peak_rss_mb") for r in store_results},
    }
    seconds["total"] = round(time.perf_counter() - t0, 3)
    return report


def _helper_result(fut, job: str, error: type[RagopsError]):
    """The result of a helper's job; a helper that died is an ``error`` naming the job."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return fut.result()
    except BrokenProcessPool as exc:
        raise error(
            f"the process running the {job} died before it finished (nothing is recorded; the next run does it again)"
        ) from exc
