"""Data quality gate: Great Expectations suites kept as code, checked before anything is upserted.

Three suites validate one batch, each on a small pandas DataFrame built from what the pipeline
already holds (never the document text itself: only lengths, counts, flags and ids go into GX,
so neither Data Docs nor logs can leak a document):

``documents``  (one row per processed document)
    n_chars >= min_chars; size in [1, max_document_bytes]; utf8_ok is True;
    printable_ratio in [min_printable_ratio, 1]; none of those null.              row-level
``chunks``     (one row per chunk)
    text_chars (stripped length) >= 1; tokens in [min_chunk_tokens, max_chunk_tokens];
    chunk_id unique; chunk_id, doc_id, source_uri, seq, tokens not null.          row-level
    text_repeats (share of chunks whose text repeats an earlier chunk's)
    <= max_duplicate_chunk_rate.                                                  batch-level
``embeddings`` (one row per vector, aligned with the chunks)
    finite is True; norm in [1 - tol, 1 + tol].                                   row-level
    dim in {embedding_dim} (a mismatch means a wrong model); distinct vector
    fingerprints >= 2 when the batch has two different texts (not constant);
    near_duplicate (cosine >= 0.999 to another vector) mean
    <= max_near_duplicate_rate (every pair up to 10k vectors, a 2k-row sample
    against all rows above).                                                      batch-level

Gate semantics (:func:`check_quality`): a failing **row-level** expectation quarantines the
documents of the failing rows (``GateResult.quarantined``: doc id -> reason) and lets the other
documents through. A failing **batch-level** expectation, or a quarantined share of the batch's
documents above ``max_failure_share``, goes to ``GateResult.batch_failures``: the batch must not
be upserted (:func:`enforce` raises :class:`QualityGateError`).

Thresholds are not baked into the suites: the suites use GX suite parameters
(``{"$PARAMETER": name}``) and every run passes the values of its :class:`Thresholds`, so one set
of suites, validation definitions and checkpoints serves every call of the process.

GX objects live in one ephemeral Data Context per process, created on first use (importing GX
takes a few seconds, so this module imports it lazily). The context has no data docs site of its
own (no temporary folder); a call with ``docs_dir`` adds a filesystem site there, plus a
filesystem validation-results store under ``docs_dir/.gx_results`` so the site keeps the history
of every process that wrote it (GX's index builder drops pages whose results its store does not
hold). Writes to one ``docs_dir`` are serialised across processes with a file lock.
GX 1.24 sends no usage statistics (it has no analytics client); ``analytics_enabled`` is set to
False anyway and ``GX_ANALYTICS_ENABLED=False`` is in the environment (rag_ops.config).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rag_ops.config import apply_privacy_env
from rag_ops.errors import RagopsError

log = logging.getLogger(__name__)

SUITES = ("documents", "chunks", "embeddings")
NEAR_DUPLICATE_COSINE = 0.999  # two vectors at least this similar are near-duplicates
SUITE_PREFIX = "ragops_"  # GX suite names: ragops_documents, ragops_chunks, ragops_embeddings
DOCS_INDEX_LIMIT = 300  # validation results listed on a Data Docs index page (newest first)
_NEAR_DUP_BLOCK = 1024  # rows per block of the chunked similarity product, at most
_NEAR_DUP_BLOCK_BYTES = 32 * 1024 * 1024  # and one block's similarities stay under this (float32)
NEAR_DUP_EXACT_MAX = 10_000  # up to this many vectors every pair is compared; above, a sample
NEAR_DUP_SAMPLE = 2_000  # rows checked (against all rows) above NEAR_DUP_EXACT_MAX
_RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["doc_id"]}
# GX rebuilds a site's index after every validation (three per call here); while this is True
# the index builder skips, so one call writes its index once, after its last suite.
_DEFER_INDEX = False


# ---------------------------------------------------------------------------- public types
@dataclass(frozen=True)
class Thresholds:
    """Bounds of the quality gate (defaults match the packaged MiniLM and ragops' caps)."""

    min_chars: int = 1  # document: extracted text length >= this
    max_document_bytes: int = 50 * 1024 * 1024  # document size bounds [1, max]
    min_printable_ratio: float = 0.9  # document: printable characters / all
    min_chunk_tokens: int = 1  # chunk token length within [min, max]
    max_chunk_tokens: int = 256
    max_duplicate_chunk_rate: float = 0.5  # share of chunks in the batch whose text repeats another's
    embedding_dim: int = 384  # model's dimension
    norm_tolerance: float = 1e-3  # |L2 norm - 1| <= tol (vectors are normalised)
    max_near_duplicate_rate: float = 0.5  # share of vectors with cosine >= 0.999 to another vector
    max_failure_share: float = 0.2  # more than this share of documents quarantined -> batch failure

    def parameters(self) -> dict[str, Any]:
        """The GX suite parameters of one run (``$PARAMETER`` names used by the suites)."""
        return {
            "min_chars": self.min_chars,
            "max_document_bytes": self.max_document_bytes,
            "min_printable_ratio": self.min_printable_ratio,
            "min_chunk_tokens": self.min_chunk_tokens,
            "max_chunk_tokens": self.max_chunk_tokens,
            "max_duplicate_chunk_rate": self.max_duplicate_chunk_rate,
            "embedding_dims": [self.embedding_dim],
            "min_norm": 1.0 - self.norm_tolerance,
            "max_norm": 1.0 + self.norm_tolerance,
            "max_near_duplicate_rate": self.max_near_duplicate_rate,
        }


@dataclass
class ExpectationOutcome:
    """One expectation's result in one run (suite ``gate`` is the quarantined-share check)."""

    suite: str  # "documents" | "chunks" | "embeddings" | "gate"
    expectation: str  # GE expectation type, e.g. "expect_column_values_to_be_between"
    column: str | None
    success: bool
    observed_value: str  # JSON text of GE's observed value (or unexpected percent and values)
    unexpected_count: int


@dataclass
class GateResult:
    """What the gate decided for one batch."""

    quarantined: dict[str, str] = field(default_factory=dict)  # doc_id -> reason(s)
    batch_failures: list[str] = field(default_factory=list)  # non-empty: do not upsert the batch
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    data_docs: str | None = None  # docs_dir/index.html, when docs_dir was given
    seconds: float = 0.0
    import_seconds: float = 0.0  # Great Expectations' import, when this call was the first to need it

    @property
    def ok(self) -> bool:
        """True when the batch may be upserted (quarantined documents left out)."""
        return not self.batch_failures


class QualityGateError(RagopsError):
    """A batch failed a batch-level quality check: it must not be upserted."""

    retryable = False


def enforce(gate: GateResult) -> None:
    """Raise :class:`QualityGateError` listing every batch failure; return when there is none."""
    if gate.batch_failures:
        lines = "\n".join(f"- {m}" for m in gate.batch_failures)
        raise QualityGateError(f"quality gate failed ({len(gate.batch_failures)} batch-level check(s)):\n{lines}")


# ---------------------------------------------------------------------------- suites as code
def _p(name: str) -> dict:
    return {"$PARAMETER": name}


def _suite_expectations(gx: Any) -> dict[str, list]:
    """The three suites. ``meta.level`` says what a failure does: quarantine (row) or fail (batch)."""
    E = gx.expectations
    row = {"level": "row", "notes": "row-level: a failing row quarantines its document"}
    batch = {"level": "batch", "notes": "batch-level: a failure stops the whole batch"}

    def r() -> dict:
        return dict(row)

    def b() -> dict:
        return dict(batch)

    return {
        "documents": [
            *(E.ExpectColumnValuesToNotBeNull(column=c, meta=r()) for c in ("n_chars", "size", "printable_ratio", "utf8_ok")),
            E.ExpectColumnValuesToBeBetween(column="n_chars", min_value=_p("min_chars"), meta=r()),
            E.ExpectColumnValuesToBeBetween(column="size", min_value=1, max_value=_p("max_document_bytes"), meta=r()),
            E.ExpectColumnValuesToBeInSet(column="utf8_ok", value_set=[True], meta=r()),
            E.ExpectColumnValuesToBeBetween(
                column="printable_ratio", min_value=_p("min_printable_ratio"), max_value=1.0, meta=r()
            ),
        ],
        "chunks": [
            *(E.ExpectColumnValuesToNotBeNull(column=c, meta=r()) for c in ("chunk_id", "doc_id", "source_uri", "seq", "tokens")),
            E.ExpectColumnValuesToBeBetween(column="text_chars", min_value=1, meta=r()),
            E.ExpectColumnValuesToBeBetween(
                column="tokens", min_value=_p("min_chunk_tokens"), max_value=_p("max_chunk_tokens"), meta=r()
            ),
            E.ExpectColumnValuesToBeUnique(column="chunk_id", meta=r()),
            E.ExpectColumnMeanToBeBetween(column="text_repeats", max_value=_p("max_duplicate_chunk_rate"), meta=b()),
        ],
        "embeddings": [
            E.ExpectColumnValuesToBeInSet(column="dim", value_set=_p("embedding_dims"), meta=b()),
            E.ExpectColumnValuesToBeInSet(column="finite", value_set=[True], meta=r()),
            E.ExpectColumnValuesToBeBetween(column="norm", min_value=_p("min_norm"), max_value=_p("max_norm"), meta=r()),
            E.ExpectColumnUniqueValueCountToBeBetween(
                column="fingerprint", min_value=_p("min_distinct_vectors"), meta=b()
            ),
            E.ExpectColumnMeanToBeBetween(
                column="near_duplicate", max_value=_p("max_near_duplicate_rate"), meta=b()
            ),
        ],
    }


# ---------------------------------------------------------------------------- the GX context
class _Gx:
    """The process's ephemeral Data Context with the suites, definitions and checkpoints."""

    def __init__(self) -> None:
        apply_privacy_env()  # GX_ANALYTICS_ENABLED=False before GX is imported
        gx_log = logging.getLogger("great_expectations")
        if gx_log.level == logging.NOTSET:  # GX logs dozens of INFO lines at import; keep its warnings
            gx_log.setLevel(logging.WARNING)
        t0 = time.perf_counter()
        import great_expectations as gx
        from great_expectations.checkpoint import UpdateDataDocsAction
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self.import_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        _define_index_builder()
        self.gx = gx
        self.UpdateDataDocsAction = UpdateDataDocsAction
        self.RunIdentifier = RunIdentifier
        config = DataContextConfig(
            # in-memory stores and NO data docs site: GX's default would be a temp folder
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.memory_store = self.context.validation_results_store_name
        source = self.context.data_sources.add_pandas("ragops_quality")
        self.definitions: dict[str, Any] = {}
        for name, expectations in _suite_expectations(gx).items():
            asset = source.add_dataframe_asset(name)
            batch_definition = asset.add_batch_definition_whole_dataframe(name)
            suite = self.context.suites.add(gx.ExpectationSuite(name=SUITE_PREFIX + name))
            for expectation in expectations:
                suite.add_expectation(expectation)
            self.definitions[name] = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=SUITE_PREFIX + name, data=batch_definition, suite=suite)
            )
        self.checkpoints: dict[tuple[str, str | None], Any] = {}
        self.sites: dict[str, tuple[str, str]] = {}  # docs_dir -> (site name, results store name)
        self.setup_seconds = time.perf_counter() - t1

    def site_for(self, docs_dir: Path) -> tuple[str, str]:
        """The data docs site (and its filesystem results store) at docs_dir, added once."""
        key = str(docs_dir)
        if key not in self.sites:
            tag = hashlib.sha256(key.encode()).hexdigest()[:12]
            site, store = f"ragops_docs_{tag}", f"ragops_results_{tag}"
            self.context.add_store(
                store,
                {
                    "class_name": "ValidationResultsStore",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(docs_dir / ".gx_results"),
                    },
                },
            )
            self.context.add_data_docs_site(
                site,
                {
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": key},
                    "site_index_builder": {
                        "class_name": "RagopsSiteIndexBuilder",
                        "module_name": __name__,
                        "validation_results_limit": DOCS_INDEX_LIMIT,
                    },
                    "site_section_builders": {
                        # every run name is a validation (GX files run names containing
                        # "profiling" under a profiling section otherwise)
                        "validations": {"source_store_name": store, "run_name_filter": {"matches_regex": ".*"}},
                        "profiling": "None",
                    },
                },
            )
            self.sites[key] = (site, store)
        return self.sites[key]

    def checkpoint(self, suite: str, site: str | None) -> Any:
        key = (suite, site)
        if key not in self.checkpoints:
            actions = [self.UpdateDataDocsAction(name="update_data_docs", site_names=[site])] if site else []
            name = f"{SUITE_PREFIX}{suite}__{site or 'no_docs'}"
            self.checkpoints[key] = self.context.checkpoints.add(
                self.gx.Checkpoint(
                    name=name,
                    validation_definitions=[self.definitions[suite]],
                    actions=actions,
                    result_format=_RESULT_FORMAT,
                )
            )
        return self.checkpoints[key]

    @contextlib.contextmanager
    def results_store(self, name: str) -> Iterator[None]:
        """Validation results go to the named store for the duration (a docs_dir's own store)."""
        self.context.validation_results_store_name = name
        try:
            yield
        finally:
            self.context.validation_results_store_name = self.memory_store

    def forget_memory_results(self) -> None:
        """Drop results kept in memory: a long-lived process must not grow with every call."""
        store = self.context.stores[self.memory_store]
        for key in store.list_keys():
            store.remove_key(key)


