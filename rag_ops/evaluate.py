"""Retrieval recall: golden sets, standard metrics, documents ranked from chunks, a regression gate.

Golden sets use the BEIR layout, a folder with::

    corpus.jsonl        {"_id": ..., "title": ..., "text": ...} per line
    queries.jsonl       {"_id": ..., "text": ...} per line
    qrels/test.tsv      query-id <TAB> corpus-id <TAB> score   (a header line; grade > 0 = relevant)

Only queries with at least one relevant document (grade > 0) are scored.

**A BEIR corpus ingested by ragops** (:func:`ingest_beir`): document id = the BEIR _id,
text = title + blank line + text (the text alone when the title is empty). Each document becomes
a UTF-8 file ``<escaped _id>.txt`` under ``<data_dir>/golden/<set>/corpus/`` (the id is
percent-encoded outside ``[A-Za-z0-9._-]``, and a leading dot, so any id is a safe file name and
the mapping reverses), which the normal pipeline ingests into a collection of its own
(``beir_<set>``). That collection has its own small SQLite catalog under
``<data_dir>/golden/<set>/catalog/``: the main catalog only knows the configured collection
(``verify`` would report every golden chunk as missing from it, and the synthetic set would
sample golden documents). Re-running is incremental: unchanged files are not rewritten, so their
modified times stay and the pipeline skips them. The key of a hit is the un-escaped file stem of
its ``source_uri``.

**The synthetic set** (:func:`make_synthetic_golden`) is for users without a golden set: chunks
sampled from the catalog (sorted ids, ``random.Random(seed)``), one query per chunk made of one
sentence of its body (never the whole chunk), the chunk's document (ragops ``doc_id``) relevant.
It is stored once under ``<data_dir>/golden/synthetic/`` and re-used every night, so scores stay
comparable; only ``regenerate=True`` builds it again (its version, part of its name
``synthetic@v<N>``, increments, so the regression gate starts a new baseline).

**Documents from chunks.** Stores hold chunks and qrels are per document: a document is ranked
by its best chunk, and enough chunks are fetched to fill k distinct documents (3k first, doubled
until k documents are found or the collection is exhausted).

**Metrics** (trec_eval / BEIR definitions, fractions in [0, 1], means over the scored queries):
``recall@k`` = |relevant in top k| / |relevant|; ``ndcg@k`` with graded relevance (gain = grade,
discount log2(rank + 1), ideal DCG from the sorted grades, as pytrec_eval's ``ndcg_cut``);
``mrr@k`` = 1 / rank of the first relevant document within k (0 when none); ``hit@k`` = 1 when
any relevant document is in the top k.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import random
import re
import shutil
import statistics
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import unquote

from rag_ops.config import Settings
from rag_ops.errors import ConfigError, RagopsError, RecallRegression

log = logging.getLogger(__name__)

KS = (1, 5, 10, 20, 100)
CUTOFF = 10  # rank cut-off of ndcg and mrr
GATE_METRICS = ("ndcg@10", "recall@100")
MAX_QUERY_CHUNKS = 16_384  # Milvus' largest top-k
SYNTHETIC = "synthetic"
DOC_SUFFIX = ".txt"
_SAFE = frozenset(string.ascii_letters + string.digits + "._-")


# ---------------------------------------------------------------------------- golden sets
@dataclass
class GoldenSet:
    """Queries and graded relevance judgements of one golden set (only the scored queries).

    ``kind`` says what the keys of ``qrels`` are: ``"beir"`` BEIR ``_id`` s (hits keyed by their
    file name), ``"synthetic"`` ragops ``doc_id`` s.
    """

    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    path: Path
    kind: str = "beir"
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.queries)


def load_golden(path: str | Path, split: str = "test") -> GoldenSet:
    """Read a BEIR-format folder (``queries.jsonl`` and ``qrels/<split>.tsv``).

    Args:
        path: the folder.
        split: the qrels file to read (``qrels/<split>.tsv``).

    Returns:
        The set, holding only queries with at least one relevant document (grade > 0).

    Raises:
        ConfigError: a file is missing or malformed (the message names file and line), no query
            has a relevant document, or a judged query is missing from ``queries.jsonl``.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"golden set folder does not exist or is not a folder: {root}")
    meta = _read_meta(root)
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise ConfigError(f"golden set {root} has no qrels file {qrels_path.relative_to(root)} (splits found: {have or 'none'})")
    qrels_all = _read_qrels(qrels_path)
    scored = {q: grades for q, grades in qrels_all.items() if any(g > 0 for g in grades.values())}
    if not scored:
        raise ConfigError(f"{qrels_path}: no query has a relevant document (a score > 0); nothing to evaluate")
    queries_path = root / "queries.jsonl"
    texts: dict[str, str] = {}
    for lineno, obj in _read_jsonl(queries_path, ("_id", "text")):
        qid = obj["_id"]
        if qid in scored:
            if not obj["text"].strip():
                raise ConfigError(f"{queries_path} line {lineno}: query {qid!r} has an empty text")
            texts[qid] = obj["text"]
    missing = sorted(set(scored) - set(texts))
    if missing:
        raise ConfigError(
            f"{qrels_path} judges {len(missing)} query id(s) that {queries_path.name} does not hold, "
            f"e.g. {missing[:5]}"
        )
    kind = meta.get("kind", "beir")
    name = meta.get("name") or root.name
    return GoldenSet(name=name, queries=texts, qrels=scored, path=root, kind=kind, meta=meta)


