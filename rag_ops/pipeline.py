"""The ingest pipeline: discover -> process batches -> write each store (upsert, prune) -> commit.

Each step is a plain function taking :class:`~rag_ops.config.Settings` and small references
(paths of staged files), so Airflow can run them as separate tasks in separate processes and the
CLI can run them in one. Order and risk, as in DESIGN.md:

* ``discover`` lists the source and compares size/mtime/ETag with the catalog; documents whose
  metadata did not move are skipped without being read. It writes a plan and batch files under
  ``data_dir/staging/<run>/``.
* ``process_batch`` reads, hashes (same bytes as last time: skipped before parsing), parses,
  cleans, chunks and embeds one batch, and stages chunks + vectors. Bad documents are recorded
  with their reason; the batch goes on.
* ``upsert_store`` writes the staged chunks into one store: **new chunks first, then** the
  deletion of the document's chunks that are no longer produced, so a failed write never loses
  the previous version; last it prunes documents absent from a full listing. All writes to one
  store happen in this one call, so an embedded store (one writer at a time) has one writer.
* ``commit_run`` writes the catalog **only after every store accepted the chunks**: a crash
  anywhere before leaves work to redo (idempotent, by content-derived ids), never a record of
  work that did not happen.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import re
import shutil
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from rag_ops.config import Settings
from rag_ops.errors import DocumentChanged, DocumentError, DocumentGone, DocumentTooLarge, RagopsError
from rag_ops.parse import extension_of
from rag_ops.identity import content_hash, doc_id_for
from rag_ops.sources import SourceDocument, open_source

log = logging.getLogger(__name__)

STAGING_KEEP_DAYS = 7
MAX_BATCHES = 1000  # below Airflow's default max_map_length of 1024


# ---------------------------------------------------------------------------- runtime
class Runtime:
    """Heavy resources (catalog, tokenizer, model, cache, store clients) opened once per process."""

    def __init__(self, settings: Settings, concurrent_encoders: int = 1, target: dict | None = None):
        self.settings = settings
        self.concurrent_encoders = concurrent_encoders  # processes encoding at once (threads share the cores)
        self.target = target  # WriteTarget.as_dict(): the physical collections written (None: resolve live)
        self._catalog = None
        self._chunker = None
        self._embedder = None
        self._cache = None
        self._stores: dict[str, Any] = {}

    @property
    def catalog(self):
        if self._catalog is None:
            from rag_ops.catalog import Catalog

            self._catalog = Catalog(self.settings.catalog_db_url)
            self._catalog.migrate()
        return self._catalog

    @property
    def chunker(self):
        if self._chunker is None:
            from rag_ops.chunk import make_chunker

            self._chunker = make_chunker(self.settings)
        return self._chunker

    @property
    def embedder(self):
        if self._embedder is None:
            from rag_ops.embed import make_embedder

            self._embedder = make_embedder(self.settings, self.concurrent_encoders)
        return self._embedder

    @property
    def cache(self):
        if self._cache is None:
            from rag_ops.embed import EmbeddingCache

            self._cache = EmbeddingCache(self.settings.cache_path)
        return self._cache

    def store(self, name: str):
        if name not in self._stores:
            from rag_ops.stores import open_store

            t = self.target or {}
            collection = (t.get("collections") or {}).get(name)
            alias = t["index_name"] if collection and t.get("live") else None
            self._stores[name] = open_store(name, self.settings, collection=collection, alias=alias)
        return self._stores[name]

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """What one run will do; saved as ``plan.json`` in the run's staging folder."""

    run_id: str
    run_dir: str
    source: str
    full_sync: bool
    stores: list[str]
    since: float | None
    until: float | None
    batches: list[str]  # batch file paths
    deleted: list[str]  # doc ids to prune
    counts: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    target: dict | None = None  # rag_ops.versions.WriteTarget.as_dict(): collections and build settings

    @property
    def ref(self) -> str:
        return str(Path(self.run_dir) / "plan.json")

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def save(self) -> str:
        Path(self.run_dir).mkdir(parents=True, exist_ok=True)
        _write_json(Path(self.ref), self.as_dict())
        return self.ref

    @classmethod
    def load(cls, ref: str) -> "Plan":
        path = Path(ref)
        if path.is_dir():
            path = path / "plan.json"
        return cls(**json.loads(path.read_text()))

    def settings_for(self, settings: Settings) -> Settings:
        """``settings`` with the model and chunker of the version(s) this run writes."""
        from rag_ops.versions import apply_overrides

        return apply_overrides(settings, (self.target or {}).get("overrides"))