def _define_index_builder() -> None:
    """``RagopsSiteIndexBuilder``: GX's index builder, skipping while ``_DEFER_INDEX`` is set."""
    from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder

    class RagopsSiteIndexBuilder(DefaultSiteIndexBuilder):
        def build(self, skip_and_clean_missing: bool = True, build_index: bool = True):
            if _DEFER_INDEX:
                return None, None
            return super().build(skip_and_clean_missing=skip_and_clean_missing, build_index=build_index)

    globals()["RagopsSiteIndexBuilder"] = RagopsSiteIndexBuilder  # GX instantiates it by name


_GX_LOCK = threading.RLock()
_GX_STATE: _Gx | None = None


def _gx() -> _Gx:
    global _GX_STATE
    with _GX_LOCK:
        if _GX_STATE is None:
            _GX_STATE = _Gx()
            log.info(
                "quality: Great Expectations ready (import %.2fs, context and suites %.2fs)",
                _GX_STATE.import_seconds, _GX_STATE.setup_seconds,
            )
        return _GX_STATE


@contextlib.contextmanager
def _index_deferred(defer: bool) -> Iterator[None]:
    global _DEFER_INDEX
    _DEFER_INDEX = defer
    try:
        yield
    finally:
        _DEFER_INDEX = False


@contextlib.contextmanager
def _docs_lock(docs_dir: Path) -> Iterator[None]:
    """One writer at a time per docs_dir, across processes (Airflow mapped tasks)."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    with open(docs_dir / ".ragops-quality.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- frames
def _documents_frame(documents: list[dict]):
    import pandas as pd

    cols = ["doc_id", "size", "n_chars", "printable_ratio", "utf8_ok"]
    df = pd.DataFrame.from_records([{c: d.get(c) for c in cols} for d in documents], columns=cols)
    df["doc_id"] = df["doc_id"].map(_blank_to_none).astype(object)
    return df


def _chunks_frame(chunks: list[dict]):
    import pandas as pd

    texts = pd.Series([c.get("text") if isinstance(c.get("text"), str) else "" for c in chunks], dtype=object)
    df = pd.DataFrame(
        {
            "chunk_id": [_blank_to_none(c.get("chunk_id")) for c in chunks],
            "doc_id": [_blank_to_none(c.get("doc_id")) for c in chunks],
            "source_uri": [_blank_to_none(c.get("source_uri")) for c in chunks],
            "seq": [c.get("seq") for c in chunks],
            "tokens": [c.get("tokens") for c in chunks],
            "text_chars": [len(t.strip()) for t in texts],
            # 1.0 where the text repeats an earlier chunk's: the mean is the duplicate rate
            "text_repeats": texts.duplicated(keep="first").astype(float).to_numpy() if len(texts) else [],
        }
    )
    for c in ("chunk_id", "doc_id", "source_uri"):
        df[c] = df[c].astype(object)
    return df, int(texts.nunique())


def _embeddings_frame(vectors: np.ndarray, chunks: list[dict], distinct_texts: int):
    import pandas as pd

    n, dim = vectors.shape
    finite = np.isfinite(vectors).all(axis=1) if dim else np.ones(n, dtype=bool)
    norm = np.full(n, np.nan)
    rows = vectors[finite]  # non-finite rows: null (the finite check reports them)
    # summed in float64 without a float64 copy of the run's vectors
    norm[finite] = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64)) if dim else 0.0
    del rows
    block = np.ascontiguousarray(vectors)
    fingerprint = [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in block]
    df = pd.DataFrame(
        {
            "doc_id": pd.Series([_blank_to_none(c.get("doc_id")) for c in chunks], dtype=object),
            "chunk_id": pd.Series([c.get("chunk_id") for c in chunks], dtype=object),
            "dim": np.full(n, dim, dtype=np.int64),
            "finite": finite,
            "norm": norm,
            "fingerprint": fingerprint,
            "near_duplicate": _near_duplicates_of_distinct_texts(vectors, chunks, finite),
        }
    )
    # not constant: two different texts must not give one vector (a broken model does)
    min_distinct = 2 if n > 1 and distinct_texts > 1 else 1
    return df, min_distinct


def near_duplicates(vectors: np.ndarray, finite: np.ndarray | None = None, threshold: float = NEAR_DUPLICATE_COSINE) -> np.ndarray:
    """Bool per row: cosine >= threshold to at least one other row.

    Rows are normalised first (non-finite and zero rows never match). Computed block by block
    on the upper triangle, so memory stays at ``block x n`` floats and the work at n^2/2 dots.
    """
    n = vectors.shape[0]
    flags = np.zeros(n, dtype=bool)
    if n < 2 or vectors.shape[1] == 0:
        return flags
    x = _unit_rows(vectors, finite)
    thr = np.float32(threshold)
    block = _block_rows(n)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        sims = x[lo:hi] @ x[lo:].T  # rows lo..hi against every row from lo on
        np.fill_diagonal(sims, -1.0)  # (i, i) sits on the block's leading diagonal
        hits = sims >= thr
        flags[lo:hi] |= hits.any(axis=1)
        flags[lo:] |= hits.any(axis=0)
    return flags


def _near_duplicates_of_distinct_texts(vectors: np.ndarray, chunks: list[dict], finite: np.ndarray) -> np.ndarray:
    """``near_duplicate`` over the first chunk of each distinct text; repeats are null.

    Identical texts must share a vector (a document stored under two names, a repeated
    disclaimer): that is the chunks suite's duplicate-text rate, not a sign of a degenerate model.
    Near-duplicates among *different* texts are.
    """
    keys = [c.get("text_hash") or hashlib.sha256(str(c.get("text", "")).encode()).hexdigest() for c in chunks]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    reps = np.array(sorted(first.values()), dtype=np.int64)
    column = np.full(vectors.shape[0], np.nan)
    if len(reps) == len(keys):  # every text distinct (the usual case): no copy of the vectors
        column[:] = near_duplicate_column(vectors, finite)
    elif len(reps):
        column[reps] = near_duplicate_column(vectors[reps], finite[reps])
    return column


def near_duplicate_column(vectors: np.ndarray, finite: np.ndarray | None = None) -> np.ndarray:
    """The ``near_duplicate`` column: 1.0 / 0.0 per row; its mean is the near-duplicate rate.

    Up to ``NEAR_DUP_EXACT_MAX`` rows every row is checked (n^2/2 dot products). Above, a fixed
    random sample of ``NEAR_DUP_SAMPLE`` rows is checked against all rows and the other rows are
    null (GX's mean skips nulls), so a 100k-vector run costs 2k x 100k dots, not 5 * 10^9; the
    rate's standard error is then about 1 point.
    """
    n = vectors.shape[0]
    if n <= NEAR_DUP_EXACT_MAX:
        return near_duplicates(vectors, finite).astype(float)
    x = _unit_rows(vectors, finite)
    sample = np.sort(np.random.default_rng(0).choice(n, NEAR_DUP_SAMPLE, replace=False))
    column = np.full(n, np.nan)
    thr = np.float32(NEAR_DUPLICATE_COSINE)
    block = _block_rows(n)
    for lo in range(0, len(sample), block):
        rows = sample[lo : lo + block]
        sims = x[rows] @ x.T
        sims[np.arange(len(rows)), rows] = -1.0  # not against itself
        column[rows] = (sims >= thr).any(axis=1)
    return column


def _block_rows(n: int) -> int:
    """Rows per block of a similarity product against ``n`` rows: memory stays bounded as the
    run grows (1,024 rows against 42,000 were 164 MB of similarities at once)."""
    return max(16, min(_NEAR_DUP_BLOCK, _NEAR_DUP_BLOCK_BYTES // (4 * max(n, 1))))


def _unit_rows(vectors: np.ndarray, finite: np.ndarray | None) -> np.ndarray:
    """float32 copy with unit rows; non-finite and zero rows all zeros (they match nothing)."""
    x = np.array(vectors, dtype=np.float32, copy=True)
    ok = np.isfinite(x).all(axis=1) if finite is None else finite.copy()
    x[~ok] = 0.0
    norms = np.linalg.norm(x, axis=1)
    ok &= norms > 0
    x[ok] /= norms[ok, None]
    x[~ok] = 0.0
    return x


def _blank_to_none(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


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
            fresh = _GX_STATE is None
            g = _gx()
            if fresh:  # start-up, reported apart from the checks
                gate.import_seconds = g.import_seconds
            run = g.RunIdentifier(run_name=run_id, run_time=dt.datetime.now(dt.timezone.utc))
            if docs_path is None:
                try:
                    for name, df in frames.items():
                        results[name] = _validate(g, name, None, df, params, run)
                finally:
                    g.forget_memory_results()
            else:
                site, store = g.site_for(docs_path)
                with _docs_lock(docs_path), g.results_store(store):
                    names = list(frames)
                    for i, name in enumerate(names):
                        with _index_deferred(i < len(names) - 1):
                            results[name] = _validate(g, name, site, frames[name], params, run)
                    if not frames:  # nothing to validate: still leave an index to open
                        g.context.build_data_docs(site_names=[site])
                gate.data_docs = str(docs_path / "index.html")
    gx_seconds = time.perf_counter() - t0 - frame_seconds

    unattributed: list[str] = []
    for name in SUITES:
        if name in results:
            _read_results(name, results[name], gate, unattributed)
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


def _validate(g: _Gx, name: str, site: str | None, df, params: dict, run) -> Any:
    checkpoint = g.checkpoint(name, site)
    result = checkpoint.run(batch_parameters={"dataframe": df}, expectation_parameters=params, run_id=run)
    (suite_result,) = result.run_results.values()
    return suite_result


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


__all__ = [
    "ExpectationOutcome",
    "GateResult",
    "QualityGateError",
    "Thresholds",
    "check_quality",
    "enforce",
    "near_duplicate_column",
    "near_duplicates",
]
