"""Content-derived identities (DESIGN.md "Identity and incrementality").

Nothing volatile (modified time, run time, paths of temp files) enters any of these hashes, so
the same input always gives the same ids and every write is an idempotent upsert.
"""

from __future__ import annotations

import hashlib


def doc_id_for(uri: str) -> str:
    """Stable id of a document: a hash of its source URI (32 hex chars)."""
    return hashlib.sha256(uri.encode("utf-8")).hexdigest()[:32]


def content_hash(data: bytes) -> str:
    """sha256 of a document's bytes (64 hex chars)."""
    return hashlib.sha256(data).hexdigest()


def text_hash(text: str) -> str:
    """sha256 of a chunk's text: the embedding cache key together with the model id."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_id_for(doc_id: str, seq: int, text: str, chunker_fingerprint: str) -> str:
    """Stable id of a chunk: hash of (doc id, sequence, text, chunker settings) (32 hex chars)."""
    raw = "\x1f".join((doc_id, str(seq), chunker_fingerprint, text))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
