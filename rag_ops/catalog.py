"""SQL access to the catalog (SQLAlchemy Core). No business rules live here.

DDL lives in ``sql/NNN_name.sql``; :func:`migrate` applies the files not yet applied, each in
one transaction together with its row in ``schema_migrations``. Works on SQLite (default, a
file in the data dir) and PostgreSQL (``postgresql+psycopg://…``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa

from rag_ops.errors import CatalogError

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

_meta = sa.MetaData()
documents = sa.Table(
    "documents",
    _meta,
    sa.Column("doc_id", sa.String(64), primary_key=True),
    sa.Column("uri", sa.Text),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("modified_at", sa.Float),
    sa.Column("etag", sa.String(128)),
    sa.Column("status", sa.String(16)),
    sa.Column("error", sa.Text),
    sa.Column("error_stage", sa.String(16)),
    sa.Column("error_hash", sa.String(64)),
    sa.Column("chunk_count", sa.Integer),
    sa.Column("stores", sa.String(255)),
    sa.Column("last_run_id", sa.String(128)),
    sa.Column("updated_at", sa.String(32)),
)
chunks = sa.Table(
    "chunks",
    _meta,
    sa.Column("chunk_id", sa.String(64), primary_key=True),
    sa.Column("doc_id", sa.String(64)),
    sa.Column("seq", sa.Integer),
    sa.Column("text_hash", sa.String(64)),
    sa.Column("tokens", sa.Integer),
)
RUN_COUNTS = ("seen", "new", "changed", "unchanged", "deleted", "failed", "chunks", "encoded", "cache_hits")
runs = sa.Table(
    "runs",
    _meta,
    sa.Column("run_id", sa.String(128), primary_key=True),
    sa.Column("started_at", sa.String(32)),
    sa.Column("finished_at", sa.String(32)),
    sa.Column("status", sa.String(16)),
    sa.Column("source", sa.Text),
    sa.Column("full_sync", sa.Integer),
    *[sa.Column(name, sa.Integer) for name in RUN_COUNTS],
    sa.Column("report", sa.Text),
)

quarantine = sa.Table(
    "quarantine",
    _meta,
    sa.Column("doc_id", sa.String(64), primary_key=True),
    sa.Column("uri", sa.Text),
    sa.Column("stage", sa.String(16)),
    sa.Column("reason", sa.Text),
    sa.Column("content_hash", sa.String(64)),
    sa.Column("first_seen", sa.String(32)),
    sa.Column("last_seen", sa.String(32)),
    sa.Column("last_run_id", sa.String(128)),
)
quality_results = sa.Table(
    "quality_results",
    _meta,
    sa.Column("result_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(128)),
    sa.Column("suite", sa.String(32)),
    sa.Column("expectation", sa.String(128)),
    sa.Column("column_name", sa.String(64)),
    sa.Column("success", sa.Integer),
    sa.Column("observed_value", sa.Text),
    sa.Column("unexpected_count", sa.Integer),
    sa.Column("created_at", sa.String(32)),
)
recall_scores = sa.Table(
    "recall_scores",
    _meta,
    sa.Column("score_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(128)),
    sa.Column("collection", sa.String(64)),
    sa.Column("store", sa.String(16)),
    sa.Column("golden_set", sa.String(128)),
    sa.Column("model_id", sa.String(255)),
    sa.Column("metric", sa.String(32)),
    sa.Column("value", sa.Float),
    sa.Column("created_at", sa.String(32)),
)
drift_reports = sa.Table(
    "drift_reports",
    _meta,
    sa.Column("report_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(128)),
    sa.Column("collection", sa.String(64)),
    sa.Column("store", sa.String(255)),
    sa.Column("model_id", sa.String(255)),
    sa.Column("reference_size", sa.Integer),
    sa.Column("batch_size", sa.Integer),
    sa.Column("auc", sa.Float),
    sa.Column("mmd2", sa.Float),
    sa.Column("p_value", sa.Float),
    sa.Column("centroid_distance", sa.Float),
    sa.Column("drifted", sa.Integer),
    sa.Column("rule", sa.String(32)),
    sa.Column("reasons", sa.Text),
    sa.Column("created_at", sa.String(32)),
)
DRIFT_VALUES = ("auc", "mmd2", "p_value", "centroid_distance")
index_versions = sa.Table(
    "index_versions",
    _meta,
    sa.Column("index_name", sa.String(64), primary_key=True),
    sa.Column("store", sa.String(16), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("collection", sa.String(128)),
    sa.Column("status", sa.String(16)),
    sa.Column("embedding_model", sa.Text),
    sa.Column("model_id", sa.String(255)),
    sa.Column("model_hash", sa.String(64)),
    sa.Column("embed_backend", sa.String(32)),
    sa.Column("chunk_size", sa.Integer),
    sa.Column("chunk_overlap", sa.Integer),
    sa.Column("chunker_hash", sa.String(64)),
    sa.Column("dimension", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("state_url", sa.Text),
    sa.Column("reference_path", sa.Text),
    sa.Column("documents", sa.Integer),
    sa.Column("chunks", sa.Integer),
    sa.Column("encoded", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("run_id", sa.String(128)),
    sa.Column("created_at", sa.String(32)),
    sa.Column("swapped_at", sa.String(32)),
    sa.Column("retired_at", sa.String(32)),
    sa.Column("dropped_at", sa.String(32)),
)
drift_references = sa.Table(
    "drift_references",
    _meta,
    sa.Column("index_name", sa.String(64), primary_key=True),
    sa.Column("store", sa.String(16), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("taken_at", sa.String(32)),
    sa.Column("n", sa.Integer),
    sa.Column("dim", sa.Integer),
    sa.Column("vectors", sa.LargeBinary),
)
golden_sets = sa.Table(
    "golden_sets",
    _meta,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer),
    sa.Column("files", sa.Text),
    sa.Column("saved_at", sa.String(32)),
)
index_locks = sa.Table(
    "index_locks",
    _meta,
    sa.Column("index_name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(255)),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("acquired_at", sa.String(32)),
    sa.Column("expires_at", sa.String(32)),
)


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class DocumentRow:
    doc_id: str
    uri: str
    content_hash: str | None
    size_bytes: int | None
    modified_at: float | None
    etag: str | None
    status: str
    error: str | None
    error_stage: str | None
    error_hash: str | None
    chunk_count: int
    stores: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ChunkRow:
    chunk_id: str
    doc_id: str
    seq: int
    text_hash: str
    tokens: int


class Catalog:
    """The catalog database. Create with a SQLAlchemy URL; call :meth:`migrate` once."""

    def __init__(self, url: str):
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            path = url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 60}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = sa.create_engine(url, **kwargs)
        except Exception as exc:
            raise CatalogError(f"cannot open the catalog ({_safe_url(url)}): {exc}") from exc
        if self.dialect == "sqlite":
            # Python's sqlite3 driver opens no transaction before DDL, so a failed migration would
            # leave half its tables behind. SQLAlchemy's documented recipe: let the driver do no
            # transaction handling and emit BEGIN ourselves; SQLite then rolls DDL back too.
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            # Writes start with BEGIN IMMEDIATE: the write lock is taken up front and waits for the
            # busy timeout, where a deferred transaction that reads and then writes can fail at
            # once with "database is locked" when another process wrote in between. Reads
            # (``read``) stay deferred, so they never wait for a writer (WAL).
            sa.event.listen(self.engine, "begin", _sqlite_begin)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ migrations
    def migrate(self, sql_dir: Path = SQL_DIR) -> list[str]:
        """Apply pending ``NNN_*.sql`` files in order. Returns the versions applied now.

        Safe when several processes start on a fresh catalog at once (Airflow runs tasks of a
        backfill and of a scheduled run side by side): every migration transaction first takes
        the catalog's write lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-level
        advisory lock) and re-reads what is applied, so each file runs exactly once.
        """
        applied_now: list[str] = []
        try:
            with self.engine.begin() as conn:
                self._advisory_lock(conn, "migrations")
                conn.execute(
                    sa.text(
                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        " version VARCHAR(255) PRIMARY KEY, applied_at VARCHAR(32) NOT NULL)"
                    )
                )
            with self.read() as conn:
                done = {r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations"))}
            for path in sorted(sql_dir.glob("[0-9][0-9][0-9]_*.sql")):
                version = path.stem
                if version in done:
                    continue
                with self.engine.begin() as conn:
                    self._advisory_lock(conn, "migrations")
                    already = conn.execute(
                        sa.text("SELECT 1 FROM schema_migrations WHERE version = :v"), {"v": version}
                    ).first()
                    if already:  # another process applied it after our first read
                        continue
                    for statement in split_sql(path.read_text()):
                        conn.execute(sa.text(statement))
                    conn.execute(
                        sa.text("INSERT INTO schema_migrations (version, applied_at) VALUES (:v, :t)"),
                        {"v": version, "t": utcnow()},
                    )
                applied_now.append(version)
                log.info("catalog: applied migration %s", version)
        except (sa.exc.SQLAlchemyError, CatalogError) as exc:
            raise CatalogError(f"catalog migration failed ({_safe_url(self.url)}): {_short(exc)}") from exc
        return applied_now

    def _advisory_lock(self, conn, name: str) -> None:
        """Serialise the caller's write transaction with every other one holding ``name``, until it
        ends. PostgreSQL: a transaction-level advisory lock; SQLite's writes already hold the
        database's write lock (``BEGIN IMMEDIATE``)."""
        if self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(f"ragops {name}".encode()).digest()[:8], "big", signed=True)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    # ------------------------------------------------------------------ documents
    def documents_by_id(self, doc_ids: Iterable[str] | None = None) -> dict[str, DocumentRow]:
        """Documents by id (all of them when ``doc_ids`` is None)."""
        out: dict[str, DocumentRow] = {}
        with self.read() as conn:
            if doc_ids is None:
                rows = conn.execute(sa.select(documents)).mappings()
                out = {r["doc_id"]: _doc(r) for r in rows}
            else:
                ids = list(doc_ids)
                for i in range(0, len(ids), 500):
                    rows = conn.execute(sa.select(documents).where(documents.c.doc_id.in_(ids[i : i + 500]))).mappings()
                    out.update({r["doc_id"]: _doc(r) for r in rows})
        return out

    def live_documents(self, uri_prefix: str | None = None) -> dict[str, DocumentRow]:
        """Documents not marked deleted, optionally only those under a URI prefix."""
        stmt = sa.select(documents).where(documents.c.status != "deleted")
        if uri_prefix:
            stmt = stmt.where(documents.c.uri.startswith(uri_prefix, autoescape=True))
        with self.read() as conn:
            rows = [_doc(r) for r in conn.execute(stmt).mappings()]
        # SQLite's LIKE ignores case: keep only exact (case-sensitive) prefix matches
        return {r.doc_id: r for r in rows if not uri_prefix or r.uri.startswith(uri_prefix)}

    def chunks_of(self, doc_ids: Sequence[str]) -> dict[str, list[ChunkRow]]:
        out: dict[str, list[ChunkRow]] = {}
        with self.read() as conn:
            for i in range(0, len(doc_ids), 500):
                stmt = sa.select(chunks).where(chunks.c.doc_id.in_(list(doc_ids[i : i + 500]))).order_by(chunks.c.seq)
                for r in conn.execute(stmt).mappings():
                    out.setdefault(r["doc_id"], []).append(ChunkRow(**dict(r)))
        return out

    def all_chunk_ids(self) -> set[str]:
        with self.read() as conn:
            return {r[0] for r in conn.execute(sa.select(chunks.c.chunk_id))}

    def counts(self) -> dict[str, int]:
        """Live documents (indexed), failed documents, and chunks."""
        with self.read() as conn:
            by_status = dict(
                conn.execute(sa.select(documents.c.status, sa.func.count()).group_by(documents.c.status)).all()
            )
            n_chunks = conn.execute(sa.select(sa.func.count()).select_from(chunks)).scalar_one()
        return {
            "documents": int(by_status.get("indexed", 0)),
            "failed": int(by_status.get("failed", 0)),
            "deleted": int(by_status.get("deleted", 0)),
            "chunks": int(n_chunks),
        }

    # ------------------------------------------------------------------ writes
    def write_results(
        self,
        *,
        indexed: Sequence[dict],
        failed: Sequence[dict],
        touched: Sequence[dict],
        deleted: Sequence[str],
        run_id: str,
        expect_live: tuple[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Record one run's outcome in a single transaction.

        Args:
            indexed: documents whose chunks every store accepted: dicts with the document fields
                and ``chunks`` (list of dicts with chunk_id, seq, text_hash, tokens).
            failed: documents that could not be indexed (fields plus error, error_stage, error_hash).
            touched: documents found unchanged by content whose metadata (mtime, etag) moved.
            deleted: ids of documents removed from every store.
            run_id: the run that did this.
            expect_live: ``(index name, {store: physical collection})`` the run wrote to. Checked
                inside the transaction: when a re-index swapped another version live meanwhile,
                nothing is recorded and :class:`~rag_ops.errors.IndexSwapped` is raised (the
                next run applies these documents to the new live version).
        """
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                if expect_live is not None:
                    self._check_live(conn, *expect_live)
                if indexed:
                    ids = [d["doc_id"] for d in indexed]
                    for i in range(0, len(ids), 500):
                        conn.execute(chunks.delete().where(chunks.c.doc_id.in_(ids[i : i + 500])))
                    rows = [
                        {"chunk_id": c["chunk_id"], "doc_id": d["doc_id"], "seq": c["seq"], "text_hash": c["text_hash"], "tokens": c["tokens"]}
                        for d in indexed
                        for c in d["chunks"]
                    ]
                    for i in range(0, len(rows), 1000):
                        self._upsert(conn, chunks, rows[i : i + 1000], "chunk_id")
                    self._upsert(
                        conn,
                        documents,
                        [
                            _doc_values(d, status="indexed", run_id=run_id, now=now, chunk_count=len(d["chunks"]))
                            for d in indexed
                        ],
                        "doc_id",
                    )
                if indexed:
                    ids = [d["doc_id"] for d in indexed]
                    for i in range(0, len(ids), 500):
                        conn.execute(quarantine.delete().where(quarantine.c.doc_id.in_(ids[i : i + 500])))
                if failed:
                    self._quarantine(conn, failed, run_id, now)
                    known = self.documents_by_id([d["doc_id"] for d in failed])
                    rows = []
                    for d in failed:
                        prev = known.get(d["doc_id"])
                        row = _doc_values(d, status="failed", run_id=run_id, now=now, chunk_count=prev.chunk_count if prev else 0)
                        # the last indexed content stays recorded; the failing bytes go to error_hash
                        row["content_hash"] = prev.content_hash if prev else None
                        row["stores"] = ",".join(sorted(prev.stores)) if prev and prev.stores else None
                        row.update(error=d["error"], error_stage=d["error_stage"], error_hash=d.get("content_hash"))
                        rows.append(row)
                    self._upsert(conn, documents, rows, "doc_id")
                for d in touched:
                    conn.execute(
                        documents.update()
                        .where(documents.c.doc_id == d["doc_id"])
                        .values(modified_at=d["modified"], etag=d.get("etag") or None, size_bytes=d["size"], updated_at=now)
                    )
                for i in range(0, len(deleted), 500):
                    part = list(deleted[i : i + 500])
                    conn.execute(chunks.delete().where(chunks.c.doc_id.in_(part)))
                    conn.execute(quarantine.delete().where(quarantine.c.doc_id.in_(part)))
                    conn.execute(
                        documents.update()
                        .where(documents.c.doc_id.in_(part))
                        .values(status="deleted", chunk_count=0, last_run_id=run_id, updated_at=now)
                    )
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"catalog write failed: {_short(exc)}") from exc

    def _quarantine(self, conn, failed: Sequence[dict], run_id: str, now: str) -> None:
        """Record (or refresh) the quarantine rows of failed documents; first_seen is kept."""
        ids = [d["doc_id"] for d in failed]
        first = {}
        for i in range(0, len(ids), 500):
            rows = conn.execute(
                sa.select(quarantine.c.doc_id, quarantine.c.first_seen).where(quarantine.c.doc_id.in_(ids[i : i + 500]))
            ).all()
            first.update(dict(rows))
        self._upsert(
            conn,
            quarantine,
            [
                {
                    "doc_id": d["doc_id"], "uri": d["uri"], "stage": d["error_stage"], "reason": d["error"],
                    "content_hash": d.get("content_hash"), "first_seen": first.get(d["doc_id"], now),
                    "last_seen": now, "last_run_id": run_id,
                }
                for d in failed
            ],
            "doc_id",
        )

    def quarantined(self) -> list[dict]:
        """Every quarantined document: doc_id, uri, stage, reason, content_hash, first/last seen."""
        with self.read() as conn:
            stmt = sa.select(quarantine).order_by(quarantine.c.uri)
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def write_quality_results(self, run_id: str, outcomes: Sequence[dict]) -> None:
        """Store one run's expectation outcomes (suite, expectation, column, success, observed, count)."""
        import hashlib

        now = utcnow()
        rows = []
        for n, o in enumerate(outcomes):
            key = f"{run_id}|{o['suite']}|{o['expectation']}|{o.get('column')}|{n}"
            rows.append(
                {
                    "result_id": hashlib.sha256(key.encode()).hexdigest()[:32], "run_id": run_id, "suite": o["suite"],
                    "expectation": o["expectation"], "column_name": o.get("column"), "success": int(bool(o["success"])),
                    "observed_value": str(o.get("observed_value"))[:2000], "unexpected_count": int(o.get("unexpected_count") or 0),
                    "created_at": now,
                }
            )
        if rows:
            with self.engine.begin() as conn:
                self._upsert(conn, quality_results, rows, "result_id")

    def quality_results_of(self, run_id: str) -> list[dict]:
        with self.read() as conn:
            stmt = sa.select(quality_results).where(quality_results.c.run_id == run_id)
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def write_recall_scores(
        self, run_id: str, collection: str, store: str, golden_set: str, model_id: str, metrics: dict[str, Any]
    ) -> int:
        """Store one run's retrieval scores for one store and golden set, one row per metric.

        Only numeric values are written (``store``, ``golden_set`` and other text entries of an
        evaluation result are skipped, booleans too). Writing the same run again overwrites its rows.

        Returns:
            The number of metric rows written.
        """
        import hashlib

        now = utcnow()
        rows = []
        for metric, value in sorted(metrics.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            key = f"{run_id}|{collection}|{store}|{golden_set}|{metric}"
            rows.append(
                {
                    "score_id": hashlib.sha256(key.encode()).hexdigest()[:32], "run_id": run_id,
                    "collection": collection, "store": store, "golden_set": golden_set, "model_id": model_id,
                    "metric": metric, "value": float(value), "created_at": now,
                }
            )
        if rows:
            try:
                with self.engine.begin() as conn:
                    self._upsert(conn, recall_scores, rows, "score_id")
            except sa.exc.SQLAlchemyError as exc:
                raise CatalogError(f"catalog write of recall scores failed: {_short(exc)}") from exc
        return len(rows)

    def recall_history(
        self, store: str, golden_set: str, collection: str | None = None, limit: int = 30
    ) -> list[dict]:
        """The last ``limit`` runs scored on a store and golden set, oldest first (newest last).

        Returns:
            ``[{"run_id", "created_at", "collection", "model_id", "metrics": {name: value}}, ...]``.
        """
        t = recall_scores
        where = [t.c.store == store, t.c.golden_set == golden_set]
        if collection is not None:
            where.append(t.c.collection == collection)
        with self.read() as conn:
            last = conn.execute(
                sa.select(t.c.run_id, sa.func.max(t.c.created_at).label("at"))
                .where(*where)
                .group_by(t.c.run_id)
                .order_by(sa.desc("at"), t.c.run_id.desc())
                .limit(limit)
            ).all()
            run_ids = [r[0] for r in last]
            rows = conn.execute(sa.select(t).where(*where, t.c.run_id.in_(run_ids))).mappings().all() if run_ids else []
        by_run: dict[str, dict] = {}
        for r in rows:
            entry = by_run.setdefault(
                r["run_id"],
                {"run_id": r["run_id"], "created_at": r["created_at"], "collection": r["collection"],
                 "model_id": r["model_id"], "metrics": {}},
            )
            entry["created_at"] = max(entry["created_at"], r["created_at"])
            entry["metrics"][r["metric"]] = float(r["value"])
        return [by_run[rid] for rid in reversed(run_ids) if rid in by_run]

    def recall_rows(self, golden_set: str | None = None, collection: str | None = None, limit: int = 10_000) -> list[dict]:
        """Raw ``recall_scores`` rows (newest ``limit``), oldest first: for trend plots and exports."""
        t = recall_scores
        stmt = sa.select(t)
        if golden_set is not None:
            stmt = stmt.where(t.c.golden_set == golden_set)
        if collection is not None:
            stmt = stmt.where(t.c.collection == collection)
        with self.read() as conn:
            rows = [dict(r) for r in conn.execute(stmt.order_by(t.c.created_at.desc()).limit(limit)).mappings()]
        return rows[::-1]

    def write_drift_report(
        self, run_id: str, collection: str, store: str, model_id: str, report: Mapping[str, Any]
    ) -> str:
        """Store one drift check. Writing the same (run, collection, store, model) again overwrites it.

        Args:
            run_id: the run that made the check.
            collection: the collection whose vectors were the reference.
            store: the store (chroma, milvus) or index version name the vectors came from.
            model_id: the embedding model of both samples.
            report: ``DriftReport.as_dict()`` of :func:`rag_ops.drift.detect_drift`, or a mapping
                with its keys: reference_size, batch_size, drifted, rule, reasons, and auc, mmd2,
                p_value, centroid_distance (None when the sample was insufficient).

        Returns:
            The report id.

        Raises:
            CatalogError: the write failed, or ``report`` lacks a key.
        """
        import hashlib

        report_id = hashlib.sha256(f"{run_id}|{collection}|{store}|{model_id}".encode()).hexdigest()[:32]
        try:
            row = {
                "report_id": report_id, "run_id": run_id, "collection": collection, "store": store,
                "model_id": model_id, "reference_size": int(report["reference_size"]),
                "batch_size": int(report["batch_size"]), "drifted": int(bool(report["drifted"])),
                "rule": str(report["rule"]), "reasons": json.dumps(list(report["reasons"])), "created_at": utcnow(),
                **{k: None if report.get(k) is None else float(report[k]) for k in DRIFT_VALUES},
            }
        except KeyError as exc:
            raise CatalogError(f"drift report lacks {exc.args[0]!r}. Got keys {sorted(report)}.") from None
        try:
            with self.engine.begin() as conn:
                self._upsert(conn, drift_reports, [row], "report_id")
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"catalog write of a drift report failed: {_short(exc)}") from exc
        return report_id

    def drift_reports(self, limit: int = 30, collection: str | None = None) -> list[dict]:
        """The newest ``limit`` drift reports, oldest first (newest last).

        Returns:
            Rows as dicts with every column of ``drift_reports``; ``drifted`` as bool and
            ``reasons`` as a list of strings.
        """
        t = drift_reports
        stmt = sa.select(t)
        if collection is not None:
            stmt = stmt.where(t.c.collection == collection)
        stmt = stmt.order_by(t.c.created_at.desc(), t.c.report_id.desc()).limit(limit)
        with self.read() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        for r in rows:
            r["drifted"] = bool(r["drifted"])
            r["reasons"] = json.loads(r["reasons"] or "[]")
        return rows[::-1]

    def mark_for_restore(self, doc_ids: Sequence[str], complete_stores: dict[str, set[str]]) -> None:
        """Make the next ingest re-upsert these documents: forget their listing metadata and
        record only the stores that really hold them (used by ``verify --repair``)."""
        with self.engine.begin() as conn:
            for doc_id in doc_ids:
                conn.execute(
                    documents.update()
                    .where(documents.c.doc_id == doc_id)
                    .values(size_bytes=None, stores=",".join(sorted(complete_stores.get(doc_id, set()))) or None)
                )

    def start_run(self, run_id: str, source: str, full_sync: bool) -> None:
        with self.engine.begin() as conn:
            self._upsert(
                conn,
                runs,
                [{"run_id": run_id, "started_at": utcnow(), "status": "running", "source": source, "full_sync": int(full_sync),
                  **{k: 0 for k in RUN_COUNTS}}],
                "run_id",
            )

    def finish_run(self, run_id: str, report: dict, status: str = "success") -> None:
        values = {k: int(report.get(k, 0)) for k in RUN_COUNTS}
        with self.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(finished_at=utcnow(), status=status, report=json.dumps(report, sort_keys=True), **values)
            )

    def last_runs(self, limit: int = 5) -> list[dict]:
        with self.read() as conn:
            stmt = sa.select(runs).order_by(runs.c.started_at.desc()).limit(limit)
            return [dict(r) for r in conn.execute(stmt).mappings()]

    # ------------------------------------------------------------------ index versions
    def _check_live(self, conn, index_name: str, collections: Mapping[str, str]) -> None:
        from rag_ops.errors import IndexSwapped

        t = index_versions
        stmt = sa.select(t.c.store, t.c.collection).where(t.c.index_name == index_name, t.c.status == "live")
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update()  # a swap updates these rows: wait for it, then see its result
        live = {r.store: r.collection for r in conn.execute(stmt)}
        moved = {s: c for s, c in collections.items() if live.get(s) != c}
        if moved:
            raise IndexSwapped(
                "the live index version changed while this run was writing: "
                + ", ".join(f"{s} wrote {c!r}, live is now {live.get(s)!r}" for s, c in sorted(moved.items()))
                + "; nothing was recorded. The next run that lists these documents applies them to the live "
                "version: a CLI ingest, a full sync, or this Airflow run cleared (a scheduled run lists "
                "only its own interval)"
            )

    def versions(self, index_name: str | None = None, store: str | None = None) -> list[dict]:
        """Index versions, oldest first (by index, store, version)."""
        t = index_versions
        stmt = sa.select(t)
        if index_name is not None:
            stmt = stmt.where(t.c.index_name == index_name)
        if store is not None:
            stmt = stmt.where(t.c.store == store)
        stmt = stmt.order_by(t.c.index_name, t.c.store, t.c.version)
        with self.read() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def live_versions(self, index_name: str) -> dict[str, dict]:
        """store -> the live version row of ``index_name``."""
        return {r["store"]: r for r in self.versions(index_name) if r["status"] == "live"}

    def add_version(self, row: Mapping[str, Any]) -> None:
        """Insert a version row (``created_at`` filled in when missing)."""
        values = {"created_at": utcnow(), **row}
        try:
            with self.engine.begin() as conn:
                conn.execute(index_versions.insert().values(**values))
        except sa.exc.IntegrityError as exc:
            raise CatalogError(
                f"index version {row.get('index_name')}/{row.get('store')} v{row.get('version')} exists already: {_short(exc)}"
            ) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"catalog write of an index version failed: {_short(exc)}") from exc

    def ensure_live_version(self, row: Mapping[str, Any], collection_for: Callable[[int], str]) -> tuple[dict, bool]:
        """The live version of ``row``'s (index, store); when there is none, ``row`` is registered
        as the next version number, live, in the same transaction.

        Atomic across processes (SQLite: the transaction's write lock; PostgreSQL: an advisory
        lock per index), so runs that start together on a fresh catalog (a backfill beside a
        scheduled run) agree on one version 1.

        Returns:
            ``(live version row, registered now)``.
        """
        t = index_versions
        index_name, store = row["index_name"], row["store"]
        try:
            with self.engine.begin() as conn:
                self._advisory_lock(conn, f"index {index_name}")
                existing = conn.execute(
                    sa.select(t).where(t.c.index_name == index_name, t.c.store == store).order_by(t.c.version)
                ).mappings().all()
                live = [dict(r) for r in existing if r["status"] == "live"]
                if live:
                    return live[-1], False
                version = max((r["version"] for r in existing), default=0) + 1
                now = utcnow()
                values = {
                    **row, "version": version, "collection": collection_for(version), "status": "live",
                    "created_at": now, "swapped_at": now,
                }
                conn.execute(t.insert().values(**values))
                return dict(conn.execute(
                    sa.select(t).where(t.c.index_name == index_name, t.c.store == store, t.c.version == version)
                ).mappings().one()), True
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"catalog registration of a live version of {index_name}/{store} failed: {_short(exc)}") from exc

    def update_version(self, index_name: str, store: str, version: int, **values: Any) -> None:
        t = index_versions
        with self.engine.begin() as conn:
            conn.execute(
                t.update().where(t.c.index_name == index_name, t.c.store == store, t.c.version == version).values(**values)
            )

    def set_live(
        self,
        index_name: str,
        new: Mapping[str, int],
        *,
        state: tuple[list[dict], list[dict]] | None = None,
        retired_state_url: str | None = None,
    ) -> None:
        """Make ``new`` (store -> version) live in one transaction; the versions live before retire.

        Args:
            state: ``(documents rows, chunks rows)`` that replace the catalog's document and chunk
                tables (the new version's state), or None to keep them.
            retired_state_url: recorded on the retired rows: where their state was saved.
        """
        t = index_versions
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                for store, version in new.items():
                    conn.execute(
                        t.update()
                        .where(t.c.index_name == index_name, t.c.store == store, t.c.status == "live", t.c.version != version)
                        .values(status="retired", retired_at=now, state_url=retired_state_url)
                    )
                    conn.execute(
                        t.update()
                        .where(t.c.index_name == index_name, t.c.store == store, t.c.version == version)
                        .values(status="live", swapped_at=now, retired_at=None, state_url=None, error=None)
                    )
                if state is not None:
                    _replace_state(conn, *state)
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"catalog swap of {index_name!r} to {dict(new)} failed: {_short(exc)}") from exc

    def save_reference(self, index_name: str, store: str, version: int, vectors: Any, taken_at: str) -> None:
        """Keep a version's drift reference sample (float32 rows), replacing an older one."""
        import numpy as np

        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        key = {"index_name": index_name, "store": store, "version": version}
        row = {**key, "taken_at": taken_at, "n": int(arr.shape[0]), "dim": int(arr.shape[1]) if arr.ndim == 2 else 0,
               "vectors": arr.tobytes()}
        with self.engine.begin() as conn:
            self._upsert(conn, drift_references, [row], tuple(key))

    def reference(self, index_name: str, store: str, version: int) -> tuple[Any, str] | None:
        """A version's drift reference ``(vectors, taken_at)``, or None when none was kept."""
        import numpy as np

        t = drift_references
        with self.read() as conn:
            r = conn.execute(sa.select(t).where(t.c.index_name == index_name, t.c.store == store,
                                                t.c.version == version)).first()
        if r is None:
            return None
        vectors = np.frombuffer(bytes(r.vectors), dtype=np.float32)
        return (vectors.reshape(r.n, r.dim) if r.dim else vectors.reshape(0, 0)), r.taken_at

    def save_golden(self, name: str, version: int, files: Mapping[str, str]) -> None:
        """Keep a golden set's files (path -> text), replacing an older version."""
        row = {"name": name, "version": version, "files": json.dumps(dict(files)), "saved_at": utcnow()}
        with self.engine.begin() as conn:
            self._upsert(conn, golden_sets, [row], "name")

    def golden(self, name: str) -> tuple[int, dict[str, str]] | None:
        """A kept golden set ``(version, files)``, or None."""
        with self.read() as conn:
            r = conn.execute(sa.select(golden_sets).where(golden_sets.c.name == name)).first()
        return None if r is None else (int(r.version), json.loads(r.files))

    def export_state(self) -> tuple[list[dict], list[dict]]:
        """Every documents and chunks row (what an index version holds), as dicts."""
        with self.read() as conn:
            docs = [dict(r) for r in conn.execute(sa.select(documents)).mappings()]
            chunk_rows = [dict(r) for r in conn.execute(sa.select(chunks)).mappings()]
        return docs, chunk_rows

    def import_state(self, docs: list[dict], chunk_rows: list[dict]) -> None:
        """Replace the documents and chunks tables with these rows (one transaction)."""
        with self.engine.begin() as conn:
            _replace_state(conn, docs, chunk_rows)

    def indexed_chunk_hashes(self, changed_after: str | None = None) -> list[tuple[str, str]]:
        """``(doc id, text hash)`` of the chunks of indexed documents (updated after ``changed_after`` if set)."""
        stmt = sa.select(chunks.c.doc_id, chunks.c.text_hash).join(documents, documents.c.doc_id == chunks.c.doc_id).where(
            documents.c.status == "indexed"
        )
        if changed_after:
            stmt = stmt.where(documents.c.updated_at > changed_after)
        with self.read() as conn:
            return [(r[0], r[1]) for r in conn.execute(stmt)]

    def acquire_lock(self, index_name: str, holder: str, ttl_seconds: float) -> None:
        """Take the re-index lock of ``index_name`` for ``holder`` (re-entrant for the same holder).

        Raises:
            IndexLocked: another holder has it and it has not expired.
        """
        import os
        import socket

        from rag_ops.errors import IndexLocked

        now = dt.datetime.now(dt.timezone.utc)
        row = {
            "index_name": index_name, "holder": holder, "host": socket.gethostname()[:255], "pid": os.getpid(),
            "acquired_at": now.isoformat(timespec="seconds"),
            "expires_at": (now + dt.timedelta(seconds=ttl_seconds)).isoformat(timespec="seconds"),
        }
        t = index_locks
        with self.engine.begin() as conn:
            current = conn.execute(sa.select(t).where(t.c.index_name == index_name)).mappings().first()
            if current is None:
                try:
                    conn.execute(t.insert().values(**row))
                    return
                except sa.exc.IntegrityError:
                    current = None  # raced: fall through to the message below
            if current is not None and (current["holder"] == holder or current["expires_at"] < row["acquired_at"]):
                if current["holder"] != holder:
                    log.warning(
                        "re-index lock of %r held by %s expired at %s: taking it over", index_name, current["holder"], current["expires_at"]
                    )
                conn.execute(t.update().where(t.c.index_name == index_name).values(**row))
                return
        current = self.lock_holder(index_name) or {}
        raise IndexLocked(
            f"a re-index of {index_name!r} is already running: {current.get('holder')} (host {current.get('host')}, "
            f"pid {current.get('pid')}, since {current.get('acquired_at')}, lock expires {current.get('expires_at')}); "
            f"if that run is dead: ragops unlock --holder {current.get('holder')}"
        )

    def release_lock(self, index_name: str, holder: str) -> bool:
        t = index_locks
        with self.engine.begin() as conn:
            return bool(conn.execute(t.delete().where(t.c.index_name == index_name, t.c.holder == holder)).rowcount)

    def lock_holder(self, index_name: str) -> dict | None:
        t = index_locks
        with self.read() as conn:
            row = conn.execute(sa.select(t).where(t.c.index_name == index_name)).mappings().first()
        return dict(row) if row else None

    # ------------------------------------------------------------------ helpers
    def read(self):
        """A read-only connection (context manager); errors surface as CatalogError. On SQLite it
        never waits for a writer."""
        return _Guarded(self.engine)

    def _upsert(self, conn, table: sa.Table, rows: list[dict], key: str | tuple[str, ...]) -> None:
        keys = (key,) if isinstance(key, str) else tuple(key)
        if not rows:
            return
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - only the two supported dialects
            raise CatalogError(f"unsupported catalog database {self.dialect!r}; use SQLite or PostgreSQL")
        stmt = insert(table)
        cols = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys and c.name in rows[0]}
        conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=cols), rows)


