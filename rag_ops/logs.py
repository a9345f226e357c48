"""Logging for the CLI and the quieting of known-harmless library noise.

Nothing here logs document text or credentials: ragops logs URIs, ids and counts only.
"""

from __future__ import annotations

import logging
import sys

# (logger name, message fragment) pairs that are known noise, not problems:
_NOISE = (
    # Milvus Lite does not implement AllocTimestamp; pymilvus' query iterator falls back to a
    # client-side timestamp and works, but both sides log the miss on every iterator.
    ("pymilvus.client.iterator.query_iterator", "failed to get mvccTs"),
    ("grpc._server", "Exception calling application: Method not implemented"),
    # MilvusStore.alias_target asks whether the index's alias exists; "no" is an answer, not an
    # error, but pymilvus logs every failed RPC at ERROR with a traceback.
    ("pymilvus.decorators", "RPC error: [describe_alias]"),
)


class _DropNoise(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


_installed = False


def quiet_library_noise() -> None:
    """Drop the known-harmless messages listed in ``_NOISE`` (idempotent)."""
    global _installed
    if _installed:
        return
    for name, fragment in _NOISE:
        logging.getLogger(name).addFilter(_DropNoise(fragment))
    # Great Expectations logs a line at INFO for each of its API functions it registers on import
    for name in ("faiss.loader", "sentence_transformers", "chromadb.telemetry", "httpx", "great_expectations"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _installed = True


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr (stdout is kept for results and ``--json``)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_library_noise()
