"""The embedding cache: (model id, sha256 of the chunk text) -> float32 vector.

An unchanged chunk is never encoded twice: not on a re-run, not after an edit elsewhere in its
document, not when a re-index writes a fresh collection with the same model. Two backends
behind one interface, chosen by the ``embedding_cache`` setting (:func:`open_cache` is the one
place that branches):

* :class:`SqliteCache`: a SQLite file in the data dir (WAL; safe for the parallel processes of
  one machine). The embedded default.
* :class:`SqlCache`: the ``embedding_cache`` table (``sql/006_embedding_cache.sql``) of the
  catalog's database. With a PostgreSQL catalog every worker and every new pod shares it; the
  default (``auto``) whenever the catalog is a server.

Both get and put a whole batch in one round trip (PostgreSQL: ``= ANY(array)`` and ``unnest``).
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa

from rag_ops.catalog import short_error
from rag_ops.errors import CatalogError

if TYPE_CHECKING:
    from rag_ops.config import Settings

__all__ = ["EmbeddingCache", "SqlCache", "SqliteCache", "open_cache"]


class EmbeddingCache(ABC):
    """(model id, text hash) -> vector."""

    @abstractmethod
    def get_many(self, model_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``hashes`` (float32, read-only arrays)."""

    @abstractmethod
    def put_many(self, model_id: str, items: dict[str, np.ndarray]) -> None:
        """Store vectors; a hash already cached keeps its vector (same model, same text)."""

    @abstractmethod
    def count(self, model_id: str | None = None) -> int: ...

    @abstractmethod
    def close(self) -> None: ...


def _rows(items: dict[str, np.ndarray]) -> list[tuple[str, int, bytes]]:
    return [(h, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes()) for h, v in items.items()]


class SqliteCache(EmbeddingCache):
    """The cache as a SQLite file of its own (one machine)."""

    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings ("
                " model_id TEXT NOT NULL, text_hash TEXT NOT NULL, dim INTEGER NOT NULL,"
                " vector BLOB NOT NULL, PRIMARY KEY (model_id, text_hash))"
            )
            self._conn.commit()

    def get_many(self, model_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        with self._lock:
            for i in range(0, len(unique), 500):  # SQLite's bound-parameter limit
                part = unique[i : i + 500]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    f"SELECT text_hash, vector FROM embeddings WHERE model_id = ? AND text_hash IN ({marks})",
                    [model_id, *part],
                ).fetchall()
                for h, blob in rows:
                    found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._conn.executemany(
                "INSERT OR IGNORE INTO embeddings (model_id, text_hash, dim, vector) VALUES (?, ?, ?, ?)",
                [(model_id, h, d, b) for h, d, b in _rows(items)],
            )
            self._conn.commit()

    def count(self, model_id: str | None = None) -> int:
        with self._lock:
            if model_id is None:
                return self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
            return self._conn.execute("SELECT COUNT(*) FROM embeddings WHERE model_id = ?", [model_id]).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SqlCache(EmbeddingCache):
    """The cache as the ``embedding_cache`` table of the catalog's database (shared by every worker).

    Raises:
        CatalogError: the database cannot be reached (retryable), from any method.
    """

    def __init__(self, url: str):
        from rag_ops.catalog import Catalog

        self._catalog = Catalog(url)
        self._catalog.migrate()
        self.engine = self._catalog.engine
        self._pg = self._catalog.dialect == "postgresql"

    def get_many(self, model_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(hashes))
        if not unique:
            return {}
        found: dict[str, np.ndarray] = {}
        try:
            with self.engine.connect() as conn:
                if self._pg:
                    parts = [unique]  # one round trip: text_hash = ANY(array)
                    query = sa.text("SELECT text_hash, vector FROM embedding_cache WHERE model_id = :m AND text_hash = ANY(:h)")
                else:
                    parts = [unique[i : i + 500] for i in range(0, len(unique), 500)]
                    query = sa.text(
                        "SELECT text_hash, vector FROM embedding_cache WHERE model_id = :m AND text_hash IN :h"
                    ).bindparams(sa.bindparam("h", expanding=True))
                for part in parts:
                    for h, blob in conn.execute(query, {"m": model_id, "h": part}):
                        found[h] = np.frombuffer(bytes(blob), dtype=np.float32)
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"embedding cache read failed: {short_error(exc)}") from exc
        return found

    def put_many(self, model_id: str, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        rows = _rows(items)
        try:
            with self.engine.begin() as conn:
                if self._pg:  # one round trip for the whole batch
                    conn.execute(
                        sa.text(
                            "INSERT INTO embedding_cache (model_id, text_hash, dim, vector) "
                            "SELECT :m, h, d, v FROM unnest(CAST(:h AS VARCHAR[]), CAST(:d AS INTEGER[]), "
                            "CAST(:v AS BYTEA[])) AS t(h, d, v) ON CONFLICT (model_id, text_hash) DO NOTHING"
                        ),
                        {"m": model_id, "h": [r[0] for r in rows], "d": [r[1] for r in rows], "v": [r[2] for r in rows]},
                    )
                else:
                    conn.execute(
                        sa.text(
                            "INSERT OR IGNORE INTO embedding_cache (model_id, text_hash, dim, vector) VALUES (:m, :h, :d, :v)"
                        ),
                        [{"m": model_id, "h": h, "d": d, "v": b} for h, d, b in rows],
                    )
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"embedding cache write failed: {short_error(exc)}") from exc

    def count(self, model_id: str | None = None) -> int:
        with self.engine.connect() as conn:
            if model_id is None:
                return int(conn.execute(sa.text("SELECT COUNT(*) FROM embedding_cache")).scalar_one())
            return int(
                conn.execute(sa.text("SELECT COUNT(*) FROM embedding_cache WHERE model_id = :m"), {"m": model_id}).scalar_one()
            )

    def close(self) -> None:
        self._catalog.close()


def open_cache(settings: "Settings") -> EmbeddingCache:
    """The embedding cache of the settings (``embedding_cache``: auto | sqlite | catalog)."""
    if settings.cache_backend == "catalog":
        return SqlCache(settings.cache_db_url)
    return SqliteCache(settings.cache_path)