def iter_corpus(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """``(_id, title, text)`` of each document of a ``corpus.jsonl`` (title may be empty).

    Raises:
        ConfigError: the file is missing, a line is malformed, or an ``_id`` repeats.
    """
    path = Path(path)
    seen: set[str] = set()
    for lineno, obj in _read_jsonl(path, ("_id",)):
        doc_id = obj["_id"]
        if doc_id in seen:
            raise ConfigError(f"{path} line {lineno}: _id {doc_id!r} appears twice")
        seen.add(doc_id)
        title, text = obj.get("title") or "", obj.get("text") or ""
        if not isinstance(title, str) or not isinstance(text, str):
            raise ConfigError(f"{path} line {lineno}: title and text must be strings (document {doc_id!r})")
        yield doc_id, title, text


def _read_jsonl(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise ConfigError(f"golden set file is missing: {path}")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path} line {lineno}: not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
            for key in required:
                value = obj.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and key == "_id":
                    obj[key] = value = str(value)
                if not isinstance(value, str) or (key == "_id" and not value):
                    raise ConfigError(f"{path} line {lineno}: field {key!r} must be a non-empty string, got {value!r}")
            yield lineno, obj


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    first = True
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3:
                parts = line.split()
            if len(parts) != 3:
                raise ConfigError(
                    f"{path} line {lineno}: expected 3 tab-separated fields (query-id corpus-id score), got {len(parts)}"
                )
            qid, did, raw = (p.strip() for p in parts)
            grade = _grade(raw)
            if grade is None:
                if first:
                    first = False
                    continue  # the header line (query-id corpus-id score)
                raise ConfigError(f"{path} line {lineno}: score must be an integer, got {raw!r}")
            first = False
            if not qid or not did:
                raise ConfigError(f"{path} line {lineno}: empty query-id or corpus-id")
            grades = qrels.setdefault(qid, {})
            grades[did] = max(grade, grades.get(did, grade))
    return qrels


def _grade(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            return None
        return int(value) if value.is_integer() else None


def _read_meta(root: Path) -> dict:
    path = root / "golden.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return meta


# ---------------------------------------------------------------------------- metrics
def _relevant(qrels: Mapping[str, int]) -> set[str]:
    return {d for d, g in qrels.items() if g > 0}


def _top(ranked: Sequence[str], k: int) -> list[str]:
    """The first k distinct keys (a key repeated lower in the ranking counts once, at its best rank)."""
    return list(dict.fromkeys(ranked))[: max(k, 0)]


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """|relevant ∩ top k| / |relevant| (relevant = grade > 0); 0 when nothing is relevant."""
    rel = _relevant(qrels)
    if not rel:
        return 0.0
    return len(rel.intersection(_top(ranked, k))) / len(rel)


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k with graded relevance: gain = grade, discount log2(rank + 1), ideal from sorted grades."""
    dcg = sum(max(qrels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(_top(ranked, k)))
    ideal_grades = sorted((g for g in qrels.values() if g > 0), reverse=True)[: max(k, 0)]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal_grades))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document within the top k; 0 when there is none."""
    for i, d in enumerate(_top(ranked, k), 1):
        if qrels.get(d, 0) > 0:
            return 1.0 / i
    return 0.0


def hit_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """1 when any relevant document is in the top k, else 0."""
    return 1.0 if _relevant(qrels).intersection(_top(ranked, k)) else 0.0


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """The keys :func:`score_rankings` returns for ``ks`` (besides ``queries``)."""
    ks = sorted(set(ks))
    return [f"recall@{k}" for k in ks] + [f"ndcg@{CUTOFF}", f"mrr@{CUTOFF}"] + [f"hit@{k}" for k in ks]


def score_rankings(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], ks: Sequence[int] = KS
) -> dict[str, float]:
    """Mean metrics over the queries of ``qrels`` that have a relevant document.

    A judged query missing from ``rankings`` scores 0; rankings of unjudged queries are ignored.

    Returns:
        ``recall@k`` and ``hit@k`` for each k, ``ndcg@10``, ``mrr@10`` and ``queries`` (count).
    """
    if not ks or any(int(k) < 1 for k in ks):
        raise ConfigError(f"ks must be positive ranks. Got {list(ks)}.")
    ks = sorted({int(k) for k in ks})
    scored = [q for q, grades in qrels.items() if any(g > 0 for g in grades.values())]
    sums = dict.fromkeys(metric_names(ks), 0.0)
    for q in scored:
        ranked, grades = list(rankings.get(q, ())), qrels[q]
        for k in ks:
            sums[f"recall@{k}"] += recall_at_k(ranked, grades, k)
            sums[f"hit@{k}"] += hit_at_k(ranked, grades, k)
        sums[f"ndcg@{CUTOFF}"] += ndcg_at_k(ranked, grades, CUTOFF)
        sums[f"mrr@{CUTOFF}"] += mrr_at_k(ranked, grades, CUTOFF)
    n = len(scored)
    out: dict[str, float] = {name: (total / n if n else 0.0) for name, total in sums.items()}
    out["queries"] = n
    return out


# ---------------------------------------------------------------------------- documents from chunks
def escape_id(doc_id: str) -> str:
    """A BEIR ``_id`` as a safe file stem: UTF-8 bytes outside ``[A-Za-z0-9._-]`` (and a leading
    dot, which would hide the file) percent-encoded. :func:`unescape_id` reverses it."""
    if not doc_id:
        raise ConfigError("a corpus document has an empty _id")
    out = []
    for n, ch in enumerate(doc_id):
        if ch in _SAFE and not (n == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    stem = "".join(out)
    if len(stem) + len(DOC_SUFFIX) > 255:
        raise ConfigError(f"corpus _id is too long to be a file name once escaped ({len(stem)} characters): {doc_id[:60]!r}…")
    return stem


def unescape_id(stem: str) -> str:
    """The BEIR ``_id`` of an escaped file stem."""
    return unquote(stem, encoding="utf-8", errors="strict")


def beir_key(hit) -> str:
    """The BEIR ``_id`` of a hit in a collection written by :func:`ingest_beir`."""
    name = hit.source_uri.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(DOC_SUFFIX):
        name = name[: -len(DOC_SUFFIX)]
    return unescape_id(name)


def doc_id_key(hit) -> str:
    """The ragops document id of a hit (keys of the synthetic set)."""
    return hit.doc_id


def key_function(golden: GoldenSet) -> Callable[[Any], str]:
    """How a hit maps to the document keys of ``golden``'s qrels."""
    return doc_id_key if golden.kind == SYNTHETIC else beir_key


def rank_documents(store, vector, k: int, key: Callable[[Any], str] = doc_id_key, limit: int | None = None) -> list[str]:
    """The k best documents for a query vector, each ranked by its best chunk.

    Asks the store for 3k chunks, doubling until they hold k distinct documents or the
    collection is exhausted (fewer hits than asked, or ``limit`` chunks, e.g. the collection size).

    Returns:
        Up to k document keys, best first.
    """
    if k < 1:
        return []
    cap = MAX_QUERY_CHUNKS if limit is None else max(1, min(limit, MAX_QUERY_CHUNKS))
    n = min(3 * k, cap)
    while True:
        hits = store.query(vector, k=n)
        ranked = list(dict.fromkeys(key_ for key_ in (key(h) for h in hits) if key_))
        if len(ranked) >= k or len(hits) < n or n >= cap:
            return ranked[:k]
        n = min(2 * n, cap)


# ---------------------------------------------------------------------------- BEIR corpus ingest
def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not s:
        import hashlib

        s = "set_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return s[:55].rstrip("_")


def beir_collection_name(set_name: str) -> str:
    """Default collection of a BEIR set: ``beir_<name>`` (lower case, letters/digits/underscores)."""
    return f"beir_{_slug(set_name)}"


def _set_name(golden: GoldenSet | str | Path) -> str:
    if isinstance(golden, GoldenSet):
        return golden.name
    root = Path(golden).expanduser()
    if root.is_dir():
        return _read_meta(root).get("name") or root.absolute().name
    return str(golden)


def beir_settings(settings: Settings, golden: GoldenSet | str | Path, collection: str | None = None) -> Settings:
    """Settings of the collection holding a BEIR set (its own collection, corpus folder and catalog).

    Args:
        settings: the base settings (data dir, stores, model).
        golden: a loaded set, its folder, or its name.
        collection: the collection; default ``beir_<set name>``.

    Raises:
        ConfigError: the set is named ``synthetic`` (reserved) or the collection name is invalid.
    """
    name = _set_name(golden)
    slug = _slug(name)
    if slug == SYNTHETIC:
        raise ConfigError(f"a BEIR golden set cannot be named {name!r}: the name is reserved for the synthetic set")
    root = settings.data_dir / "golden" / slug
    coll = collection or beir_collection_name(name)
    if settings.catalog_is_server:  # a schema of the catalog's database: every worker reaches it
        from rag_ops.versions import ensure_state, schema_ref

        url = ensure_state(settings, schema_ref(settings, "golden", coll))
    else:
        url = f"sqlite:///{root / 'catalog' / (coll + '.db')}"
    return settings.replace(collection=coll, source=str(root / "corpus")).with_catalog(url)


def ingest_beir(settings: Settings, beir_dir: str | Path, collection: str | None = None) -> tuple[Settings, dict]:
    """Write a BEIR corpus as text files and ingest them through the pipeline into their own collection.

    Document id = the BEIR ``_id``, text = title + blank line + text. Unchanged files are not
    rewritten (their modified time stays, so the pipeline skips them); files of documents no
    longer in the corpus are removed and a full sync deletes them from the stores.

    Args:
        settings: the base settings.
        beir_dir: the BEIR folder (``corpus.jsonl``).
        collection: the collection; default ``beir_<set name>``.

    Returns:
        ``(settings of the set's collection, the ingest report)``; the report has a ``golden``
        entry with ``files_written``, ``files_unchanged``, ``files_removed`` and ``corpus_dir``.

    Raises:
        ConfigError: the folder or its corpus is malformed, or it is a synthetic set.
        SourceError, StoreError, EmbeddingError, CatalogError: from the pipeline.
    """
    from rag_ops.pipeline import ingest

    root = Path(beir_dir).expanduser()
    if not root.is_dir():
        raise ConfigError(f"BEIR folder does not exist or is not a folder: {root}")
    if _read_meta(root).get("kind") == SYNTHETIC:
        raise ConfigError(f"{root} is a synthetic golden set: its documents are the collection's own, nothing to ingest")
    target = beir_settings(settings, root, collection)
    corpus_dir = Path(target.source)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()
    written = unchanged = 0
    for doc_id, title, text in iter_corpus(root / "corpus.jsonl"):
        name = escape_id(doc_id) + DOC_SUFFIX
        wanted.add(name)
        data = (f"{title}\n\n{text}" if title.strip() else text).encode("utf-8")
        path = corpus_dir / name
        try:
            same = path.stat().st_size == len(data) and path.read_bytes() == data
        except FileNotFoundError:
            same = False
        if same:
            unchanged += 1
            continue
        tmp = corpus_dir / f".{name}.tmp"  # hidden: never listed by the pipeline
        tmp.write_bytes(data)
        tmp.replace(path)
        written += 1
    if not wanted:
        raise ConfigError(f"{root / 'corpus.jsonl'} holds no documents")
    removed = 0
    for path in corpus_dir.iterdir():
        if path.is_file() and path.name not in wanted:
            path.unlink()
            removed += 1
    log.info(
        "golden set %s: %d corpus files written, %d unchanged, %d removed; ingesting into %r",
        root.name, written, unchanged, removed, target.collection,
    )
    report = ingest(target, source=str(corpus_dir), full_sync=True)
    _restore_lost_chunks(target)
    report["golden"] = {
        "files_written": written, "files_unchanged": unchanged, "files_removed": removed,
        "corpus_dir": str(corpus_dir), "collection": target.collection,
    }
    return target, report


def _restore_lost_chunks(target: Settings) -> None:
    """Re-upsert from the catalog when a store lost chunks (e.g. its collection was dropped):
    the set's catalog would otherwise call every unchanged document indexed forever."""
    from rag_ops.catalog import Catalog
    from rag_ops.stores import open_store

    catalog = Catalog(target.catalog_db_url)
    try:
        expected = catalog.counts()["chunks"]
    finally:
        catalog.close()
    lacking = []
    for name in target.stores:
        with open_store(name, target) as store:
            if store.count() != expected:
                lacking.append(name)
    if lacking:
        from rag_ops.verify import verify

        log.warning("collection %r: %s hold(s) other chunks than its catalog lists; repairing", target.collection, lacking)
        verify(target, repair=True)


# ---------------------------------------------------------------------------- synthetic set
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_HEADING_END = (".", "!", "?", ":", ";", ",", ")", '"', "'")


def synthetic_dir(settings: Settings) -> Path:
    """Where the synthetic golden set lives: ``<data_dir>/golden/synthetic``."""
    return settings.data_dir / "golden" / SYNTHETIC


def query_from_chunk(text: str, rng: random.Random) -> str | None:
    """A query made from one chunk: one sentence of its body (heading lines skipped), preferably of
    6-40 words, capped at 30 words, never the whole chunk. None when the chunk has too little text."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1:
        lines = [ln for ln in lines if not _heading_like(ln)] or lines
    body = " ".join(" ".join(lines).split())
    sentences = [s.strip() for s in _SENTENCE_END.split(body) if s.strip()]
    candidates = [s for s in sentences if 6 <= len(s.split()) <= 40]
    if candidates:
        words = rng.choice(candidates).split()
    else:
        words = body.split()
        if len(words) < 6:
            return None
    words = words[:30]
    if " ".join(words) in (body, " ".join(text.split())):  # the chunk is one short sentence: ask with part of it
        keep = math.ceil(len(words) * 2 / 3)
        if keep < 5:
            return None
        words = words[:keep]
    return " ".join(words)


def _heading_like(line: str) -> bool:
    return len(line.split()) <= 12 and not line.endswith(_HEADING_END)


def make_synthetic_golden(
    settings: Settings, n_queries: int = 200, seed: int = 13, regenerate: bool = False
) -> GoldenSet:
    """The synthetic golden set of the data dir: re-used as stored, or built (again) from the catalog.

    Built by sampling chunk ids of indexed documents (sorted, then ``random.Random(seed)``),
    reading their texts from the first configured store that holds them, and deriving one query
    per chunk (:func:`query_from_chunk`); the chunk's document is relevant (grade 1). Chunks with
    too little text, or whose query repeats an earlier one, are passed over. The same seed on the
    same catalog gives the same set.

    Args:
        settings: the settings (catalog, stores, collection read for texts).
        n_queries: queries wanted (fewer when the catalog has fewer usable chunks).
        seed: the sampling seed.
        regenerate: build a new set (version + 1) even if one is stored.

    Returns:
        The set (``kind="synthetic"``, name ``synthetic@v<version>``).

    Raises:
        ConfigError: ``n_queries`` < 1.
        RagopsError: the catalog holds no indexed chunk, or none yields a query.
    """
    root = synthetic_dir(settings)
    shared = _kept_synthetic(settings)
    if shared is not None and not regenerate and _read_meta_or_empty(root).get("version") != shared[0]:
        _write_files(root, shared[1])  # the set kept in the catalog, made on another worker or earlier
    if (root / "golden.json").is_file() and not regenerate:
        golden = load_golden(root)
        if shared is None:  # a set an earlier release kept only in this data dir: keep it in the catalog
            _keep_synthetic(settings, root)
        if (golden.meta.get("seed"), golden.meta.get("n_queries")) != (seed, n_queries):
            log.info(
                "re-using the stored synthetic set %s (seed %s, %s queries asked); regenerate to change it",
                golden.name, golden.meta.get("seed"), golden.meta.get("n_queries"),
            )
        return golden
    if n_queries < 1:
        raise ConfigError(f"n_queries must be >= 1. Got {n_queries}.")
    previous = _read_meta_or_empty(root)
    version = max(int(previous.get("version", 0)), shared[0] if shared else 0) + 1

    from rag_ops.catalog import Catalog
    from rag_ops.stores import open_store

    catalog = Catalog(settings.catalog_db_url)
    try:
        catalog.migrate()
        docs = {d: row for d, row in catalog.live_documents().items() if row.status == "indexed"}
        doc_of = {c.chunk_id: doc for doc, rows in catalog.chunks_of(sorted(docs)).items() for c in rows}
    finally:
        catalog.close()
    pool = sorted(doc_of)
    if not pool:
        raise RagopsError(
            f"the catalog holds no indexed chunk: ingest documents into {settings.collection!r} "
            "before building a synthetic golden set"
        )
    order = random.Random(seed).sample(pool, len(pool))
    queries: dict[str, str] = {}
    seen: set[str] = set()
    with contextlib.ExitStack() as stack:
        stores = [stack.enter_context(open_store(name, settings)) for name in settings.stores]
        window = max(2 * n_queries, 100)
        for start in range(0, len(order), window):
            part = order[start : start + window]
            texts: dict[str, tuple[str, str]] = {}
            for store in stores:  # the first store holding a chunk gives its text
                need = [c for c in part if c not in texts]
                if need:
                    texts.update(store.get_texts(need))
            for cid in part:
                if cid not in texts:
                    continue  # listed by the catalog, held by no store (``ragops verify`` tells)
                query = query_from_chunk(texts[cid][0], random.Random(f"{seed}:{cid}"))
                if query is None or query.lower() in seen:
                    continue
                seen.add(query.lower())
                queries[cid] = query
                if len(queries) == n_queries:
                    break
            if len(queries) == n_queries:
                break
    if not queries:
        raise RagopsError(f"none of the {len(pool)} chunks in the catalog has enough text to make a query")
    qrels = {qid: {doc_of[qid]: 1} for qid in queries}
    meta = {
        "kind": SYNTHETIC, "name": f"{SYNTHETIC}@v{version}", "version": version, "seed": seed,
        "n_queries": n_queries, "queries": len(queries), "candidates": len(pool),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "collection": settings.collection, "model_id": settings.model_id,
        "keys": "ragops doc_id (corpus.jsonl lists the relevant documents by id, title = source uri, no text)",
    }
    _write_beir_dir(root, meta, queries, qrels, {d: docs[d].uri for d in sorted({doc_of[q] for q in queries})})
    _keep_synthetic(settings, root)
    log.info("synthetic golden set %s: %d queries from %d candidate chunks (seed %d)", meta["name"], len(queries), len(pool), seed)
    return load_golden(root)


def _synthetic_key(settings: Settings) -> str:
    return f"{SYNTHETIC}:{settings.collection}"


def _read_meta_or_empty(root: Path) -> dict:
    return _read_meta(root) if (root / "golden.json").is_file() else {}


def _kept_synthetic(settings: Settings) -> tuple[int, dict[str, str]] | None:
    """The synthetic set kept in the catalog ``(version, files)``, or None."""
    from rag_ops.catalog import Catalog

    catalog = Catalog(settings.catalog_db_url)
    try:
        catalog.migrate()
        return catalog.golden(_synthetic_key(settings))
    finally:
        catalog.close()


def _keep_synthetic(settings: Settings, root: Path) -> None:
    """Keep the set's files in the catalog, so every worker scores the same queries."""
    from rag_ops.catalog import Catalog

    files = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*")) if p.is_file()}
    catalog = Catalog(settings.catalog_db_url)
    try:
        catalog.migrate()
        catalog.save_golden(_synthetic_key(settings), int(_read_meta(root).get("version", 1)), files)
    finally:
        catalog.close()


def _write_beir_dir(root: Path, meta: dict, queries: dict[str, str], qrels: dict[str, dict[str, int]], docs: dict[str, str]) -> None:
    """Write a golden set folder (corpus, queries, qrels, golden.json)."""
    corpus = "".join(json.dumps({"_id": d, "title": uri, "text": ""}, ensure_ascii=False) + "\n" for d, uri in docs.items())
    lines = "".join(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in queries.items())
    tsv = "query-id\tcorpus-id\tscore\n" + "".join(
        f"{qid}\t{doc_id}\t{grade}\n" for qid, grades in qrels.items() for doc_id, grade in grades.items()
    )
    _write_files(root, {"corpus.jsonl": corpus, "queries.jsonl": lines, "qrels/test.tsv": tsv,
                        "golden.json": json.dumps(meta, indent=2, sort_keys=True)})


def _write_files(root: Path, files: dict[str, str]) -> None:
    """Write a folder beside the old one, then swap it in (never a half-written set)."""
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, text in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    old = root.with_name(root.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if root.exists():
        root.rename(old)
    tmp.rename(root)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------- scoring stores
def evaluate_store(
    settings: Settings, store_name: str, golden: GoldenSet, ks: Sequence[int] = KS, *, query_vectors=None,
    collection: str | None = None,
) -> dict[str, Any]:
    """Score one store's collection (the live version of ``settings.collection``) on a golden set.

    Args:
        settings: settings whose collection holds the set's documents (for a BEIR set:
            :func:`beir_settings` / :func:`ingest_beir`).
        store_name: ``chroma`` or ``milvus``.
        golden: the set.
        ks: cut-offs of recall and hit rate.
        query_vectors: the queries' vectors in ``sorted(golden.queries)`` order (encoded here
            in one batch when None, with ``settings``' model: pass the version's settings).
        collection: a physical collection (an index version) instead of the live one.

    Returns:
        The metrics of :func:`score_rankings` plus ``store``, ``golden_set``, ``collection``,
        ``model_id`` and ``seconds``.

    Raises:
        RagopsError: the collection is missing or empty.
        StoreError, EmbeddingError: from the store or the model.
    """
    from rag_ops.stores import open_store

    t0 = time.perf_counter()
    qids = sorted(golden.queries)
    if query_vectors is None:
        query_vectors = _encode_queries(settings, golden, qids)
    key = key_function(golden)
    depth = max(max(ks), CUTOFF)
    with open_store(store_name, settings, collection=collection) as store:
        size = store.count()
        if size == 0:
            raise RagopsError(
                f"collection {settings.collection!r} in the {store_name} store is missing or empty: nothing to "
                f"score golden set {golden.name!r} against (ingest its corpus first, e.g. `ragops eval --ingest DIR`)"
            )
        rankings = {q: rank_documents(store, v, depth, key, limit=size) for q, v in zip(qids, query_vectors)}
    metrics = score_rankings(rankings, golden.qrels, ks)
    result: dict[str, Any] = {
        **metrics, "store": store_name, "golden_set": golden.name, "collection": settings.collection,
        "physical_collection": store.collection,
        "model_id": settings.model_id, "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "recall %s/%s on %s: ndcg@10 %.4f, recall@10 %.4f over %d queries",
        store_name, settings.collection, golden.name, metrics[f"ndcg@{CUTOFF}"], metrics.get("recall@10", float("nan")),
        metrics["queries"],
    )
    return result


def _encode_queries(settings: Settings, golden: GoldenSet, qids: list[str]):
    from rag_ops.embed import make_embedder

    return make_embedder(settings).encode([golden.queries[q] for q in qids])


def score_stores(
    settings: Settings,
    golden: GoldenSet,
    *,
    target: Settings | None = None,
    stores: Sequence[str] | None = None,
    run_id: str | None = None,
    record: bool = True,
    ks: Sequence[int] = KS,
) -> dict[str, dict[str, Any]]:
    """Score every store on a golden set and record the scores in ``recall_scores``.

    Args:
        settings: the settings whose catalog receives the scores (the main catalog).
        golden: the set.
        target: settings whose collection holds the set (default ``settings``; for a BEIR set
            the settings :func:`ingest_beir` returns).
        stores: stores to score; default ``target.stores``.
        run_id: the run id written with the scores; a new ``cli__…`` id when None.
        record: write the scores to the catalog.
        ks: cut-offs of recall and hit rate.

    Returns:
        ``{store: result of evaluate_store + run_id}``.
    """
    from rag_ops.pipeline import new_run_id

    from rag_ops.versions import serving_settings

    target = serving_settings(target or settings)  # queries in the live version's model
    run_id = run_id or new_run_id()
    qids = sorted(golden.queries)
    vectors = _encode_queries(target, golden, qids)  # one batch for every store
    results: dict[str, dict[str, Any]] = {}
    for name in stores or target.stores:
        results[name] = {**evaluate_store(target, name, golden, ks, query_vectors=vectors), "run_id": run_id}
    if record:
        from rag_ops.catalog import Catalog

        catalog = Catalog(settings.catalog_db_url)
        try:
            catalog.migrate()
            for name, res in results.items():
                numbers = {k: v for k, v in res.items() if k != "seconds"}
                catalog.write_recall_scores(run_id, res["collection"], name, golden.name, res["model_id"], numbers)
        finally:
            catalog.close()
    return results


# ---------------------------------------------------------------------------- regression gate
def _metric_of(entry: Mapping[str, Any], metric: str) -> float | None:
    source = entry.get("metrics", entry)
    value = source.get(metric) if isinstance(source, Mapping) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def check_regression(
    current: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = GATE_METRICS,
    window: int = 7,
    tolerance: float = 0.02,
    floor: Mapping[str, float] | None = None,
) -> list[str]:
    """Compare a result with the median of the last ``window`` runs and with absolute floors.

    Args:
        current: an :func:`evaluate_store` result (metric -> value, plus ``golden_set``, ``store``).
        history: earlier runs, oldest first, as :meth:`Catalog.recall_history` returns them
            (``{"metrics": {...}}``) or flat metric dicts; an entry with the current ``run_id`` is
            ignored.
        metrics: metrics compared with their baseline.
        window: how many of the latest runs make the baseline (their median).
        tolerance: how far (absolute, in the metric's units) below the baseline still passes.
        floor: metric -> lowest acceptable value (checked whether or not there is history).

    Returns:
        One readable line per failure (metric, value, baseline and over how many runs, tolerance,
        golden set); empty when everything passes. Without history only the floors apply.

    Raises:
        ConfigError: ``window`` < 1, ``tolerance`` < 0, or a metric is not in ``current``.
    """
    if window < 1:
        raise ConfigError(f"window must be >= 1 run. Got {window}.")
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0. Got {tolerance}.")
    floor = dict(floor or {})
    where = f"golden set {current.get('golden_set', '?')!r}"
    if current.get("store"):
        where += f" ({current['store']}, collection {current.get('collection', '?')!r})"
    failures: list[str] = []
    for metric in dict.fromkeys([*metrics, *floor]):
        value = _metric_of(current, metric)
        if value is None:
            known = sorted(k for k, v in current.items() if _metric_of(current, k) is not None)
            raise ConfigError(f"metric {metric!r} is not in the result to check; it has {known}")
        if metric in metrics:
            past = [
                v for v in (_metric_of(h, metric) for h in history
                            if not (current.get("run_id") and h.get("run_id") == current.get("run_id")))
                if v is not None
            ][-window:]
            if past:
                baseline = statistics.median(past)
                if value < baseline - tolerance:
                    failures.append(
                        f"{metric} = {value:.4f} on {where} is {baseline - value:.4f} below its baseline "
                        f"{baseline:.4f} (median of the last {len(past)} run(s)); tolerance {tolerance:.4f}"
                    )
        if metric in floor and value < float(floor[metric]):
            failures.append(f"{metric} = {value:.4f} on {where} is below its floor {float(floor[metric]):.4f}")
    return failures


def enforce_regression(current: Mapping[str, Any], history: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
    """:func:`check_regression`, raising on failure.

    Raises:
        RecallRegression: one or more metrics regressed (``.failures`` lists them).
    """
    failures = check_regression(current, history, **kwargs)
    if failures:
        raise RecallRegression(
            f"retrieval recall regressed on golden set {current.get('golden_set', '?')!r} "
            f"({len(failures)} check(s)):\n  " + "\n  ".join(failures),
            failures,
        )


# ---------------------------------------------------------------------------- trend plot
def plot_trend(rows: Sequence[Mapping[str, Any]], path: str | Path, metrics: Sequence[str] = GATE_METRICS) -> Path:
    """Write a PNG of metric values over time, one panel per metric and one line per store.

    Args:
        rows: ``recall_scores`` rows (``store, metric, value, created_at``, e.g.
            :meth:`Catalog.recall_rows`) or history entries with ``store``, ``created_at`` and
            ``metrics``.
        path: the PNG to write (parent folders are created).
        metrics: the metrics to draw.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str], list[tuple[dt.datetime, float]]] = {}
    sets = set()
    for r in rows:
        when = dt.datetime.fromisoformat(str(r["created_at"]).replace("Z", "+00:00"))
        values = r["metrics"].items() if "metrics" in r else [(r["metric"], r["value"])]
        sets.add(r.get("golden_set"))
        for metric, value in values:
            if metric in metrics:
                series.setdefault((metric, r.get("store", "?")), []).append((when, float(value)))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.6 * len(metrics)), sharex=True, squeeze=False)
    try:
        for ax, metric in zip(axes[:, 0], metrics):
            lines = {s: pts for (m, s), pts in series.items() if m == metric}
            for store, pts in sorted(lines.items()):
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=store)
            ax.set_ylabel(metric)
            ax.set_ylim(0, 1.05)
            ax.grid(True, alpha=0.3)
            if lines:
                ax.legend(loc="lower left")
            else:
                ax.text(0.5, 0.5, "no scores yet", ha="center", va="center", transform=ax.transAxes)
        names = ", ".join(sorted(str(s) for s in sets if s)) or "retrieval"
        axes[0, 0].set_title(f"{names}: recall over time")
        fig.autofmt_xdate()
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png", dpi=100)
    finally:
        plt.close(fig)
    return out


# ---------------------------------------------------------------------------- nightly run
@dataclass
class GoldenRef:
    """A golden set ready to score, small enough for XCom: where it is and which collection holds it."""

    name: str
    path: str
    kind: str  # "beir" | "synthetic"
    collection: str

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def prepare_golden_sets(settings: Settings) -> list[GoldenRef]:
    """Every golden set the nightly run scores, each made ready.

    A BEIR set of ``settings.recall_golden_dirs`` is ingested (incrementally: an unchanged
    corpus costs a listing) into its own collection; the synthetic set of the live collection is
    loaded as stored, or built once when there is none (``settings.recall_synthetic``).

    Raises:
        ConfigError: nothing to score (no golden dirs and the synthetic set switched off), or a
            golden folder is malformed.
    """
    refs: list[GoldenRef] = []
    for raw in settings.recall_golden_dirs:
        target, report = ingest_beir(settings, raw)
        golden = load_golden(raw)
        log.info(
            "golden set %s: %d queries; corpus in %r (%d new, %d changed, %d deleted documents this run)",
            golden.name, len(golden), target.collection, report["new"], report["changed"], report["deleted"],
        )
        refs.append(GoldenRef(golden.name, str(Path(raw).expanduser()), golden.kind, target.collection))
    if settings.recall_synthetic:
        golden = make_synthetic_golden(settings, n_queries=settings.recall_synthetic_queries)
        refs.append(GoldenRef(golden.name, str(golden.path), golden.kind, settings.collection))
    if not refs:
        raise ConfigError(
            "nothing to score: RAGOPS_RECALL_GOLDEN_DIRS is empty and RAGOPS_RECALL_SYNTHETIC is false"
        )
    return refs


def _load_ref(settings: Settings, ref: GoldenRef) -> tuple[GoldenSet, Settings]:
    golden = load_golden(ref.path)
    if golden.kind == SYNTHETIC:
        golden.name = ref.name  # the versioned name the scores are recorded under
        return golden, settings
    return golden, beir_settings(settings, ref.path)


def score_golden_set(settings: Settings, ref: GoldenRef | Mapping[str, str], run_id: str) -> dict[str, Any]:
    """Score every configured store on one golden set, record the scores and gate them.

    The gate compares each of :data:`GATE_METRICS` with the median of the last
    ``settings.recall_window`` runs on the same store, set and collection (tolerance
    ``settings.recall_tolerance``) and with ``settings.recall_floors``.

    Returns:
        ``{"golden_set", "collection", "stores": {store: metrics}, "failures": [...]}`` (small:
        XCom-safe). Failures are returned, not raised, so that every set is scored and recorded;
        :func:`raise_recall_failures` fails the run afterwards.
    """
    from rag_ops.catalog import Catalog

    ref = ref if isinstance(ref, GoldenRef) else GoldenRef(**ref)
    golden, target = _load_ref(settings, ref)
    catalog = Catalog(settings.catalog_db_url)
    try:
        catalog.migrate()
        history = {
            s: catalog.recall_history(s, golden.name, collection=target.collection, limit=settings.recall_window + 1)
            for s in target.stores
        }
    finally:
        catalog.close()
    results = score_stores(settings, golden, target=target, run_id=run_id)
    floors = {k: float(v) for k, v in json.loads(settings.recall_floors).items()}
    failures: list[str] = []
    for name, res in results.items():
        failures += check_regression(
            res, history[name], window=settings.recall_window, tolerance=settings.recall_tolerance, floor=floors,
        )
    for line in failures:
        log.error("recall regression: %s", line)
    return {
        "golden_set": golden.name,
        "collection": target.collection,
        "stores": {n: {k: v for k, v in r.items() if k in (*GATE_METRICS, "recall@10", "mrr@10", "queries")}
                   for n, r in results.items()},
        "failures": failures,
    }


def raise_recall_failures(results: Sequence[Mapping[str, Any]]) -> None:
    """Fail when any golden set regressed.

    Raises:
        RecallRegression: with every failure line (metric, value, baseline, tolerance, golden set).
    """
    failures = [line for r in results for line in r.get("failures", [])]
    if failures:
        raise RecallRegression(
            f"retrieval recall regressed ({len(failures)} check(s)):\n  " + "\n  ".join(failures), failures
        )


def plot_recall_trends(settings: Settings, metrics: Sequence[str] = GATE_METRICS) -> list[Path]:
    """One PNG per store under ``<data_dir>/recall/`` with every golden set's trend; returns the paths."""
    from rag_ops.catalog import Catalog

    catalog = Catalog(settings.catalog_db_url)
    try:
        catalog.migrate()
        rows = catalog.recall_rows()
    finally:
        catalog.close()
    paths = []
    for store in sorted({r["store"] for r in rows}):
        # one line per golden set in each store's plot
        mine = [{**r, "store": r["golden_set"]} for r in rows if r["store"] == store]
        path = plot_trend(mine, settings.data_dir / "recall" / f"trend_{store}.png", metrics)
        log.info("recall trend of %s: %s", store, path)
        paths.append(path)
    return paths