def _safe_run_dir_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)[:120]


def plan_ref_for(settings: Settings, run_id: str) -> str:
    """Where ``discover`` saves the plan of a run (so later tasks need only the run id)."""
    return str(settings.staging_dir / _safe_run_dir_name(run_id) / "plan.json")


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

        run_dir = settings.staging_dir / _safe_run_dir_name(run_id)
        if run_dir.exists():  # a retried discover starts clean
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        # Airflow caps a mapped task at max_map_length (1024) expansions: grow batches instead
        size = max(settings.batch_size, math.ceil(len(entries) / MAX_BATCHES))
        if size > settings.batch_size:
            log.info("discover: %d documents: batch size raised to %d to stay within %d batches", len(entries), size, MAX_BATCHES)
        batches = []
        for n, i in enumerate(range(0, len(entries), size)):
            path = run_dir / f"batch-{n:05d}.json"
            _write_json(
                path, {"source": source, "stores": stores, "overrides": target.overrides, "docs": entries[i : i + size]}
            )
            batches.append(str(path))
        plan = Plan(
            run_id=run_id, run_dir=str(run_dir), source=source, full_sync=full_sync, stores=stores,
            since=lo, until=hi, batches=batches, deleted=deleted, counts=dict(counts),
            seconds={"discover": round(time.perf_counter() - t0, 4)}, target=target.as_dict(),
        )
        plan.save()
        catalog.start_run(run_id, source, full_sync)
        _clean_old_staging(settings.staging_dir, keep=run_dir)
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


def _clean_old_staging(staging: Path, keep: Path) -> None:
    cutoff = time.time() - STAGING_KEEP_DAYS * 86400
    for p in staging.iterdir():
        if p != keep and p.is_dir() and p.stat().st_mtime < cutoff:
            shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------------- process
def _result_paths(batch_ref: str) -> tuple[Path, Path]:
    base = Path(batch_ref)
    stem = base.name[: -len(".json")]
    return base.with_name(stem + ".result.json"), base.with_name(stem + ".vectors.npy")


def process_batch(
    settings: Settings, batch_ref: str, runtime: Runtime | None = None, concurrent_encoders: int = 1
) -> dict:
    """Read, parse, clean, chunk and embed one staged batch.

    ``concurrent_encoders``: how many such calls run at once on this machine (Airflow's mapped
    tasks); the model's threads are then set to share the cores (see ``embed.make_embedder``).

    Returns:
        ``{"batch": ref, "result": path, "counts": {...}, "seconds": {...}}`` (small: XCom-safe).

    Raises:
        SourceError: the source could not be read for a reason a retry may fix.
        EmbeddingError: the model failed.
    """
    own = runtime is None
    if own:  # embed with the model and chunker of the version written (recorded in the batch)
        from rag_ops.versions import apply_overrides

        settings = apply_overrides(settings, json.loads(Path(batch_ref).read_text()).get("overrides"))
    rt = runtime or Runtime(settings, concurrent_encoders)
    try:
        return embed_batch(prepare_batch(settings, batch_ref, rt), rt)
    finally:
        if own:
            rt.close()


