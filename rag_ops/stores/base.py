"""The VectorStore interface. Callers never branch on the backend.

Stored per chunk (same names in every store, so LangChain's Chroma and Milvus classes can read
the collections): ``id``, the vector, ``text`` (Chroma: the document), and the metadata
``doc_id``, ``source_uri``, ``seq``, ``page``, ``section``. Scores returned by :meth:`query`
are cosine similarities (higher is closer) in every store.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import numpy as np

from rag_ops.errors import StoreError

METADATA_FIELDS = ("doc_id", "source_uri", "seq", "page", "section")


@dataclass(frozen=True)
class StoredChunk:
    """What a store keeps for one chunk, besides its vector."""

    id: str
    text: str
    doc_id: str
    source_uri: str
    seq: int
    page: int | None = None
    section: str | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # cosine similarity, higher is closer
    text: str
    doc_id: str
    source_uri: str
    seq: int
    page: int | None
    section: str | None

    def as_dict(self) -> dict:
        return asdict(self)


class VectorStore(abc.ABC):
    """One collection in one vector store."""

    name: str  # "chroma" | "milvus"
    collection: str

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where the store is (a path or host:port), for messages. Never holds credentials."""

    @contextlib.contextmanager
    def guard(self, operation: str) -> Iterator[None]:
        """Turn any backend failure into a StoreError naming the store, its address and the step."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            detail = " ".join(str(exc).split())[:300]
            raise StoreError(
                f"{self.name} store at {self.address} failed to {operation} "
                f"(collection {self.collection!r}): {type(exc).__name__}: {detail}"
            ) from exc

    @abc.abstractmethod
    def ensure_collection(self, dim: int) -> None:
        """Create the collection if it does not exist (idempotent)."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the collection exists."""

    @abc.abstractmethod
    def upsert(self, chunks: Sequence[StoredChunk], vectors: np.ndarray) -> int:
        """Insert or overwrite chunks by id. Returns how many were written."""

    @abc.abstractmethod
    def delete_ids(self, ids: Sequence[str]) -> int:
        """Delete chunks by id. Returns how many were asked to be deleted."""

    @abc.abstractmethod
    def ids_by_doc(self, doc_ids: Sequence[str]) -> dict[str, set[str]]:
        """Chunk ids currently stored for each of the given documents."""

    @abc.abstractmethod
    def all_ids(self) -> set[str]:
        """Every chunk id in the collection."""

    @abc.abstractmethod
    def query(self, vector: np.ndarray, k: int = 5) -> list[Hit]:
        """The k nearest chunks to a (normalised) query vector, closest first."""

    @abc.abstractmethod
    def get_texts(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Stored text and document of chunks by id: ``{chunk id: (text, doc_id)}``.

        Ids the collection does not hold are absent from the result (not an error).
        """

    @abc.abstractmethod
    def count(self) -> int:
        """Number of vectors in the collection (0 when it does not exist)."""

    @abc.abstractmethod
    def drop(self) -> None:
        """Drop the collection."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the client (embedded stores hold a file lock)."""

    # convenience built on the primitives ---------------------------------------------
    def list_doc_ids(self, doc_id: str) -> set[str]:
        """Chunk ids stored for one document."""
        return self.ids_by_doc([doc_id]).get(doc_id, set())

    def delete_docs(self, doc_ids: Sequence[str]) -> int:
        """Delete every chunk of the given documents. Returns how many chunks were removed."""
        ids = sorted(set().union(*self.ids_by_doc(doc_ids).values())) if doc_ids else []
        return self.delete_ids(ids) if ids else 0

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