class _Guarded:
    """A read connection whose SQLAlchemy errors surface as CatalogError."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def __enter__(self):
        try:
            self.conn = self.engine.connect().execution_options(ragops_read=True)
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"cannot connect to the catalog: {_short(exc)}") from exc
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.close()
        if isinstance(exc, sa.exc.SQLAlchemyError):
            raise CatalogError(f"catalog read failed: {_short(exc)}") from exc
        return False


def _replace_state(conn, docs: list[dict], chunk_rows: list[dict]) -> None:
    """Replace the documents and chunks tables with these rows, inside the caller's transaction."""
    conn.execute(chunks.delete())
    conn.execute(documents.delete())
    for i in range(0, len(docs), 1000):
        conn.execute(documents.insert(), docs[i : i + 1000])
    for i in range(0, len(chunk_rows), 1000):
        conn.execute(chunks.insert(), chunk_rows[i : i + 1000])


def _doc(r) -> DocumentRow:
    return DocumentRow(
        doc_id=r["doc_id"], uri=r["uri"], content_hash=r["content_hash"], size_bytes=r["size_bytes"],
        modified_at=r["modified_at"], etag=r["etag"], status=r["status"], error=r["error"],
        error_stage=r["error_stage"], error_hash=r["error_hash"], chunk_count=r["chunk_count"] or 0,
        stores=frozenset(s for s in (r["stores"] or "").split(",") if s),
    )