@dataclass
class PreparedBatch:
    """A batch read, parsed, cleaned and chunked, waiting for its embeddings."""

    batch_ref: str
    n_docs: int
    outcomes: list[dict]
    chunk_rows: list[dict]
    counts: Counter
    seconds: Counter


def prepare_batch(
    settings: Settings, batch_ref: str, rt: Runtime, start: int = 0, stop: int | None = None
) -> PreparedBatch:
    """The CPU-bound text half of :func:`process_batch` (everything but the model).

    ``start``/``stop`` select a slice of the batch's documents (see :func:`merge_prepared`).
    """
    batch = json.loads(Path(batch_ref).read_text())
    src = open_source(batch["source"], settings)
    docs = batch["docs"][start:stop]
    prepared = PreparedBatch(batch_ref, len(docs), [], [], Counter(), Counter())
    ahead: dict[str, bytes | BaseException] = {}
    for i, entry in enumerate(docs):
        if entry["doc_id"] not in ahead:
            ahead = _read_ahead(docs[i:], src, settings, prepared.seconds)
        outcome, chunks = _prepare_document(
            entry, src, batch["stores"], settings, rt, prepared.seconds, preread=ahead.pop(entry["doc_id"], None)
        )
        prepared.counts[outcome["outcome"]] += 1
        if chunks:
            first = len(prepared.chunk_rows)
            prepared.chunk_rows.extend(c.as_dict() for c in chunks)
            outcome["chunk_rows"] = [first, len(prepared.chunk_rows)]
        prepared.outcomes.append(outcome)
    return prepared


READ_AHEAD_DOCS = 32  # plain-text documents read ahead so their paragraphs are classified in one batch
READ_AHEAD_BYTES = 8 * 1024 * 1024


def _read_ahead(docs: list[dict], src, settings: Settings, secs: Counter) -> dict[str, bytes | BaseException]:
    """Read the plain-text documents at the front of ``docs`` (up to :data:`READ_AHEAD_DOCS` and
    :data:`READ_AHEAD_BYTES`) and prime the parser's classifier with their paragraphs.

    unstructured classifies each paragraph of a text file with spaCy, one call per paragraph;
    one batched pass over the paragraphs of many documents gives the same results in about a
    third of the time (:func:`rag_ops.parse.prime_classifier`). Returns doc id -> the bytes read,
    or the exception reading raised (re-raised at that document's own read stage, so errors are
    handled exactly as without read-ahead). Stops at the first document that is not plain text.
    """
    from rag_ops.parse import TEXT_EXTENSIONS, classifier_texts, prime_classifier

    out: dict[str, bytes | BaseException] = {}
    texts: list[str] = []
    total = 0
    for entry in docs[:READ_AHEAD_DOCS]:
        if extension_of(entry["uri"]) not in TEXT_EXTENSIONS or entry.get("refused"):
            break
        size = entry.get("size") or 0
        if out and total + size > READ_AHEAD_BYTES:
            break
        doc = _source_doc(entry)
        with _timed(secs, "read"):
            try:
                data = src.read(doc, settings.max_document_bytes)
            except Exception as exc:  # noqa: BLE001 - kept and raised at the document's read stage
                out[entry["doc_id"]] = exc
                continue
        out[entry["doc_id"]] = data
        total += len(data)
        if len(data) <= 4 * settings.max_document_chars and content_hash(data) not in (entry["prev_hash"], entry.get("prev_error_hash")):
            texts.extend(classifier_texts(data, entry["uri"], settings.max_document_chars))
    if texts:
        with _timed(secs, "parse"):
            prime_classifier(texts)
    return out


def _source_doc(entry: dict) -> SourceDocument:
    """The listing of a batch entry, as the source reads it."""
    return SourceDocument(**{k: entry[k] for k in ("uri", "size", "modified", "etag", "refused")})


