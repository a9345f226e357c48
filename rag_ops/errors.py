"""The one exception hierarchy of ragops.

::

    RagopsError                      base; ``retryable`` says whether trying again can help
    ├── ConfigError                  a setting is invalid (never retryable)
    ├── SourceError                  listing or reading the source failed
    │   ├── DocumentGone             a listed document vanished before it could be read
    │   └── DocumentChanged          a document changed while it was read (read again next run)
    ├── DocumentError                one document cannot be indexed; the batch goes on
    │   ├── UnsupportedFormat        no parser for this file type
    │   ├── ParseError               the parser failed or found no text
    │   └── DocumentTooLarge         over a size cap, refused before parsing
    ├── EmbeddingError               the model could not be loaded or failed to encode
    ├── QualityGateError             a batch-level quality expectation failed (rag_ops.quality)
    ├── RecallRegression             retrieval recall fell below its baseline or floor (rag_ops.evaluate)
    ├── StoreError                   a vector store refused or could not be reached (retryable)
    ├── CatalogError                 the SQL catalog failed
    ├── StagingError                 staged files could not be written or read (retryable)
    │   └── StagingMissing           a staged file is not there (not retryable)
    ├── IndexSwapped                 a re-index swapped versions while a run wrote the old one
    ├── IndexLocked                  another re-index of the index is running (fail fast)
    ├── BudgetExceeded               a re-index's estimate is over its budget (nothing encoded)
    └── GateFailed                   a new index version failed its quality or recall gate

Messages say what was received and never contain secrets or document text.
The Airflow adapter (``rag_ops.airflow``) is the only place that translates these into
Airflow's exceptions: retryable errors become ``AirflowException`` (Airflow retries), the
others ``AirflowFailException`` (fail at once).
"""

from __future__ import annotations


class RagopsError(Exception):
    """Base of every error raised by ragops."""

    retryable: bool = False


class ConfigError(RagopsError):
    """A setting has an invalid value."""


class SourceError(RagopsError):
    """Listing or reading a source failed."""

    retryable = True


class DocumentGone(SourceError):
    """A document listed earlier no longer exists."""

    retryable = False


class DocumentChanged(SourceError):
    """A document changed while it was being read; its bytes are not trusted this run."""

    retryable = False


class DocumentError(RagopsError):
    """A single document cannot be indexed. Recorded per document; never fails a batch."""


class UnsupportedFormat(DocumentError):
    """There is no parser for this file type."""


class ParseError(DocumentError):
    """The parser failed, or the document holds no extractable text."""


class DocumentTooLarge(DocumentError):
    """The document exceeds a configured size cap."""


class EmbeddingError(RagopsError):
    """The embedding model failed to load or to encode."""


class RecallRegression(RagopsError):
    """Retrieval quality on a golden set fell below its recent baseline or an absolute floor.

    Not retryable: scoring the same index again gives the same numbers. ``failures`` holds one
    readable line per metric that failed.
    """

    def __init__(self, message: str, failures: list[str] | None = None):
        super().__init__(message)
        self.failures = list(failures or [])


class StoreError(RagopsError):
    """A vector store could not be reached or refused a request."""

    retryable = True


class CatalogError(RagopsError):
    """The SQL catalog failed."""

    retryable = True


class StagingError(RagopsError):
    """Staged files (plans, batches, chunks, vectors) could not be written or read."""

    retryable = True


class StagingMissing(StagingError):
    """A staged file is not there: the task that writes it did not run (or its run was cleaned)."""

    retryable = False


class IndexSwapped(RagopsError):
    """A re-index swapped another index version live while a run was writing the old one.

    Not retryable for the same run: its writes went to the retired version; the next run that
    lists the same documents (the CLI, a full sync, or the Airflow run cleared: a scheduled run
    lists only its own interval) applies them to the new live version (mostly from the cache).
    """


class IndexLocked(RagopsError):
    """Another re-index of the same index holds the lock (fail fast: the message names it)."""


class BudgetExceeded(RagopsError):
    """A re-index's estimate is over the token or time budget; nothing was encoded."""


class GateFailed(RagopsError):
    """A new index version failed its quality or recall gate; the live version keeps serving."""