def _doc_values(d: dict, *, status: str, run_id: str, now: str, chunk_count: int) -> dict:
    return {
        "doc_id": d["doc_id"], "uri": d["uri"], "content_hash": d.get("content_hash"), "size_bytes": d.get("size"),
        "modified_at": d.get("modified"), "etag": d.get("etag") or None, "status": status, "error": None,
        "error_stage": None, "error_hash": None, "chunk_count": chunk_count, "last_run_id": run_id, "updated_at": now,
        "stores": ",".join(sorted(d.get("stores") or ())) or None,
    }


def _sqlite_begin(conn) -> None:
    read_only = conn.get_execution_options().get("ragops_read", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA busy_timeout=60000")
        # Switching a new file to WAL needs it to itself: SQLite answers "database is locked" at
        # once (the busy timeout does not apply) while another process has it open, as when
        # several Airflow tasks open a fresh catalog together. The mode is stored in the file, so
        # wait until one of them has switched it.
        deadline = time.monotonic() + 60
        while True:
            mode = (cur.execute("PRAGMA journal_mode").fetchone() or [""])[0]
            if str(mode).lower() in ("wal", "memory"):
                break
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05 + random.random() * 0.2)
    finally:
        cur.close()


def split_sql(text: str) -> list[str]:
    """Statements of a migration file (``;`` at a line end separates; ``--`` comments dropped)."""
    text = re.sub(r"--[^\n]*", "", text)
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]


def _safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<unparseable url>"


def _short(exc: Exception) -> str:
    """A database error in one line of at most 300 characters (the driver's message, no SQL)."""
    return " ".join(str(getattr(exc, "orig", exc) or exc).split())[:300]


short_error = _short