def merge_prepared(parts: list[PreparedBatch]) -> PreparedBatch:
    """Consecutive slices of one batch, prepared separately, as one prepared batch."""
    merged = PreparedBatch(parts[0].batch_ref, 0, [], [], Counter(), Counter())
    for part in parts:
        offset = len(merged.chunk_rows)
        merged.n_docs += part.n_docs
        merged.chunk_rows.extend(part.chunk_rows)
        for outcome in part.outcomes:
            if "chunk_rows" in outcome:
                lo, hi = outcome["chunk_rows"]
                outcome = {**outcome, "chunk_rows": [lo + offset, hi + offset]}
            merged.outcomes.append(outcome)
        merged.counts.update(part.counts)
        merged.seconds.update(part.seconds)
    return merged


@contextlib.contextmanager
def _timed(seconds: Counter, stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] += time.perf_counter() - t0


def _prepare_document(
    entry: dict, src, stores: list[str], settings: Settings, rt: Runtime, secs: Counter,
    preread: bytes | BaseException | None = None,
) -> tuple[dict, list]:
    """One document: its outcome (new, changed, restored, unchanged, failed) and its chunks.

    A document's own problems are recorded as a ``failed`` outcome with the stage and a reason;
    a failing source (``SourceError``) propagates so the task can retry. ``preread``: what
    :func:`_read_ahead` got for it (its bytes, or the exception reading raised).
    """
    from rag_ops.clean import clean_blocks
    from rag_ops.parse import parse_document

    doc = _source_doc(entry)
    base = {
        "doc_id": entry["doc_id"], "uri": doc.uri, "size": doc.size, "modified": doc.modified,
        "etag": doc.etag, "prev_stores": entry["prev_stores"],
    }
    stage = "list"
    try:
        if doc.refused:
            raise DocumentError(doc.refused)
        stage = "read"
        with _timed(secs, "read"):
            if isinstance(preread, BaseException):
                raise preread
            data = preread if preread is not None else src.read(doc, settings.max_document_bytes)
            base.update(size=len(data), content_hash=content_hash(data))
        if (
            entry["prev_status"] == "failed"
            and base["content_hash"] == entry["prev_error_hash"]
            and not entry.get("retry")
        ):
            return {**base, "outcome": "unchanged"}, []  # still the bytes that failed: quarantined
        same_content = base["content_hash"] == entry["prev_hash"] and entry["prev_status"] == "indexed"
        if same_content and set(stores) <= set(entry["prev_stores"]):
            return {**base, "outcome": "unchanged"}, []  # touched: mtime moved, bytes did not
        stage = "parse"
        if extension_of(doc.uri) in TEXT_LIKE and len(data) > 4 * settings.max_document_chars:
            # a text file this large cannot fit max_document_chars (UTF-8 takes <= 4 bytes a
            # character): refuse it before decoding and partitioning it
            raise DocumentTooLarge(
                f"text file is {len(data):,} bytes, more than max_document_chars "
                f"({settings.max_document_chars:,}) can hold; refused before parsing"
            )
        with _timed(secs, "parse"):
            blocks = parse_document(
                data, doc.uri, max_pdf_pages=settings.max_pdf_pages, languages=settings.languages,
                max_chars=settings.max_document_chars,
            )
        del data
        stage = "clean"
        with _timed(secs, "clean"):
            blocks = clean_blocks(blocks)
        if not blocks:
            raise DocumentError("no text left after cleaning (only page numbers, headers or symbols)")
        base["stats"] = _text_stats(blocks)
        n_chars = base["stats"]["n_chars"]
        if n_chars > settings.max_document_chars:
            raise DocumentTooLarge(
                f"extracted text is {n_chars:,} characters, over the max_document_chars cap of "
                f"{settings.max_document_chars:,}"
            )
        if n_chars >= 2000 and base["stats"]["spaces"] * 200 < n_chars:
            raise DocumentError(
                f"text has almost no word boundaries ({n_chars:,} characters, {base['stats']['spaces']:,} "
                "spaces): it looks like encoded or binary data, not prose"
            )
        stage = "chunk"
        with _timed(secs, "chunk"):
            chunks = rt.chunker.chunk_document(entry["doc_id"], doc.uri, blocks)
        if not chunks:
            raise DocumentError("no chunks were produced")
    except (DocumentGone, DocumentChanged) as exc:
        # quarantined like any failure: a changed file is read again next run (its listing moved),
        # a deleted one leaves the catalog with the next full sync
        log.warning("skipped %s (%s): %s", doc.uri, stage, exc)
        return {**base, "outcome": "failed", "error_stage": stage, "error": str(exc)}, []
    except DocumentError as exc:
        log.warning("failed %s at %s: %s", doc.uri, stage, exc)
        return {**base, "outcome": "failed", "error_stage": stage, "error": str(exc)}, []
    if same_content:
        outcome = "restored"  # same bytes, but a requested store lacks them
    elif entry["prev_status"] in ("indexed", "failed"):
        outcome = "changed"
    else:
        outcome = "new"
    return {**base, "outcome": outcome}, chunks


