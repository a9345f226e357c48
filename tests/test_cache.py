"""The embedding cache's two backends, one contract: a SQLite file and the catalog database's
table (SQLite and the local PostgreSQL, where every worker shares it)."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from rag_ops.cache import SqlCache, SqliteCache, open_cache
from rag_ops.config import Settings

BACKENDS = ["sqlite-file", "catalog-sqlite", "catalog-postgres"]


@pytest.fixture(params=BACKENDS)
def cache(request, tmp_path):
    if request.param == "sqlite-file":
        c = SqliteCache(tmp_path / "cache.db")
    elif request.param == "catalog-sqlite":
        c = SqlCache(f"sqlite:///{tmp_path / 'catalog.db'}")
    else:
        c = SqlCache(request.getfixturevalue("pg_url"))
    yield c
    c.close()


def _vectors(n: int, dim: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"h{i:05d}": rng.standard_normal(dim).astype(np.float32) for i in range(n)}


def test_put_then_get_round_trips_exact_float32(cache):
    items = _vectors(1200)  # more than one SQLite parameter chunk
    cache.put_many("m1", items)
    got = cache.get_many("m1", list(items) + ["absent"])
    assert set(got) == set(items)
    assert all(got[h].dtype == np.float32 and np.array_equal(got[h], v) for h, v in items.items())
    assert cache.count("m1") == 1200 and cache.count() == 1200


def test_models_are_separate_keys(cache):
    cache.put_many("m1", _vectors(3, seed=1))
    cache.put_many("m2", _vectors(2, seed=2))
    assert set(cache.get_many("m2", ["h00000", "h00001", "h00002"])) == {"h00000", "h00001"}
    assert cache.count("m1") == 3 and cache.count("m2") == 2
    assert np.array_equal(cache.get_many("m1", ["h00000"])["h00000"], _vectors(1, seed=1)["h00000"])


def test_a_cached_hash_keeps_its_first_vector_and_empty_calls_are_fine(cache):
    first = _vectors(2, seed=3)
    cache.put_many("m", first)
    cache.put_many("m", _vectors(2, seed=4))  # same keys again (another worker encoded them too)
    assert np.array_equal(cache.get_many("m", ["h00001"])["h00001"], first["h00001"])
    cache.put_many("m", {})
    assert cache.get_many("m", []) == {} and cache.count("m") == 2


def test_postgres_cache_gets_and_puts_a_batch_in_one_round_trip(pg_url):
    cache = SqlCache(pg_url)
    statements: list[str] = []
    sa.event.listen(cache.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        items = _vectors(2000)
        cache.put_many("m", items)
        assert len(statements) == 1 and "unnest" in statements[0]
        statements.clear()
        assert len(cache.get_many("m", list(items))) == 2000
        assert len(statements) == 1 and "ANY" in statements[0]
    finally:
        cache.close()


def test_open_cache_follows_the_catalog(tmp_path, pg_url):
    embedded = open_cache(Settings(data_dir=tmp_path))
    shared = open_cache(Settings(data_dir=tmp_path, catalog_url=pg_url))
    explicit = open_cache(Settings(data_dir=tmp_path, catalog_url=pg_url, embedding_cache="sqlite"))
    try:
        assert isinstance(embedded, SqliteCache) and isinstance(explicit, SqliteCache)
        assert isinstance(shared, SqlCache)
        # a second "host" (another data dir) with the same catalog sees the same vectors
        shared.put_many("m", _vectors(5))
        other = open_cache(Settings(data_dir=tmp_path / "other-host", catalog_url=pg_url))
        assert len(other.get_many("m", list(_vectors(5)))) == 5
        other.close()
    finally:
        for c in (embedded, shared, explicit):
            c.close()
