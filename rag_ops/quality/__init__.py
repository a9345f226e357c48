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
hold). Writes to one ``docs_dir`` are serialised across processes with a file lock. A call builds
its pages once, after its last suite (or leaves them to ``GateResult.build_docs`` with
``defer_docs``); their Jinja templates are kept compiled beside the site.
GX 1.24 sends no usage statistics (it has no analytics client); ``analytics_enabled`` is set to
False anyway and ``GX_ANALYTICS_ENABLED=False`` is in the environment (rag_ops.config).
"""

from rag_ops.quality.frames import NEAR_DUPLICATE_COSINE, near_duplicate_column, near_duplicates
from rag_ops.quality.gate import check_quality
from rag_ops.quality.types import SUITES, ExpectationOutcome, GateResult, QualityGateError, Thresholds, enforce

__all__ = [
    "NEAR_DUPLICATE_COSINE",
    "SUITES",
    "ExpectationOutcome",
    "GateResult",
    "QualityGateError",
    "Thresholds",
    "check_quality",
    "enforce",
    "near_duplicate_column",
    "near_duplicates",
]
