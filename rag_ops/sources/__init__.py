"""Document sources: list documents (uri, size, modified time, ETag) and read their bytes.

``open_source(spec, settings)`` is the one factory: a path gives :class:`LocalSource`,
``s3://bucket/prefix`` gives :class:`S3Source`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Iterator, Protocol

if TYPE_CHECKING:
    from rag_ops.config import Settings


@dataclass(frozen=True)
class SourceDocument:
    """One listed document. ``refused`` holds a reason when the listing itself refuses it."""

    uri: str
    size: int
    modified: float  # seconds since the epoch, UTC
    etag: str = ""
    refused: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class Source(Protocol):
    root: str

    def list_documents(self) -> Iterator[SourceDocument]: ...

    def read(self, doc: SourceDocument, max_bytes: int) -> bytes: ...


def open_source(spec: str, settings: "Settings") -> Source:
    """The source for a folder path or an ``s3://bucket/prefix`` URL."""
    if spec.startswith("s3://"):
        from rag_ops.sources.s3 import S3Source

        return S3Source(spec, settings)
    from rag_ops.sources.local import LocalSource

    return LocalSource(spec, include=settings.include, exclude=settings.exclude)


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob with ``**`` (any number of folders) into a regex over posix paths."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def path_selected(rel_path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether a path relative to the source root passes the include and exclude globs."""
    if not any(_glob_regex(p).match(rel_path) for p in include):
        return False
    return not any(_glob_regex(p).match(rel_path) for p in exclude)
