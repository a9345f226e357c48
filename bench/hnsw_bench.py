"""What Chroma's HNSW ef_construction costs and buys: ragops' 200 against Chroma's default 100.

    .venv/bin/python bench/hnsw_bench.py CACHE_DB [--queries 300] [--rounds 2]

CACHE_DB is an embedding cache file (``<data_dir>/embedding_cache.db``) of a real ingest, e.g. the
one ``bench/encode_bench.py`` leaves for SciFact. Its vectors are upserted into fresh embedded
Chroma collections (cosine, M 16, ef_search 200) built with each ef_construction, in alternating
rounds in this one process; the figure is the median upsert time. Recall@10 of the index against
an exact search (numpy) for ``--queries`` of the vectors shows what the slower build buys.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rag_ops.config  # noqa: E402,F401  (applies the privacy env first)


def load_vectors(path: Path) -> np.ndarray:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT dim, vector FROM embeddings ORDER BY text_hash").fetchall()
    return np.stack([np.frombuffer(blob, dtype=np.float32, count=dim) for dim, blob in rows])


def build(vectors: np.ndarray, ef_construction: int, root: Path):
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(root), settings=Settings(anonymized_telemetry=False))
    col = client.create_collection(
        f"ef{ef_construction}",
        configuration={"hnsw": {"space": "cosine", "max_neighbors": 16, "ef_construction": ef_construction, "ef_search": 200}},
        embedding_function=None,
    )
    ids = [str(i) for i in range(len(vectors))]
    t0 = time.perf_counter()
    for lo in range(0, len(vectors), 1000):
        col.add(ids=ids[lo : lo + 1000], embeddings=vectors[lo : lo + 1000])
    return col, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache_db", type=Path)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    vectors = load_vectors(args.cache_db)
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(len(vectors), size=min(args.queries, len(vectors)), replace=False)]
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    times: dict[int, list[float]] = {100: [], 200: []}
    recall: dict[int, float] = {}
    for r in range(args.rounds):
        for ef in (100, 200) if r % 2 == 0 else (200, 100):
            root = Path(tempfile.mkdtemp(prefix=f"hnsw{ef}-"))
            try:
                col, seconds = build(vectors, ef, root)
                times[ef].append(seconds)
                got = col.query(query_embeddings=queries, n_results=10, include=[])["ids"]
                recall[ef] = float(np.mean([len(set(map(int, g)) & set(e)) / 10 for g, e in zip(got, exact.tolist())]))
            finally:
                shutil.rmtree(root, ignore_errors=True)
    print(f"{len(vectors)} vectors of {vectors.shape[1]} dimensions from {args.cache_db}, {len(queries)} queries")
    for ef in (100, 200):
        print(f"ef_construction {ef}: upsert {statistics.median(times[ef]):.2f}s (median of {len(times[ef])}), "
              f"recall@10 vs exact {recall[ef]:.4f}")
    print(f"200 ÷ 100 build time: {statistics.median(times[200]) / statistics.median(times[100]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
