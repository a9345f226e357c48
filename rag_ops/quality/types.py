"""The quality gate's public types: its thresholds, its decision, its error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from rag_ops.errors import RagopsError

SUITES = ("documents", "chunks", "embeddings")


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
    # with check_quality(defer_docs=True): builds the Data Docs pages of this call's results
    build_docs: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the batch may be upserted (quarantined documents left out)."""
        return not self.batch_failures


class QualityGateError(RagopsError):
    """A batch failed a batch-level quality check: it must not be upserted."""

    retryable = False


def enforce(gate: GateResult) -> None:
    """Raise :class:`QualityGateError` listing every batch failure; return when there is none."""
    raise_for_batch_failures(gate.batch_failures)


def raise_for_batch_failures(batch_failures: list[str]) -> None:
    """:func:`enforce` for a gate's failure messages alone."""
    if batch_failures:
        lines = "\n".join(f"- {m}" for m in batch_failures)
        raise QualityGateError(f"quality gate failed ({len(batch_failures)} batch-level check(s)):\n{lines}")