TEXT_LIKE = {".txt", ".text", ".log", ".rst", ".md", ".markdown", ".html", ".htm", ".xhtml"}


def _text_stats(blocks: list) -> dict:
    """What the documents quality suite checks, computed once from the cleaned text."""
    from rag_ops.parse import printable_share

    text = "\n\n".join(b.text for b in blocks)
    try:
        text.encode("utf-8")
        utf8_ok = True
    except UnicodeEncodeError:  # lone surrogates from a bad decode
        utf8_ok = False
    return {
        "n_chars": len(text),
        "spaces": sum(1 for ch in text if ch.isspace()),
        "printable_ratio": round(printable_share(text), 4),
        "utf8_ok": utf8_ok,
    }


def embed_batch(prepared: PreparedBatch, rt: Runtime) -> dict:
    """The model half of :func:`process_batch`: embed (cache first) and stage the result."""
    counts, secs, chunk_rows = prepared.counts, prepared.seconds, prepared.chunk_rows
    vectors = np.zeros((0, 0), dtype=np.float32)
    if chunk_rows:
        with _timed(secs, "embed"):
            res = rt.embedder.embed([c["text"] for c in chunk_rows], [c["text_hash"] for c in chunk_rows], rt.cache)
        vectors = res.vectors
        if res.encoded:
            from rag_ops.embed import release_freed_memory

            release_freed_memory()
        counts["encoded"] += res.encoded
        counts["cache_hits"] += res.cache_hits
        # what the model really read: tokens of each distinct text it encoded (for cost planning)
        tokens_by_text = {
            c["text_hash"]: int(c.get("tokens") or 0) for c in chunk_rows if c["text_hash"] in res.encoded_hashes
        }
        counts["tokens_encoded"] += sum(tokens_by_text.values())
        secs["encode_model"] += res.encode_seconds
    counts["chunks"] = len(chunk_rows)

    result_path, vectors_path = _result_paths(prepared.batch_ref)
    np.save(vectors_path, vectors)
    out = {
        "batch": prepared.batch_ref,
        "result": str(result_path),
        "counts": dict(counts),
        "seconds": {k: round(v, 4) for k, v in secs.items()},
    }
    _write_json(result_path, {**out, "docs": prepared.outcomes, "chunks": chunk_rows, "vectors": str(vectors_path)})
    log.info(
        "batch %s: %d docs -> %d new, %d changed, %d unchanged, %d failed; %d chunks, %d encoded, %d from cache (%.1fs)",
        Path(prepared.batch_ref).name, prepared.n_docs, counts["new"], counts["changed"], counts["unchanged"],
        counts["failed"], len(chunk_rows), counts["encoded"], counts["cache_hits"],
        sum(v for k, v in secs.items() if k != "encode_model"),
    )
    return out


