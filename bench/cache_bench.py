"""Embedding cache benchmark: the SQLite file against the catalog's PostgreSQL table, side by side.

    .venv/bin/python bench/cache_bench.py [--vectors 10000] [--batch 500] [--docs 500] [--beir DIR]

1. **Hits per second**: ``--vectors`` random 384-d float32 vectors are put, then read back in
   batches of ``--batch`` (one ``get_many`` per batch, as a processed batch does), three rounds
   each, for ``SqliteCache`` (a file in a temporary folder) and ``SqlCache`` on the local
   PostgreSQL (a fresh schema). Best round of each, and PostgreSQL ÷ SQLite.
2. **An all-hits ingest**: ``--docs`` documents (SciFact from ../shared/datasets when present)
   are ingested once (the model encodes; both caches are filled with the same vectors), then
   ingested into a fresh index (new catalog, new collections) with each cache: every chunk is a
   cache hit, nothing is encoded. Wall time of each and its ``embed`` stage.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from ingest_bench import DEFAULT_BEIR, build_corpus  # noqa: E402
from rag_ops.cache import SqlCache, SqliteCache  # noqa: E402
from rag_ops.config import Settings  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_schema() -> tuple[str, callable]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    eng = sa.create_engine(PG)
    with eng.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with eng.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        eng.dispose()

    return f"{PG}?options=-csearch_path%3D{schema}", drop


def hits_per_second(cache, n: int, batch: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    items = {f"{i:064x}": rng.standard_normal(384).astype(np.float32) for i in range(n)}
    keys = list(items)
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        cache.put_many("bench-model", {k: items[k] for k in keys[i : i + batch]})
    put_rate = n / (time.perf_counter() - t0)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        found = 0
        for i in range(0, n, batch):
            found += len(cache.get_many("bench-model", keys[i : i + batch]))
        assert found == n
        best = max(best, n / (time.perf_counter() - t0))
    return best, put_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vectors", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--docs", type=int, default=500)
    ap.add_argument("--beir", type=Path, default=DEFAULT_BEIR if DEFAULT_BEIR.exists() else None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragops-cache-bench-"))
    drops = []
    try:
        # 1. hits per second
        url, drop = pg_schema()
        drops.append(drop)
        sqlite, pg = SqliteCache(work / "cache.db"), SqlCache(url)
        rows = {}
        for name, cache in (("SQLite file", sqlite), ("PostgreSQL table", pg)):
            rows[name] = hits_per_second(cache, args.vectors, args.batch)
            cache.close()
        print(f"{args.vectors:,} vectors (384-d), batches of {args.batch}:")
        for name, (hits, puts) in rows.items():
            print(f"  {name:17} {hits:10,.0f} hits/s  {puts:10,.0f} puts/s")
        print(f"  PostgreSQL / SQLite: hits {rows['PostgreSQL table'][0] / rows['SQLite file'][0]:.2f}, "
              f"puts {rows['PostgreSQL table'][1] / rows['SQLite file'][1]:.2f}")

        # 2. an all-hits ingest with each cache
        from rag_ops.pipeline import ingest

        corpus = work / "corpus"
        build_corpus(corpus, args.docs, args.beir)
        base = Settings(data_dir=work / "first", source=str(corpus), stores=("milvus",))
        first = ingest(base)  # the model encodes; its SQLite cache is filled
        url2, drop2 = pg_schema()
        drops.append(drop2)
        src, dst = SqliteCache(base.cache_path), SqlCache(url2)
        with sa.create_engine(f"sqlite:///{base.cache_path}").connect() as conn:
            hashes = [r[0] for r in conn.execute(sa.text("SELECT text_hash FROM embeddings"))]
        dst.put_many(base.model_id, src.get_many(base.model_id, hashes))
        src.close()
        dst.close()
        print(f"\nall-hits ingest of {first['new']} documents ({first['chunks']} chunks; first run {first['seconds']['total']} s, "
              f"{first['encoded']} encoded):")
        for name, extra in (
            ("SQLite file", {"embedding_cache": "sqlite"}),
            ("PostgreSQL table", {"embedding_cache": "catalog", "embedding_cache_url": url2}),
        ):
            tag = name.split()[0].lower()
            s = Settings(data_dir=work / tag, source=str(corpus), stores=("milvus",), collection=f"bench_{tag}", **extra)
            if tag == "sqlite":
                s.cache_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(base.cache_path, s.cache_path)
            rep = ingest(s)
            assert rep["encoded"] == 0 and rep["cache_hits"] == first["chunks"], rep
            print(f"  {name:17} total {rep['seconds']['total']:6.2f} s, embed stage {rep['seconds'].get('embed', 0):6.3f} s, "
                  f"{rep['cache_hits']} hits, 0 encoded")
    finally:
        for drop in drops:
            drop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
