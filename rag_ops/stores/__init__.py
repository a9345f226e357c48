"""Vector stores. :func:`open_store` is the only place that branches on the backend."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Iterator

from rag_ops.errors import ConfigError
from rag_ops.stores.base import Hit, StoredChunk, VectorStore

if TYPE_CHECKING:
    from rag_ops.config import Settings

__all__ = ["Hit", "StoredChunk", "VectorStore", "embedded_write_lock", "is_embedded", "open_store"]


def open_store(name: str, settings: "Settings", collection: str | None = None, alias: str | None = None) -> VectorStore:
    """The store called ``name`` ("chroma" or "milvus").

    Args:
        collection: the physical collection; default the live version of ``settings.collection``
            (:func:`rag_ops.versions.live_collection`, resolved from the catalog now).
        alias: Milvus only: point this alias at the collection when it is created and the alias
            does not exist yet (the live version of a new index).
    """
    if collection is None:
        from rag_ops.versions import live_collection

        collection = live_collection(settings, name)
    if name == "chroma":
        from rag_ops.stores.chroma import ChromaStore

        return ChromaStore(
            collection,
            path=str(settings.chroma_path),
            host=settings.chroma_host,
            port=settings.chroma_port,
            ssl=settings.chroma_ssl,
            token=settings.chroma_token.reveal(),
            hnsw_m=settings.chroma_hnsw_m,
            ef_construction=settings.chroma_hnsw_ef_construction,
            ef_search=settings.chroma_hnsw_ef_search,
        )
    if name == "milvus":
        from rag_ops.stores.milvus import MilvusStore

        return MilvusStore(
            collection,
            uri=settings.milvus_target,
            token=settings.milvus_token.reveal(),
            index_type=settings.milvus_index_type,
            index_params=json.loads(settings.milvus_index_params),
            search_params=json.loads(settings.milvus_search_params),
            alias=alias,
        )
    raise ConfigError(f"unknown store {name!r}; known: chroma, milvus")


def is_embedded(name: str, settings: "Settings") -> bool:
    """Whether ``name`` is an embedded store (Chroma persistent dir, Milvus Lite file) of these settings."""
    if name == "chroma":
        return not settings.chroma_host
    return not settings.milvus_is_server


@contextlib.contextmanager
def embedded_write_lock(name: str, settings: "Settings", timeout: float = 3600.0) -> Iterator[None]:
    """Serialise the writers of an embedded store across processes on this machine.

    Chroma's persistent dir and a Milvus Lite file take one writer at a time; the ingest DAG's
    upsert tasks, a re-index building a version and the CLI may otherwise meet on the same files.
    A lock file per store under ``<data_dir>/locks/`` makes them take turns (servers need none).

    Raises:
        StoreError: the lock was not free within ``timeout`` seconds (retryable).
    """
    if not is_embedded(name, settings):
        yield
        return
    from filelock import FileLock, Timeout

    from rag_ops.errors import StoreError

    path = settings.data_dir / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise StoreError(f"another process has been writing the embedded {name} store for over {timeout:.0f}s ({path})") from exc
    try:
        yield
    finally:
        lock.release()
