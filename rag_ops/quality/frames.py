"""What the suites validate: one small pandas frame per suite (lengths, counts, flags and ids,
never a document's text), and the near-duplicate column, computed in bounded blocks."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

NEAR_DUPLICATE_COSINE = 0.999  # two vectors at least this similar are near-duplicates
_NEAR_DUP_BLOCK = 1024  # rows per block of the chunked similarity product, at most
_NEAR_DUP_BLOCK_BYTES = 32 * 1024 * 1024  # and one block's similarities stay under this (float32)
NEAR_DUP_EXACT_MAX = 10_000  # up to this many vectors every pair is compared; above, a sample
NEAR_DUP_SAMPLE = 2_000  # rows checked (against all rows) above NEAR_DUP_EXACT_MAX


def _documents_frame(documents: list[dict]):
    import pandas as pd

    cols = ["doc_id", "size", "n_chars", "printable_ratio", "utf8_ok"]
    df = pd.DataFrame.from_records([{c: d.get(c) for c in cols} for d in documents], columns=cols)
    df["doc_id"] = df["doc_id"].map(_blank_to_none).astype(object)
    return df


def _chunks_frame(chunks: list[dict]):
    import pandas as pd

    texts = pd.Series([c.get("text") if isinstance(c.get("text"), str) else "" for c in chunks], dtype=object)
    df = pd.DataFrame(
        {
            "chunk_id": [_blank_to_none(c.get("chunk_id")) for c in chunks],
            "doc_id": [_blank_to_none(c.get("doc_id")) for c in chunks],
            "source_uri": [_blank_to_none(c.get("source_uri")) for c in chunks],
            "seq": [c.get("seq") for c in chunks],
            "tokens": [c.get("tokens") for c in chunks],
            "text_chars": [len(t.strip()) for t in texts],
            # 1.0 where the text repeats an earlier chunk's: the mean is the duplicate rate
            "text_repeats": texts.duplicated(keep="first").astype(float).to_numpy() if len(texts) else [],
        }
    )
    for c in ("chunk_id", "doc_id", "source_uri"):
        df[c] = df[c].astype(object)
    return df, int(texts.nunique())


def _embeddings_frame(vectors: np.ndarray, chunks: list[dict], distinct_texts: int):
    import pandas as pd

    n, dim = vectors.shape
    finite = np.isfinite(vectors).all(axis=1) if dim else np.ones(n, dtype=bool)
    norm = np.full(n, np.nan)
    rows = vectors[finite]  # non-finite rows: null (the finite check reports them)
    # summed in float64 without a float64 copy of the run's vectors
    norm[finite] = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64)) if dim else 0.0
    del rows
    block = np.ascontiguousarray(vectors)
    fingerprint = [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in block]
    df = pd.DataFrame(
        {
            "doc_id": pd.Series([_blank_to_none(c.get("doc_id")) for c in chunks], dtype=object),
            "chunk_id": pd.Series([c.get("chunk_id") for c in chunks], dtype=object),
            "dim": np.full(n, dim, dtype=np.int64),
            "finite": finite,
            "norm": norm,
            "fingerprint": fingerprint,
            "near_duplicate": _near_duplicates_of_distinct_texts(vectors, chunks, finite),
        }
    )
    # not constant: two different texts must not give one vector (a broken model does)
    min_distinct = 2 if n > 1 and distinct_texts > 1 else 1
    return df, min_distinct


def near_duplicates(vectors: np.ndarray, finite: np.ndarray | None = None, threshold: float = NEAR_DUPLICATE_COSINE) -> np.ndarray:
    """Bool per row: cosine >= threshold to at least one other row.

    Rows are normalised first (non-finite and zero rows never match). Computed block by block
    on the upper triangle, so memory stays at ``block x n`` floats and the work at n^2/2 dots.
    """
    n = vectors.shape[0]
    flags = np.zeros(n, dtype=bool)
    if n < 2 or vectors.shape[1] == 0:
        return flags
    x = _unit_rows(vectors, finite)
    thr = np.float32(threshold)
    block = _block_rows(n)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        sims = x[lo:hi] @ x[lo:].T  # rows lo..hi against every row from lo on
        np.fill_diagonal(sims, -1.0)  # (i, i) sits on the block's leading diagonal
        hits = sims >= thr
        flags[lo:hi] |= hits.any(axis=1)
        flags[lo:] |= hits.any(axis=0)
    return flags


def _near_duplicates_of_distinct_texts(vectors: np.ndarray, chunks: list[dict], finite: np.ndarray) -> np.ndarray:
    """``near_duplicate`` over the first chunk of each distinct text; repeats are null.

    Identical texts must share a vector (a document stored under two names, a repeated
    disclaimer): that is the chunks suite's duplicate-text rate, not a sign of a degenerate model.
    Near-duplicates among *different* texts are.
    """
    keys = [c.get("text_hash") or hashlib.sha256(str(c.get("text", "")).encode()).hexdigest() for c in chunks]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    reps = np.array(sorted(first.values()), dtype=np.int64)
    column = np.full(vectors.shape[0], np.nan)
    if len(reps) == len(keys):  # every text distinct (the usual case): no copy of the vectors
        column[:] = near_duplicate_column(vectors, finite)
    elif len(reps):
        column[reps] = near_duplicate_column(vectors[reps], finite[reps])
    return column


def near_duplicate_column(vectors: np.ndarray, finite: np.ndarray | None = None) -> np.ndarray:
    """The ``near_duplicate`` column: 1.0 / 0.0 per row; its mean is the near-duplicate rate.

    Up to ``NEAR_DUP_EXACT_MAX`` rows every row is checked (n^2/2 dot products). Above, a fixed
    random sample of ``NEAR_DUP_SAMPLE`` rows is checked against all rows and the other rows are
    null (GX's mean skips nulls), so a 100k-vector run costs 2k x 100k dots, not 5 * 10^9; the
    rate's standard error is then about 1 point.
    """
    n = vectors.shape[0]
    if n <= NEAR_DUP_EXACT_MAX:
        return near_duplicates(vectors, finite).astype(float)
    x = _unit_rows(vectors, finite)
    sample = np.sort(np.random.default_rng(0).choice(n, NEAR_DUP_SAMPLE, replace=False))
    column = np.full(n, np.nan)
    thr = np.float32(NEAR_DUPLICATE_COSINE)
    block = _block_rows(n)
    for lo in range(0, len(sample), block):
        rows = sample[lo : lo + block]
        sims = x[rows] @ x.T
        sims[np.arange(len(rows)), rows] = -1.0  # not against itself
        column[rows] = (sims >= thr).any(axis=1)
    return column


def _block_rows(n: int) -> int:
    """Rows per block of a similarity product against ``n`` rows: memory stays bounded as the
    run grows (1,024 rows against 42,000 were 164 MB of similarities at once)."""
    return max(16, min(_NEAR_DUP_BLOCK, _NEAR_DUP_BLOCK_BYTES // (4 * max(n, 1))))


def _unit_rows(vectors: np.ndarray, finite: np.ndarray | None) -> np.ndarray:
    """float32 copy with unit rows; non-finite and zero rows all zeros (they match nothing)."""
    x = np.array(vectors, dtype=np.float32, copy=True)
    ok = np.isfinite(x).all(axis=1) if finite is None else finite.copy()
    x[~ok] = 0.0
    norms = np.linalg.norm(x, axis=1)
    ok &= norms > 0
    x[ok] /= norms[ok, None]
    x[~ok] = 0.0
    return x


def _blank_to_none(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value

