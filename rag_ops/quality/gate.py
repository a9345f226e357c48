"""The gate itself: validate one batch's frames with the three suites and decide what may be
upserted (:func:`check_quality`), with messages that name the check and the observed value."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag_ops.quality.context import _GX_LOCK, SUITE_PREFIX, _Gx, _docs_lock, _gx
from rag_ops.quality import context as _context
from rag_ops.quality.frames import _blank_to_none, _chunks_frame, _documents_frame, _embeddings_frame
from rag_ops.quality.types import SUITES, ExpectationOutcome, GateResult, Thresholds

log = logging.getLogger("rag_ops.quality")


# ---------------------------------------------------------------------------- messages
def _plain(value: Any) -> Any:
    """JSON-friendly python value (numpy scalars, NaN -> None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return round(value, 6)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _text(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _bound(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # GX hands suite parameters back as floats: 1.0 -> 1
    return _text(value)


def _expected(etype: str, kwargs: dict) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if "value_set" in kwargs:
        vs = _plain(list(kwargs["value_set"] or []))
        return _bound(vs[0]) if len(vs) == 1 else f"one of {_text(vs)}"
    if etype == "expect_column_values_to_not_be_null":
        return "not null"
    if etype == "expect_column_values_to_be_unique":
        return "unique"
    if lo is not None and hi is not None:
        return f"between {_bound(lo)} and {_bound(hi)}"
    if lo is not None:
        return f">= {_bound(lo)}"
    if hi is not None:
        return f"<= {_bound(hi)}"
    return "?"


def _observed(res: dict) -> tuple[str, Any]:
    """(outcome text, batch-message value) of one expectation result."""
    if "observed_value" in res:
        return _text(res["observed_value"]), _text(res["observed_value"])
    counts = res.get("partial_unexpected_counts") or []
    values = [c.get("value") for c in counts][:5]
    pct = res.get("unexpected_percent")
    outcome = {"unexpected_percent": _plain(pct) if pct is not None else 0.0, "unexpected_values": _plain(values)}
    shown = ", ".join(_text(v) for v in values) if values else f"{_plain(pct)}% unexpected"
    return json.dumps(outcome, default=str), shown


# ---------------------------------------------------------------------------- the gate
def check_quality(
    documents: list[dict],
    chunks: list[dict],
    vectors: np.ndarray,
    thresholds: Thresholds,
    *,
    run_id: str,
    docs_dir: Path | None = None,
    defer_docs: bool = False,
) -> GateResult:
    """Validate one batch with the three GX suites and decide what may be upserted.

    Args:
        documents: one dict per processed document: ``doc_id, uri, size, n_chars,
            printable_ratio, utf8_ok``.
        chunks: one dict per chunk: ``chunk_id, doc_id, source_uri, seq, text, tokens``; row i
            belongs to ``vectors[i]``.
        vectors: ``(len(chunks), dim)`` embeddings.
        thresholds: the bounds.
        run_id: names the GX run (Data Docs group their pages by it).
        docs_dir: when given, Data Docs are (re)built there and ``data_docs`` is its index.html.
        defer_docs: with ``docs_dir``, keep the results there but leave the pages to
            ``GateResult.build_docs`` (the CLI's gate process builds them while the stores are
            written).

    Returns:
        A :class:`GateResult`. Reasons and messages name the suite, expectation, column and
        observed value; never document text (it does not even reach GX).
    """
    t0 = time.perf_counter()
    gate = GateResult()
    params = thresholds.parameters()
    frames: dict[str, Any] = {}

    if documents:
        frames["documents"] = _documents_frame(documents)
    distinct_texts = 0
    if chunks:
        frames["chunks"], distinct_texts = _chunks_frame(chunks)
    vectors = np.asarray(vectors) if vectors is not None else np.zeros((0, 0), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(chunks):
        gate.batch_failures.append(
            f"embeddings: vectors of shape {tuple(vectors.shape)} do not match the {len(chunks)} chunk(s) "
            "(expected one row per chunk)"
        )
    elif chunks:
        frames["embeddings"], params["min_distinct_vectors"] = _embeddings_frame(vectors, chunks, distinct_texts)
    params.setdefault("min_distinct_vectors", 1)
    frame_seconds = time.perf_counter() - t0

    docs_path = Path(docs_dir).expanduser().absolute() if docs_dir is not None else None
    results: dict[str, Any] = {}
    if not frames and docs_path is not None and (docs_path / "index.html").exists():
        docs_path = None  # nothing to validate and the site exists: GX is not even imported
        gate.data_docs = str(Path(docs_dir).expanduser().absolute() / "index.html")
    if frames or docs_path is not None:
        with _GX_LOCK:
            fresh = _context._GX_STATE is None
            g = _gx()
            if fresh:  # start-up, reported apart from the checks
                gate.import_seconds = g.import_seconds
            run = g.RunIdentifier(run_name=run_id, run_time=dt.datetime.now(dt.timezone.utc))
            if docs_path is None:
                try:
                    for name, df in frames.items():
                        results[name] = _validate(g, name, df, params, run)
                finally:
                    g.forget_memory_results()
            else:
                _, store = g.site_for(docs_path)
                with _docs_lock(docs_path), g.results_store(store):
                    for name, df in frames.items():
                        results[name] = _validate(g, name, df, params, run)
                done = [(rid, SUITE_PREFIX + name) for name, (rid, _) in results.items()]
                gate.build_docs = functools.partial(g.build_docs, docs_path, done)
                if not defer_docs:  # with nothing validated, it still leaves an index to open
                    gate.build_docs()
                    gate.build_docs = None
                gate.data_docs = str(docs_path / "index.html")
    gx_seconds = time.perf_counter() - t0 - frame_seconds

    unattributed: list[str] = []
    for name in SUITES:
        if name in results:
            _read_results(name, results[name][1], gate, unattributed)
    gate.batch_failures.extend(unattributed)

    all_docs = {d for d in (_blank_to_none(x.get("doc_id")) for x in documents) if d is not None}
    all_docs |= {d for d in (_blank_to_none(c.get("doc_id")) for c in chunks) if d is not None}
    if all_docs:
        share = len(gate.quarantined) / len(all_docs)
        ok = share <= thresholds.max_failure_share
        observed = f"{round(share, 6)} ({len(gate.quarantined)} of {len(all_docs)} documents)"
        gate.outcomes.append(
            ExpectationOutcome("gate", "quarantined_document_share", None, ok, json.dumps(round(share, 6)), len(gate.quarantined))
        )
        if not ok:
            gate.batch_failures.append(
                f"gate: quarantined_document_share failed: observed {observed}, "
                f"expected <= {thresholds.max_failure_share} (max_failure_share)"
            )

    gate.seconds = round(time.perf_counter() - t0, 4)
    log.info(
        "quality %s: %d documents, %d chunks -> %d quarantined, %d batch failure(s) (frames %.2fs, GX %.2fs)",
        run_id, len(documents), len(chunks), len(gate.quarantined), len(gate.batch_failures), frame_seconds, gx_seconds,
    )
    for message in gate.batch_failures:
        log.warning("quality %s: %s", run_id, message)
    return gate


def _validate(g: _Gx, name: str, df, params: dict, run) -> tuple[Any, Any]:
    """(result id, suite result) of one suite on one frame."""
    result = g.checkpoint(name).run(batch_parameters={"dataframe": df}, expectation_parameters=params, run_id=run)
    ((result_id, suite_result),) = result.run_results.items()
    return result_id, suite_result


def _read_results(suite: str, suite_result: Any, gate: GateResult, unattributed: list[str]) -> None:
    for er in suite_result.results:
        cfg = er.expectation_config
        etype = cfg.type
        kwargs = dict(cfg.kwargs)
        column = kwargs.get("column")
        res = dict(er.result or {})
        level = (cfg.meta or {}).get("level", "batch")
        outcome_text, shown = _observed(res)
        exc = er.exception_info or {}
        raised = bool(exc.get("raised_exception")) if isinstance(exc, dict) else False
        gate.outcomes.append(
            ExpectationOutcome(
                suite=suite, expectation=etype, column=column, success=bool(er.success),
                observed_value=outcome_text, unexpected_count=int(res.get("unexpected_count") or 0),
            )
        )
        if er.success:
            continue
        head = f"{suite}: {etype}({column})"
        if raised:  # GX could not evaluate it: never let the batch through unchecked
            gate.batch_failures.append(f"{head} could not be evaluated: {str(exc.get('exception_message'))[:200]}")
            continue
        expected = _expected(etype, kwargs)
        if level != "row":
            gate.batch_failures.append(f"{head} failed: observed {shown}, expected {expected}")
            continue
        orphans = 0
        for item in res.get("unexpected_index_list") or []:
            doc_id = _blank_to_none(item.get("doc_id"))
            if doc_id is None:
                orphans += 1
                continue
            reason = f"{head} failed: observed {_text(item.get(column))}, expected {expected}"
            previous = gate.quarantined.get(doc_id)
            if previous is None:
                gate.quarantined[doc_id] = reason
            elif reason not in previous.split("; "):
                gate.quarantined[doc_id] = f"{previous}; {reason}"
        if orphans:
            unattributed.append(
                f"{head} failed on {orphans} row(s) with no doc_id to quarantine: expected {expected}"
            )