def _load_result(batch_ref: str) -> tuple[dict, np.ndarray]:
    result_path, _ = _result_paths(batch_ref)
    if not result_path.exists():
        raise RagopsError(f"batch {Path(batch_ref).name} has no staged result: was process_batch run for it?")
    result = json.loads(result_path.read_text())
    return result, np.load(result["vectors"])


# ---------------------------------------------------------------------------- quality
def quality_thresholds(settings: Settings):
    """The gate's thresholds, from the settings and the model's declared dimension."""
    from rag_ops.embed import model_dimension
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


def _gate_path(plan: Plan) -> Path:
    return Path(plan.run_dir) / "quality.json"


def quality_gate(settings: Settings, plan_ref: str, runtime: Runtime | None = None) -> dict:
    """Run the Great Expectations suites over everything this run is about to upsert.

    Row-level failures quarantine the offending documents (they are not upserted; the rest go
    on); batch-level failures (wrong dimension, too many duplicates, too large a failure share)
    stop the run here, before any store is written. Results go to the catalog
    (``quality_results``) and to a Data Docs site under ``<data_dir>/quality/data_docs``.

    Returns:
        ``{"checked", "quarantined", "data_docs", "seconds"}``.

    Raises:
        QualityGateError: a batch-level expectation failed (message names it and the observed value).
    """
    from rag_ops import quality

    own = runtime is None
    rt = runtime or Runtime(settings)
    t0 = time.perf_counter()
    try:
        plan = Plan.load(plan_ref)
        documents, chunk_rows, vector_parts = [], [], []
        for batch_ref in plan.batches:
            result, vectors = _load_result(batch_ref)
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
            run_id=plan.run_id, docs_dir=settings.data_dir / "quality" / "data_docs",
        )
        outcomes = [dict(o.__dict__) for o in gate.outcomes]
        _write_json(
            _gate_path(plan),
            {"quarantined": gate.quarantined, "batch_failures": gate.batch_failures, "data_docs": gate.data_docs},
        )
        rt.catalog.write_quality_results(plan.run_id, outcomes)
        failed = sum(1 for o in outcomes if not o["success"])
        log.info(
            "quality: %d documents, %d chunks checked; %d expectations failed; %d documents quarantined; "
            "Data Docs: %s", len(documents), len(chunk_rows), failed, len(gate.quarantined), gate.data_docs,
        )
        for doc_id, reason in gate.quarantined.items():
            log.warning("quality: quarantined %s: %s", next(d["uri"] for d in documents if d["doc_id"] == doc_id), reason)
        quality.enforce(gate)
        return {
            "checked": len(documents), "quarantined": len(gate.quarantined), "data_docs": gate.data_docs,
            "seconds": round(time.perf_counter() - t0, 4),
        }
    finally:
        if own:
            rt.close()


def _quarantined_by_gate(plan: Plan) -> dict[str, str]:
    path = _gate_path(plan)
    if not path.exists():
        return {}
    gate = json.loads(path.read_text())
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
    plan = Plan.load(plan_ref)
    rt = runtime or Runtime(plan.settings_for(settings), target=plan.target)
    t0 = time.perf_counter()
    upserted = removed = 0
    stack = contextlib.ExitStack()
    from rag_ops.stores import embedded_write_lock

    try:
        quarantined = _quarantined_by_gate(plan)
        # one writer per embedded store across processes (ingest tasks, a re-index, the CLI)
        stack.enter_context(embedded_write_lock(store_name, settings))
        store = rt.store(store_name)
        for batch_ref in plan.batches:
            result, vectors = _load_result(batch_ref)
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
            "seconds": round(time.perf_counter() - t0, 4),
        }
    finally:
        if own:
            rt.close()
        stack.close()


