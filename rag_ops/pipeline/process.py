"""Process one staged batch: read, parse, clean, chunk (``prepare_batch``), then embed and stage
the chunks and vectors (``embed_batch``)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from rag_ops.config import Settings
from rag_ops.errors import DocumentChanged, DocumentError, DocumentGone, DocumentTooLarge, RagopsError, StagingMissing
from rag_ops.identity import content_hash
from rag_ops.parse import extension_of
from rag_ops.pipeline.runtime import Runtime
from rag_ops.sources import SourceDocument, open_source
from rag_ops.staging import staging_at

log = logging.getLogger(__name__)


def result_refs(batch_ref: str) -> tuple[str, str]:
    """Where a batch's result (outcomes, chunk rows) and vectors (``.npy``) are staged."""
    stem = batch_ref[: -len(".json")]
    return stem + ".result.json", stem + ".vectors.npy"


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
    batch = staging_at(batch_ref, settings).read_json(batch_ref)
    if own:  # embed with the model and chunker of the version written (recorded in the batch)
        from rag_ops.versions import apply_overrides

        settings = apply_overrides(settings, batch.get("overrides"))
    rt = runtime or Runtime(settings, concurrent_encoders)
    try:
        return embed_batch(prepare_batch(settings, batch_ref, rt, batch=batch), rt)
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
    settings: Settings, batch_ref: str, rt: Runtime, start: int = 0, stop: int | None = None, batch: dict | None = None
) -> PreparedBatch:
    """The CPU-bound text half of :func:`process_batch` (everything but the model).

    ``start``/``stop`` select a slice of the batch's documents (see :func:`merge_prepared`);
    ``batch``: the staged manifest at ``batch_ref`` when the caller has read it already.
    """
    if batch is None:
        batch = staging_at(batch_ref, settings).read_json(batch_ref)
    src = open_source(batch["source"], settings)
    docs = batch["docs"][start:stop]
    prepared = PreparedBatch(batch_ref, len(docs), [], [], Counter(), Counter())
    ahead: dict[str, bytes | BaseException] = {}
    for i, entry in enumerate(docs):
        if entry["doc_id"] not in ahead:
            ahead = _read_ahead(docs[i:], src, settings, prepared.seconds)
        outcome, chunks = _prepare_document(
            entry, src, batch["stores"], settings, rt, prepared.seconds, preread=ahead.pop(entry["doc_id"], None),
            counts=prepared.counts,
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
    from rag_ops.parse import TEXT_EXTENSIONS, classifier_texts, load_parser, prime_classifier

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
        # bytes that did not change are not parsed: a run of touched files never loads a parser
        if len(data) <= 4 * settings.max_document_chars and content_hash(data) not in (entry["prev_hash"], entry.get("prev_error_hash")):
            with _timed(secs, "imports"):
                load_parser(extension_of(entry["uri"]))
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
    preread: bytes | BaseException | None = None, counts: Counter | None = None,
) -> tuple[dict, list]:
    """One document: its outcome (new, changed, restored, unchanged, failed) and its chunks.

    A document's own problems are recorded as a ``failed`` outcome with the stage and a reason;
    a failing source (``SourceError``) propagates so the task can retry. ``preread``: what
    :func:`_read_ahead` got for it (its bytes, or the exception reading raised).
    """
    from rag_ops.clean import clean_blocks
    from rag_ops.parse import load_parser, parse_document

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
        with _timed(secs, "imports"):
            load_parser(extension_of(doc.uri))
        with _timed(secs, "parse"):
            blocks = parse_document(
                data, doc.uri, max_pdf_pages=settings.max_pdf_pages, languages=settings.languages,
                max_chars=settings.max_document_chars,
            )
        del data
        stage = "clean"
        with _timed(secs, "clean"):
            blocks = clean_blocks(blocks)
        if settings.document_steps:
            from rag_ops.steps import apply_steps

            stage = "steps"
            with _timed(secs, "steps"):
                blocks = apply_steps(rt.steps, blocks, doc.uri, counts if counts is not None else Counter())
        if not blocks:
            raise DocumentError(
                "no text left after the document steps" if stage == "steps"
                else "no text left after cleaning (only page numbers, headers or symbols)"
            )
        with _timed(secs, "clean"):
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
        if res.load_seconds:  # a stage of its own, taken out of "embed" so the stages still add up
            secs["embed"] -= res.load_seconds
            secs["model_load"] += res.load_seconds
    counts["chunks"] = len(chunk_rows)

    result_ref, vectors_ref = result_refs(prepared.batch_ref)
    staging = staging_at(prepared.batch_ref, rt.settings)
    with _timed(secs, "staging"):
        staging.write_array(vectors_ref, vectors)  # first: the result file is what says the batch is done
    out = {
        "batch": prepared.batch_ref,
        "result": result_ref,
        "counts": dict(counts),
        "seconds": {k: round(v, 4) for k, v in secs.items()},
    }
    staging.write_json(result_ref, {**out, "docs": prepared.outcomes, "chunks": chunk_rows, "vectors": vectors_ref})
    log.info(
        "batch %s: %d docs -> %d new, %d changed, %d unchanged, %d failed; %d chunks, %d encoded, %d from cache (%.1fs)",
        Path(prepared.batch_ref).name, prepared.n_docs, counts["new"], counts["changed"], counts["unchanged"],
        counts["failed"], len(chunk_rows), counts["encoded"], counts["cache_hits"],
        sum(v for k, v in secs.items() if k != "encode_model"),
    )
    return out


def load_result(batch_ref: str, settings: Settings) -> tuple[dict, np.ndarray]:
    """A processed batch's staged result and vectors.

    Raises:
        RagopsError: the batch has no result (its ``process_batch`` did not run or did not finish).
    """
    result_ref, _ = result_refs(batch_ref)
    staging = staging_at(batch_ref, settings)
    try:
        result = staging.read_json(result_ref)
    except StagingMissing:
        raise RagopsError(f"batch {Path(batch_ref).name} has no staged result: was process_batch run for it?") from None
    return result, staging.read_array(result["vectors"])
