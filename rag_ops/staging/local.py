"""Staging in a folder of this machine (the embedded default: ``<data_dir>/staging``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from rag_ops.errors import StagingError, StagingMissing
from rag_ops.staging import Staging


class LocalStaging(Staging):
    def __init__(self, root: str):
        self.root = str(Path(root))

    def join(self, base: str, name: str) -> str:
        return str(Path(base) / name)

    def write_bytes(self, url: str, data: bytes) -> None:
        path = Path(url)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: a reader sees the old file or the new one
        except OSError as exc:
            raise StagingError(f"cannot write staged file {url}: {exc.strerror or exc}") from exc

    def read_bytes(self, url: str) -> bytes:
        try:
            return Path(url).read_bytes()
        except FileNotFoundError:
            raise StagingMissing(f"staged file {url} does not exist") from None
        except OSError as exc:
            raise StagingError(f"cannot read staged file {url}: {exc.strerror or exc}") from exc

    def exists(self, url: str) -> bool:
        return Path(url).exists()

    def remove_run(self, run_url: str) -> None:
        shutil.rmtree(run_url, ignore_errors=True)

    def clean_stale(self, older_than_seconds: float, keep: str) -> int:
        root = Path(self.root)
        if not root.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for p in root.iterdir():
            if str(p) != str(Path(keep)) and p.is_dir() and _newest_mtime(p) < cutoff:
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
        return removed


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            try:
                newest = max(newest, os.stat(os.path.join(dirpath, f)).st_mtime)
            except OSError:
                pass
    return newest
