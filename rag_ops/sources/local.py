"""A folder on disk, walked recursively. Symlinks that leave the root are refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from rag_ops.errors import DocumentChanged, DocumentGone, DocumentTooLarge, SourceError
from rag_ops.sources import SourceDocument, path_selected


class LocalSource:
    def __init__(self, root: str | Path, include: tuple[str, ...] = ("**/*",), exclude: tuple[str, ...] = ()):
        self.root_path = Path(root).expanduser().absolute()
        self.root = str(self.root_path)
        self.include = include
        self.exclude = exclude

    def list_documents(self) -> Iterator[SourceDocument]:
        """Every selected file below the root, in a stable (sorted) order.

        Raises:
            SourceError: the root does not exist or is not a folder.
        """
        if not self.root_path.is_dir():
            raise SourceError(f"source folder does not exist or is not a folder: {self.root}")
        real_root = self.root_path.resolve()
        for dirpath, dirnames, filenames in os.walk(self.root_path, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                path = Path(dirpath) / name
                rel = path.relative_to(self.root_path).as_posix()
                if not path_selected(rel, self.include, self.exclude):
                    continue
                uri = str(path)
                try:
                    if path.is_symlink():
                        target = path.resolve()
                        if not target.is_relative_to(real_root):
                            yield SourceDocument(uri, 0, 0.0, refused="symlink points outside the source root")
                            continue
                        if not target.is_file():
                            continue
                    st = path.stat()
                except FileNotFoundError:
                    continue  # vanished while listing: it is simply not listed
                yield SourceDocument(uri=uri, size=st.st_size, modified=st.st_mtime)

    def read(self, doc: SourceDocument, max_bytes: int) -> bytes:
        """The document's bytes, refusing files over ``max_bytes`` before reading them.

        Raises:
            DocumentGone: the file no longer exists.
            DocumentTooLarge: the file is larger than ``max_bytes``.
        """
        path = Path(doc.uri)
        try:
            with open(path, "rb") as fh:
                before = os.fstat(fh.fileno())
                if before.st_size > max_bytes:
                    raise DocumentTooLarge(
                        f"file is {before.st_size:,} bytes, over the max_document_bytes cap of {max_bytes:,}"
                    )
                data = fh.read(max_bytes + 1)
                after = os.stat(path)
        except FileNotFoundError:
            raise DocumentGone("file was deleted after it was listed") from None
        except IsADirectoryError:
            raise DocumentGone("path is no longer a file") from None
        if len(data) > max_bytes:
            raise DocumentTooLarge(f"file grew past the max_document_bytes cap of {max_bytes:,} while read")
        if (after.st_size, after.st_mtime_ns, after.st_ino) != (len(data), before.st_mtime_ns, before.st_ino):
            raise DocumentChanged("file changed while it was being read; the next run reads it again")
        return data
