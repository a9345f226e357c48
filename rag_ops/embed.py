"""Texts -> normalised vectors, batched, with a durable embedding cache.

The cache (:mod:`rag_ops.cache`) is keyed by (model id, sha256 of the chunk text), so an
unchanged chunk is never encoded twice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag_ops.cache import EmbeddingCache, SqliteCache, open_cache  # noqa: F401 - re-exported
from rag_ops.encoders import model_dimension  # noqa: F401 - re-exported
from rag_ops.errors import EmbeddingError

if TYPE_CHECKING:
    from rag_ops.config import Settings

log = logging.getLogger(__name__)


_MODELS: dict[str, object] = {}
_MODELS_LOCK = threading.Lock()


def load_model(model_path: str):
    """The torch SentenceTransformer at ``model_path``, loaded offline once per process (the
    benchmarks' raw-encode reference; the pipeline encodes through :class:`Embedder`).

    Raises:
        EmbeddingError: the path holds no loadable model.
    """
    with _MODELS_LOCK:
        if model_path not in _MODELS:
            t0 = time.perf_counter()
            try:
                from rag_ops.encoders import sentence_transformer

                _MODELS[model_path] = sentence_transformer(model_path)
            except Exception as exc:
                raise EmbeddingError(
                    f"cannot load the embedding model from {model_path!r}: {type(exc).__name__}: {exc}"
                ) from exc
            log.info("loaded embedding model from %s in %.1fs", model_path, time.perf_counter() - t0)
        return _MODELS[model_path]


@dataclass
class EmbedResult:
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    encoded: int  # texts sent to the model
    cache_hits: int  # texts served from the cache
    seconds: float
    encoded_hashes: frozenset[str] = frozenset()  # text hashes of the texts sent to the model
    encode_seconds: float = 0.0  # the model's forward passes alone (no load, no cache look-ups)
    load_seconds: float = 0.0  # loading the model, when this call was the first to need it


class Embedder:
    """A local sentence-transformers model behind one encode backend (:mod:`rag_ops.encoders`),
    loaded offline on first use."""

    def __init__(
        self, model_path: str, model_id: str, batch_size: int = 32, backend: str = "torch", threads: int = 0,
        cache_dir: Path | None = None,
    ):
        self.model_path = model_path
        self.model_id = model_id  # includes the backend (encoders.model_id_suffix)
        self.batch_size = batch_size
        self.backend = backend
        self.threads = threads  # intra-op threads while encoding; 0 leaves the runtime's default
        self.cache_dir = cache_dir or Path.home() / ".ragops" / "models"  # where ONNX exports are kept
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            from rag_ops.encoders import load_encoder

            self._encoder = load_encoder(self.model_path, self.backend, self.cache_dir, self.threads)
        return self._encoder

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode texts (no cache), normalised to unit length, float32."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encoder = self.encoder
        try:
            vectors = encoder.encode(texts, self.batch_size)
        except Exception as exc:
            raise EmbeddingError(f"encoding {len(texts)} texts failed: {type(exc).__name__}: {exc}") from exc
        return np.asarray(vectors, dtype=np.float32)

    def embed(self, texts: list[str], hashes: list[str], cache: EmbeddingCache | None) -> EmbedResult:
        """Vectors for ``texts``: from the cache where present, encoded (and cached) otherwise.

        Duplicate texts in one call are encoded once.
        """
        t0 = time.perf_counter()
        cached = cache.get_many(self.model_id, hashes) if cache is not None else {}
        missing: dict[str, str] = {}
        for h, t in zip(hashes, texts):
            if h not in cached and h not in missing:
                missing[h] = t
        fresh: dict[str, np.ndarray] = {}
        encode_seconds = load_seconds = 0.0
        if missing:
            if self._encoder is None:  # the load is its own figure: tokens/s must not include it
                t_load = time.perf_counter()
                _ = self.encoder
                load_seconds = time.perf_counter() - t_load
            t_model = time.perf_counter()
            encoded = self.encode(list(missing.values()))
            encode_seconds = time.perf_counter() - t_model
            fresh = dict(zip(missing.keys(), encoded))
            if cache is not None:
                cache.put_many(self.model_id, fresh)
        if not texts:
            vectors = np.zeros((0, 0), dtype=np.float32)
        else:
            vectors = np.stack([cached[h] if h in cached else fresh[h] for h in hashes]).astype(np.float32)
        hits = sum(1 for h in hashes if h in cached)
        return EmbedResult(
            vectors, encoded=len(missing), cache_hits=hits, seconds=time.perf_counter() - t0,
            encoded_hashes=frozenset(missing), encode_seconds=encode_seconds, load_seconds=load_seconds,
        )


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc only; a no-op elsewhere).

    Encoding batches of changing sequence lengths leaves the heap fragmented: measured here, the
    RSS of a 600-document ingest crept up batch after batch without this call.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def make_embedder(settings: "Settings", concurrent_encoders: int = 1) -> Embedder:
    """The embedder of the settings.

    Args:
        concurrent_encoders: processes that may encode at the same time on this machine (Airflow
            runs ``parallel_batches`` mapped tasks at once). With ``embed_threads`` 0 each gets
            an equal share of the cores: torch's threads wait for each other at every operation,
            so two processes each using every core run far slower than two using half each.
    """
    threads = settings.embed_threads
    if threads == 0 and concurrent_encoders > 1:
        threads = max(1, available_cores() // concurrent_encoders)
    return Embedder(
        settings.model_path, settings.model_id, settings.embed_batch_size, settings.encoder_backend, threads,
        settings.model_cache_path,
    )


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
