"""Milvus: a Milvus Lite file under the data dir by default, or a server URI.

The index type and its parameters are settings (``FLAT`` by default: exact search, which is
what Milvus Lite does well at this scale; pick ``HNSW``/``IVF_FLAT`` on a server and let the
recall benchmark judge). Metric is COSINE, so ``score`` is the similarity itself. Writes use
``upsert``: in Milvus an ``insert`` with an existing primary key adds a second row.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from rag_ops.logs import quiet_library_noise
from rag_ops.stores.base import Hit, StoredChunk, VectorStore

quiet_library_noise()
log = logging.getLogger(__name__)

BATCH = 1000
MAX_TEXT_BYTES = 65535
MAX_URI_BYTES = 4096
MAX_SECTION_BYTES = 1024
OUTPUT_FIELDS = ["id", "text", "doc_id", "source_uri", "seq", "page", "section"]


class MilvusStore(VectorStore):
    name = "milvus"

    def __init__(
        self,
        collection: str,
        *,
        uri: str,
        token: str = "",
        index_type: str = "FLAT",
        index_params: dict | None = None,
        search_params: dict | None = None,
        alias: str | None = None,
    ):
        self.collection = collection
        self.alias = alias  # set for the live version: ensure_collection points the alias at it if unset
        self._uri = uri
        self._token = token
        self._index_type = index_type
        self._index_params = index_params or {}
        self._search_params = search_params or {}
        self._client = None
        self._loaded = False

    @property
    def is_lite(self) -> bool:
        return not self._uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def address(self) -> str:
        if self.is_lite:
            return self._uri
        return self._uri.split("@")[-1]  # drop any user:password@ part

    @property
    def client(self):
        if self._client is None:
            with self.guard("connect"):
                from pymilvus import MilvusClient

                if self.is_lite:
                    Path(self._uri).parent.mkdir(parents=True, exist_ok=True)
                    _LITE_USERS[_lite_key(self._uri)] += 1
                kwargs = {"uri": self._uri}
                if self._token:
                    kwargs["token"] = self._token
                if not self.is_lite:
                    kwargs["timeout"] = 10
                self._client = MilvusClient(**kwargs)
        return self._client

    def exists(self) -> bool:
        """Whether the collection exists; an existing one is loaded for reads on first sight.

        Milvus (Lite included) opens existing collections in the ``released`` state in a new
        process, and every search/query fails until it is loaded.
        """
        with self.guard("check the collection"):
            if not self.client.has_collection(self.collection):
                self._loaded = False
                return False
            if not self._loaded:
                state = str(self.client.get_load_state(self.collection).get("state", ""))
                if "Loaded" not in state:
                    self.client.load_collection(self.collection)
        self._loaded = True
        return True

    def ensure_collection(self, dim: int) -> None:
        if self.exists():
            return
        from pymilvus import DataType

        with self.guard("create the collection"):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
            schema.add_field("doc_id", DataType.VARCHAR, max_length=64)
            schema.add_field("source_uri", DataType.VARCHAR, max_length=MAX_URI_BYTES)
            schema.add_field("seq", DataType.INT64)
            schema.add_field("page", DataType.INT64, nullable=True)
            schema.add_field("section", DataType.VARCHAR, max_length=MAX_SECTION_BYTES, nullable=True)
            index = self.client.prepare_index_params()
            index.add_index(
                field_name="vector", index_type=self._index_type, metric_type="COSINE", params=dict(self._index_params)
            )
            index.add_index(field_name="doc_id", index_type="INVERTED") if not self.is_lite else None
            try:
                self.client.create_collection(
                    self.collection, schema=schema, index_params=index, consistency_level="Strong"
                )
            except Exception as exc:
                if not self._clear_interrupted_creation(exc):
                    raise
                self.client.create_collection(
                    self.collection, schema=schema, index_params=index, consistency_level="Strong"
                )
        self._loaded = True  # created with an index: Milvus loads it
        if self.alias and self.alias_target(self.alias) is None:
            self.point_alias(self.alias)

    def alias_target(self, alias: str) -> str | None:
        """The collection ``alias`` points at, or None when there is no such alias."""
        with self.guard("describe the alias"):
            try:
                return str(self.client.describe_alias(alias=alias)["collection_name"])
            except Exception as exc:  # pymilvus raises a MilvusException for an unknown alias
                if "alias" in str(exc).lower() or "not" in str(exc).lower():
                    return None
                raise

    def point_alias(self, alias: str) -> None:
        """Point ``alias`` at this collection (create it, or alter it atomically: the swap)."""
        current = self.alias_target(alias)
        if current == self.collection:
            return
        with self.guard("point the alias"):
            if current is None:
                self.client.create_alias(collection_name=self.collection, alias=alias)
            else:
                self.client.alter_alias(collection_name=self.collection, alias=alias)
        log.info("milvus: alias %r now points at %r (was %r)", alias, self.collection, current)

    def _clear_interrupted_creation(self, exc: Exception) -> bool:
        """Move aside the folder a killed process left while creating this collection.

        Milvus Lite creates ``<file>/collections/<name>/`` before it registers the collection; a
        process killed in between (seen with SIGKILL during a run) leaves a folder that makes every
        later ``create_collection`` fail with "File exists" although ``has_collection`` is False.
        The folder holds no registered data, so it is renamed (kept for inspection) and creation
        is tried once more. Returns whether there was such a folder.
        """
        if not self.is_lite or "File exists" not in str(exc):
            return False
        debris = Path(self._uri) / "collections" / self.collection
        if not debris.is_dir() or self.client.has_collection(self.collection):
            return False
        # outside the Milvus Lite folder, so the server never scans it
        aside = Path(f"{self._uri}.interrupted") / f"{self.collection}-{os.getpid()}-{int(time.time())}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        debris.rename(aside)
        log.warning("milvus: moved the folder of an interrupted collection creation aside: %s", aside)
        return True

    def upsert(self, chunks: Sequence[StoredChunk], vectors: np.ndarray) -> int:
        if not chunks:
            return 0
        self.ensure_collection(int(vectors.shape[1]))
        with self.guard(f"upsert {len(chunks)} chunks"):
            for i in range(0, len(chunks), BATCH):
                rows = [
                    {
                        "id": c.id,
                        "vector": np.asarray(v, dtype=np.float32).tolist(),
                        "text": _clip(c.text, MAX_TEXT_BYTES),
                        "doc_id": c.doc_id,
                        "source_uri": _clip(c.source_uri, MAX_URI_BYTES),
                        "seq": int(c.seq),
                        "page": None if c.page is None else int(c.page),
                        "section": None if not c.section else _clip(c.section, MAX_SECTION_BYTES),
                    }
                    for c, v in zip(chunks[i : i + BATCH], vectors[i : i + BATCH])
                ]
                self.client.upsert(self.collection, data=rows)
        return len(chunks)

    def delete_ids(self, ids: Sequence[str]) -> int:
        if not ids or not self.exists():
            return 0
        with self.guard(f"delete {len(ids)} chunks"):
            for i in range(0, len(ids), BATCH):
                self.client.delete(self.collection, ids=list(ids[i : i + BATCH]))
        return len(ids)

    def _query_all(self, filter_expr: str, fields: list[str]) -> list[dict]:
        rows: list[dict] = []
        it = self.client.query_iterator(self.collection, batch_size=1000, filter=filter_expr, output_fields=fields)
        try:
            while True:
                page = it.next()
                if not page:
                    return rows
                rows.extend(page)
        finally:
            it.close()

    def ids_by_doc(self, doc_ids: Sequence[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        if not doc_ids or not self.exists():
            return out
        with self.guard("look up chunk ids"):
            for i in range(0, len(doc_ids), 200):
                part = [d for d in doc_ids[i : i + 200]]
                expr = "doc_id in [" + ",".join(f'"{_quote(d)}"' for d in part) + "]"
                for row in self._query_all(expr, ["id", "doc_id"]):
                    out.setdefault(row["doc_id"], set()).add(row["id"])
        return out

    def all_ids(self) -> set[str]:
        if not self.exists():
            return set()
        with self.guard("list all ids"):
            return {row["id"] for row in self._query_all('id != ""', ["id"])}

    def query(self, vector: np.ndarray, k: int = 5) -> list[Hit]:
        if not self.exists():
            return []
        with self.guard("query"):
            res = self.client.search(
                self.collection,
                data=[np.asarray(vector, dtype=np.float32).tolist()],
                limit=k,
                output_fields=OUTPUT_FIELDS[1:],
                search_params={"metric_type": "COSINE", "params": dict(self._search_params)},
            )
        hits = []
        for h in res[0]:
            e = h.get("entity", h)
            hits.append(
                Hit(
                    id=str(h.get("id", e.get("id"))),
                    score=float(h["distance"]),
                    text=e.get("text", ""),
                    doc_id=e.get("doc_id", ""),
                    source_uri=e.get("source_uri", ""),
                    seq=int(e.get("seq", 0)),
                    page=e.get("page"),
                    section=e.get("section"),
                )
            )
        return hits

    def get_texts(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        if not ids or not self.exists():
            return out
        with self.guard(f"read {len(ids)} chunk texts"):
            for i in range(0, len(ids), 500):
                expr = "id in [" + ",".join(f'"{_quote(c)}"' for c in ids[i : i + 500]) + "]"
                for row in self.client.query(self.collection, filter=expr, output_fields=["id", "text", "doc_id"]):
                    out[row["id"]] = (row.get("text") or "", row.get("doc_id") or "")
        return out

    def count(self) -> int:
        if not self.exists():
            return 0
        with self.guard("count"):
            res = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def drop(self) -> None:
        if self.exists():
            with self.guard("drop the collection"):
                self.client.drop_collection(self.collection)
        self._loaded = False

    def close(self) -> None:
        """Close the client; for Milvus Lite also stop the in-process server holding the file.

        pymilvus keeps one Milvus Lite server per file alive until the process exits, and while it
        runs no other process can open the file (the next Airflow task, a CLI query). The server is
        shared by every client of that file in this process, so it stops with the last of them.
        """
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing must not mask the real outcome
                pass
            self._client = None
            if self.is_lite:
                key = _lite_key(self._uri)
                _LITE_USERS[key] -= 1
                if _LITE_USERS[key] <= 0:
                    del _LITE_USERS[key]
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(self._uri)
        self._loaded = False


_LITE_USERS: Counter[str] = Counter()


def _lite_key(uri: str) -> str:
    return os.path.abspath(uri)


def _clip(text: str, max_bytes: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
