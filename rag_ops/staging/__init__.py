"""Staging: where one task leaves files for the next (run plans, batch manifests, chunk texts, vectors).

Airflow runs ``discover``, ``process_batch``, the quality gate, the store writers and the commit
as separate tasks, on whichever worker is free. What one leaves for another is staged here and
only its URL travels by XCom. Two backends behind one interface:

* :class:`~rag_ops.staging.local.LocalStaging`: a folder (default ``<data_dir>/staging``), for
  one machine (the CLI, Airflow's LocalExecutor);
* :class:`~rag_ops.staging.s3.S3Staging`: ``s3://bucket/prefix`` (any S3-compatible endpoint,
  MinIO included), which every worker of a distributed executor reaches.

A staged file is addressed by its full URL (a path or ``s3://…``), so a reference read back from
XCom names its own backend: :func:`staging_at` is the one place that branches on it. JSON for
manifests and chunk rows; vectors as ``.npy`` (float32, binary), never JSON floats.
"""

from __future__ import annotations

import io
import json
import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rag_ops.config import Settings

__all__ = ["Staging", "open_staging", "run_folder_name", "staging_at"]


def run_folder_name(run_id: str) -> str:
    """A run id as a folder (or key prefix) name: Airflow's run ids hold ``:`` and ``+``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)[:120]


class Staging(ABC):
    """Files addressed by URL under one root; every write replaces the file whole."""

    root: str

    def run_url(self, run_id: str) -> str:
        """The folder (prefix) of one run's staged files."""
        return self.join(self.root, run_folder_name(run_id))

    @abstractmethod
    def join(self, base: str, name: str) -> str:
        """The URL of ``name`` inside the folder ``base``."""

    @abstractmethod
    def write_bytes(self, url: str, data: bytes) -> None:
        """Write a file whole (readers never see half of it).

        Raises:
            StagingError: the write failed (retryable).
        """

    @abstractmethod
    def read_bytes(self, url: str) -> bytes:
        """Raises:
        StagingMissing: there is no such file. StagingError: the read failed (retryable).
        """

    @abstractmethod
    def exists(self, url: str) -> bool: ...

    @abstractmethod
    def remove_run(self, run_url: str) -> None:
        """Remove a run's folder and everything in it (no error when it is gone already)."""

    @abstractmethod
    def clean_stale(self, older_than_seconds: float, keep: str) -> int:
        """Remove run folders whose newest file is older than the age, except ``keep``; how many."""

    # -------------------------------------------------------------- typed helpers
    def write_json(self, url: str, data: Any) -> None:
        self.write_bytes(url, json.dumps(data).encode())

    def read_json(self, url: str) -> Any:
        return json.loads(self.read_bytes(url))

    def write_array(self, url: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        self.write_bytes(url, buf.getvalue())

    def read_array(self, url: str) -> np.ndarray:
        return np.load(io.BytesIO(self.read_bytes(url)), allow_pickle=False)


def staging_at(url: str, settings: "Settings") -> Staging:
    """The staging that holds ``url`` (a staged file's or a root's URL)."""
    root = settings.staging_root
    if url.startswith("s3://"):
        from rag_ops.staging.s3 import S3Staging

        return S3Staging(root if url.startswith(root + "/") or url == root else url, settings)
    from rag_ops.staging.local import LocalStaging

    return LocalStaging(root if not root.startswith("s3://") else url)


def open_staging(settings: "Settings") -> Staging:
    """The staging of these settings (``staging_url``, default ``<data_dir>/staging``)."""
    return staging_at(settings.staging_root, settings)
