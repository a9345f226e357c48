"""Heavy resources of one process (catalog, tokenizer, model, embedding cache, store clients)."""

from __future__ import annotations

from typing import Any

from rag_ops.config import Settings


class Runtime:
    """Heavy resources (catalog, tokenizer, model, cache, store clients) opened once per process."""

    def __init__(self, settings: Settings, concurrent_encoders: int = 1, target: dict | None = None):
        self.settings = settings
        self.concurrent_encoders = concurrent_encoders  # processes encoding at once (threads share the cores)
        self.target = target  # WriteTarget.as_dict(): the physical collections written (None: resolve live)
        self._catalog = None
        self._chunker = None
        self._embedder = None
        self._cache = None
        self._steps = None
        self._stores: dict[str, Any] = {}

    @property
    def catalog(self):
        if self._catalog is None:
            from rag_ops.catalog import Catalog

            self._catalog = Catalog(self.settings.catalog_db_url)
            self._catalog.migrate()
        return self._catalog

    @property
    def chunker(self):
        if self._chunker is None:
            from rag_ops.chunk import make_chunker

            self._chunker = make_chunker(self.settings)
        return self._chunker

    @property
    def steps(self):
        """The user's document steps (``document_steps``), imported once per process."""
        if self._steps is None:
            from rag_ops.steps import load_steps

            self._steps = load_steps(self.settings.document_steps)
        return self._steps

    @property
    def embedder(self):
        if self._embedder is None:
            from rag_ops.embed import make_embedder

            self._embedder = make_embedder(self.settings, self.concurrent_encoders)
        return self._embedder

    @property
    def cache(self):
        if self._cache is None:
            from rag_ops.embed import open_cache

            self._cache = open_cache(self.settings)
        return self._cache

    def store(self, name: str):
        if name not in self._stores:
            from rag_ops.stores import open_store

            t = self.target or {}
            collection = (t.get("collections") or {}).get(name)
            alias = t["index_name"] if collection and t.get("live") else None
            self._stores[name] = open_store(name, self.settings, collection=collection, alias=alias)
        return self._stores[name]

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