# ---------------------------------------------------------------------------- commit
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
        plan = Plan.load(plan_ref)
        quarantined = _quarantined_by_gate(plan)
        indexed, failed, touched = [], [], []
        counts: Counter[str] = Counter()
        seconds: Counter[str] = Counter(plan.seconds)
        failures: dict[str, str] = {}
        for batch_ref in plan.batches:
            result, _ = _load_result(batch_ref)
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
                    indexed.append({**d, "chunks": result["chunks"][lo:hi], "stores": prev_stores | set(plan.stores)})
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
            "upserted": upserted,
            "removed": removed,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "failures": failures,
        }
        rt.catalog.finish_run(plan.run_id, report)
        if not keep_staging:
            shutil.rmtree(plan.run_dir, ignore_errors=True)
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


# ---------------------------------------------------------------------------- prepare ahead
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

    with contextlib.suppress(OSError):
        os.nice(19)
    from rag_ops.logs import setup_logging

    setup_logging(level)
    _WORKER_RT = Runtime(settings)


def _prepare_in_worker(settings: Settings, batch_ref: str, start: int, stop: int) -> PreparedBatch:
    assert _WORKER_RT is not None, "prepare worker not initialised"
    return prepare_batch(settings, batch_ref, _WORKER_RT, start, stop)


PREPARE_SLICE = 16  # documents a helper or this process prepares at a time


def _process_batches(settings: Settings, batch_refs: list[str], rt: Runtime, helpers: int = 0) -> None:
    """Prepare and embed every batch, in order; low-priority helpers prepare slices ahead.

    Work is shared in slices of :data:`PREPARE_SLICE` documents taken from the front of one
    queue: a helper always holds one slice; this process, when the batch it is to embed next
    still has unclaimed slices, prepares them itself (the helper works on in parallel), and
    otherwise waits for the helper's. With no ``helpers`` or a single batch, batches are processed
    one after the other in this process.
    """
    total = len(batch_refs)
    if helpers < 1 or total < 2:
        for n, ref in enumerate(batch_refs, 1):
            log.info("processing batch %d/%d", n, total)
            process_batch(settings, ref, runtime=rt)
        return
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, wait

    units: deque[tuple[int, int, int]] = deque()  # (batch index, start, stop), unclaimed
    expected: list[int] = []
    for b, ref in enumerate(batch_refs):
        n_docs = len(json.loads(Path(ref).read_text())["docs"])
        starts = list(range(0, n_docs, PREPARE_SLICE)) or [0]
        expected.append(len(starts))
        units.extend((b, s, s + PREPARE_SLICE) for s in starts)
    parts: dict[int, dict[int, PreparedBatch]] = {b: {} for b in range(total)}
    with _helper_pool(helpers, _init_prepare_worker, settings) as pool:
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
            embed_batch(prepared, rt)


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
    processes: ``settings.prepare_workers`` that parse batches ahead of the encoder, and one
    process per store after the first that writes that store while this process writes the
    first. They are started with ``spawn``, which imports the caller's main module again: only
    a main module guarded by ``if __name__ == "__main__":`` (or run with ``python -m``) may ask
    for them.
    """
    t0 = time.perf_counter()
    own = runtime is None
    from rag_ops.versions import apply_overrides, live_target

    if target is None:
        target = live_target(settings, stores, runtime.catalog if runtime is not None else None)
    settings = apply_overrides(settings, target.overrides)  # embed with the written version's model
    rt = runtime or Runtime(settings, target=target.as_dict())
    try:
        plan = discover(
            settings, source=source, full_sync=full_sync, since=since, until=until, stores=stores,
            run_id=run_id, retry_quarantined=retry_quarantined, runtime=rt, target=target,
        )
        try:
            return _run_plan(settings, plan, rt, t0, helper_processes)
        except RagopsError as exc:
            rt.catalog.finish_run(plan.run_id, {"error": f"{type(exc).__name__}: {exc}"}, status="failed")
            raise
    finally:
        if own:
            rt.close()


def _run_plan(settings: Settings, plan: Plan, rt: Runtime, t0: float, helper_processes: bool = False) -> dict:
    """Process, gate, write and commit a discovered plan in this process (and its helpers)."""
    # Stores are independent: each is written by one writer, side by side. In threads of one
    # process they were measured to serialise (4,000 chunks: Chroma 3.1 s and Milvus 1.9 s alone,
    # 4.9 s together in threads, 3.1 s with Milvus written from a second process), so with helper
    # processes allowed every store after the first is written from a process of its own,
    # started (and its libraries imported) now, while the batches are prepared.
    offload = [s for s in plan.stores[1:] if s not in rt._stores] if helper_processes and plan.batches else []
    writers = None
    # a run of several batches encodes long enough to hide Great Expectations' import in the
    # writer process (see _init_gate_and_store_writer); a small one gates here
    gate_remote = bool(offload) and len(plan.batches) >= 2
    if offload:
        writers = _helper_pool(len(offload), _init_gate_and_store_writer if gate_remote else _init_store_writer, settings)
        writers.submit(int)  # start the process now (imports happen in its initializer)
    try:
        _process_batches(settings, plan.batches, rt, helpers=settings.prepare_workers if helper_processes else 0)
        if gate_remote:  # Great Expectations was imported there while this process encoded
            gate = writers.submit(quality_gate, settings, plan.ref).result()
        else:
            gate = quality_gate(settings, plan.ref, runtime=rt)
        remote = {name: writers.submit(upsert_store, settings, name, plan.ref) for name in offload} if writers else {}
        local = [s for s in plan.stores if s not in remote]
        with ThreadPoolExecutor(max_workers=max(1, len(local)), thread_name_prefix="ragops-upsert") as pool:
            futures = [pool.submit(upsert_store, settings, name, plan.ref, rt) for name in local]
            results = {name: f.result() for name, f in zip(local, futures)}
        from concurrent.futures.process import BrokenProcessPool

        for name, fut in remote.items():
            try:
                results[name] = fut.result()  # a StoreError of the writer is raised here
            except BrokenProcessPool as exc:
                from rag_ops.errors import StoreError

                raise StoreError(
                    f"the process writing the {name} store died before it finished (nothing is recorded; "
                    "the next run writes it again)"
                ) from exc
        store_results = [results[name] for name in plan.stores]
    finally:
        if writers is not None:
            writers.shutdown(wait=True, cancel_futures=True)
    report = commit_run(settings, plan.ref, store_results, runtime=rt)
    report["seconds"]["quality"] = gate["seconds"]
    report["data_docs"] = gate["data_docs"]
    report["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    return report


def _helper_pool(workers: int, initializer, settings: Settings):
    """A pool of ``spawn``-ed helper processes, each set up by ``initializer(settings, level)``.

    ``spawn``, never fork: this process holds torch's threads. ``level`` is this process's
    effective log level, so the helpers log alike.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer, initargs=(settings, level),
    )


def _init_store_writer(settings: Settings, level: str) -> None:
    """A store-writer process: logging, and the store libraries imported ahead of their use."""
    from rag_ops.logs import setup_logging

    setup_logging(level)
    import rag_ops.stores.chroma  # noqa: F401
    import rag_ops.stores.milvus  # noqa: F401


def _init_gate_and_store_writer(settings: Settings, level: str) -> None:
    """A store-writer process that also runs the quality gate of a run of several batches.

    Great Expectations' import alone took 2.5-7.6 s of the gate here; in this process it
    happens while the run is still encoding, at the lowest CPU priority (the encoder keeps both
    cores; this process is idle until the gate). The priority is restored afterwards where the
    OS allows it.
    """
    import os

    before = None
    with contextlib.suppress(OSError, AttributeError):
        before = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    _init_store_writer(settings, level)
    import great_expectations  # noqa: F401

    import rag_ops.quality  # noqa: F401

    if before is not None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, before)  # needs CAP_SYS_NICE; otherwise it stays low


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
