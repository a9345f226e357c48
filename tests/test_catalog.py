"""The SQL catalog on SQLite (a file on tmp_path) and on the real local PostgreSQL."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from rag_ops import catalog as catalog_mod
from rag_ops.catalog import Catalog, ChunkRow, DocumentRow
from rag_ops.errors import CatalogError

from conftest import run_together

FIRST = "001_catalog"
ALL = sorted(p.stem for p in catalog_mod.SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cat.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def cat(db_url):
    c = Catalog(db_url)
    c.migrate()
    yield c
    c.close()


def tables(c: Catalog) -> set[str]:
    return set(sa.inspect(c.engine).get_table_names())


def migration_rows(c: Catalog) -> list[str]:
    with c.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version"))]


def doc(i: int, *, n_chunks: int = 2, content_hash: str | None = None, uri: str | None = None, tag: str = "") -> dict:
    """An indexed-document dict as the pipeline passes it. Chunk ids sort opposite to seq, and the
    chunks are listed in reverse, so ordering by seq is observable."""
    did = f"doc{i}"
    return {
        "doc_id": did,
        "uri": uri or f"file:///corpus/{did}.txt",
        "content_hash": content_hash or f"hash{i}",
        "size": 1000 + i,
        "modified": 1_700_000_000.25 + i,
        "etag": f"etag{i}",
        "stores": ("milvus", "chroma"),
        "chunks": [
            {"chunk_id": f"{did}{tag}-{chr(ord('z') - s)}", "seq": s, "text_hash": f"t{i}-{s}{tag}", "tokens": 10 + s}
            for s in reversed(range(n_chunks))
        ],
    }


def chunk_ids(d: dict) -> set[str]:
    return {c["chunk_id"] for c in d["chunks"]}


# ---------------------------------------------------------------------------------- migrations
def test_migrate_applies_once_and_is_idempotent(db_url):
    c = Catalog(db_url)
    try:
        assert c.migrate() == ALL
        assert {"documents", "chunks", "runs", "schema_migrations", "quarantine", "quality_results"} <= tables(c)
        assert migration_rows(c) == ALL
        assert c.migrate() == []
        assert migration_rows(c) == ALL
    finally:
        c.close()
    # a new Catalog object on the same database sees it applied too
    again = Catalog(db_url)
    try:
        assert again.migrate() == []
        assert again.counts() == {"documents": 0, "failed": 0, "deleted": 0, "chunks": 0}
    finally:
        again.close()


_RACE = """
import json, sys, time
from rag_ops.catalog import Catalog
url, run_id, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
c = Catalog(url)
while time.time() < start:
    time.sleep(0.001)
applied = c.migrate()
c.start_run(run_id, source="race", full_sync=False)
print(json.dumps(applied))
c.close()
"""


def test_processes_migrating_a_fresh_catalog_at_once_all_succeed(db_url):
    """Airflow starts tasks of a backfill and of a scheduled run together on a new catalog: every
    process must get a migrated catalog (no "database is locked"), each file applied once."""
    lines = run_together(_RACE, [[db_url, f"race-{i}"] for i in range(6)], timeout=180)
    applied = [v for line in lines for v in json.loads(line)]
    assert sorted(applied) == ALL, "each migration must be applied by exactly one process"
    c = Catalog(db_url)
    try:
        assert migration_rows(c) == ALL
        assert c.migrate() == []
        assert len(c.last_runs(10)) == 6
    finally:
        c.close()


def test_failed_migration_leaves_nothing_behind(db_url, tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "001_first.sql").write_text("CREATE TABLE first_ok (id INTEGER PRIMARY KEY);\n")
    (sql_dir / "002_broken.sql").write_text(
        "-- two statements; the second one fails\n"
        "CREATE TABLE half_done (id INTEGER PRIMARY KEY, name VARCHAR(10));\n"
        "INSERT INTO no_such_table (id) VALUES (1);\n"
    )
    c = Catalog(db_url)
    try:
        with pytest.raises(CatalogError) as info:
            c.migrate(sql_dir=sql_dir)
        assert "migration failed" in str(info.value)
        # 001 went through in its own transaction; 002 left neither its table nor its row
        assert migration_rows(c) == ["001_first"]
        assert "first_ok" in tables(c)
        assert "half_done" not in tables(c), "the first statement of the failed migration was committed"
        # once fixed, the migration applies cleanly (no "table already exists")
        (sql_dir / "002_broken.sql").write_text("CREATE TABLE half_done (id INTEGER PRIMARY KEY, name VARCHAR(10));\n")
        assert c.migrate(sql_dir=sql_dir) == ["002_broken"]
        assert migration_rows(c) == ["001_first", "002_broken"]
    finally:
        c.close()


def test_split_sql_drops_comments_and_splits_at_line_end_semicolons():
    text = (catalog_mod.SQL_DIR / "001_catalog.sql").read_text()
    statements = catalog_mod.split_sql(text)
    assert len(statements) == 5  # 3 tables + 2 indexes
    assert all("--" not in s for s in statements)
    assert catalog_mod.split_sql("SELECT 'a;b' AS x;\nSELECT 2;") == ["SELECT 'a;b' AS x", "SELECT 2"]


# ---------------------------------------------------------------------------------- writes
def test_indexed_documents_and_their_chunks(cat):
    docs = [doc(1, n_chunks=3), doc(2, n_chunks=1), doc(3, n_chunks=4)]
    cat.write_results(indexed=docs, failed=[], touched=[], deleted=[], run_id="run-1")

    got = cat.documents_by_id(["doc1", "doc2", "doc3", "missing"])
    assert set(got) == {"doc1", "doc2", "doc3"}
    d1 = got["doc1"]
    assert isinstance(d1, DocumentRow)
    assert d1 == DocumentRow(
        doc_id="doc1", uri="file:///corpus/doc1.txt", content_hash="hash1", size_bytes=1001,
        modified_at=1_700_000_001.25, etag="etag1", status="indexed", error=None, error_stage=None,
        error_hash=None, chunk_count=3, stores=frozenset({"chroma", "milvus"}),
    )
    assert cat.documents_by_id() == got  # None means all

    by_doc = cat.chunks_of(["doc1", "doc3", "missing"])
    assert set(by_doc) == {"doc1", "doc3"}
    assert [c.seq for c in by_doc["doc1"]] == [0, 1, 2]
    assert [c.seq for c in by_doc["doc3"]] == [0, 1, 2, 3]
    assert by_doc["doc1"][0] == ChunkRow(chunk_id="doc1-z", doc_id="doc1", seq=0, text_hash="t1-0", tokens=10)
    assert cat.all_chunk_ids() == chunk_ids(docs[0]) | chunk_ids(docs[1]) | chunk_ids(docs[2])
    assert cat.counts() == {"documents": 3, "failed": 0, "deleted": 0, "chunks": 8}


def test_documents_by_id_beyond_one_batch(cat):
    docs = [doc(i, n_chunks=1) for i in range(1_200)]  # more than the 500 ids per IN (...)
    cat.write_results(indexed=docs, failed=[], touched=[], deleted=[], run_id="run-1")
    wanted = [f"doc{i}" for i in range(0, 1_200, 1)]
    assert set(cat.documents_by_id(wanted)) == set(wanted)
    assert len(cat.chunks_of(wanted)) == 1_200
    assert len(cat.all_chunk_ids()) == 1_200


def test_rewriting_an_indexed_document_replaces_its_chunks(cat):
    cat.write_results(indexed=[doc(1, n_chunks=4), doc(2, n_chunks=2)], failed=[], touched=[], deleted=[], run_id="r1")
    changed = doc(1, n_chunks=2, content_hash="hash1-v2", tag="v2")
    cat.write_results(indexed=[changed], failed=[], touched=[], deleted=[], run_id="r2")
    rows = cat.chunks_of(["doc1"])["doc1"]
    assert [c.chunk_id for c in rows] == ["doc1v2-z", "doc1v2-y"]  # no leftover v1 chunk rows
    d1 = cat.documents_by_id(["doc1"])["doc1"]
    assert (d1.content_hash, d1.chunk_count) == ("hash1-v2", 2)
    assert cat.all_chunk_ids() == chunk_ids(changed) | chunk_ids(doc(2, n_chunks=2))
    assert cat.counts()["chunks"] == 4
    # the same chunk ids again (e.g. a retried batch) are not duplicated either
    cat.write_results(indexed=[changed], failed=[], touched=[], deleted=[], run_id="r3")
    assert cat.counts()["chunks"] == 4


def test_failed_documents_keep_the_last_indexed_content(cat):
    cat.write_results(indexed=[doc(1, n_chunks=3)], failed=[], touched=[], deleted=[], run_id="r1")
    failed_known = {**doc(1), "content_hash": "hash1-broken", "error": "ParseError: no text", "error_stage": "parse"}
    failed_known.pop("chunks")
    failed_new = {
        "doc_id": "doc9", "uri": "file:///corpus/doc9.pdf", "content_hash": "hash9", "size": 5, "modified": 1.5,
        "etag": None, "error": "UnsupportedFormat: .xyz", "error_stage": "read",
    }
    cat.write_results(indexed=[], failed=[failed_known, failed_new], touched=[], deleted=[], run_id="r2")

    got = cat.documents_by_id(["doc1", "doc9"])
    d1 = got["doc1"]
    assert d1.status == "failed"
    assert d1.error == "ParseError: no text" and d1.error_stage == "parse"
    assert d1.error_hash == "hash1-broken"
    assert d1.content_hash == "hash1"  # what the stores still hold
    assert d1.chunk_count == 3 and d1.stores == frozenset({"chroma", "milvus"})
    assert len(cat.chunks_of(["doc1"])["doc1"]) == 3  # its indexed chunks are not touched

    d9 = got["doc9"]
    assert d9.status == "failed" and d9.error_stage == "read" and d9.error == "UnsupportedFormat: .xyz"
    assert d9.content_hash is None and d9.error_hash == "hash9"
    assert d9.chunk_count == 0 and d9.stores == frozenset()
    assert cat.counts() == {"documents": 0, "failed": 2, "deleted": 0, "chunks": 3}

    # indexing it successfully later clears the error fields
    cat.write_results(indexed=[doc(1, n_chunks=1, content_hash="hash1-fixed")], failed=[], touched=[], deleted=[], run_id="r3")
    d1 = cat.documents_by_id(["doc1"])["doc1"]
    assert (d1.status, d1.error, d1.error_stage, d1.error_hash) == ("indexed", None, None, None)
    assert d1.content_hash == "hash1-fixed" and d1.chunk_count == 1


def test_touched_documents_get_new_metadata_only(cat):
    cat.write_results(indexed=[doc(1), doc(2)], failed=[], touched=[], deleted=[], run_id="r1")
    cat.write_results(
        indexed=[], failed=[], touched=[{"doc_id": "doc1", "modified": 1_800_000_000.5, "size": 4242, "etag": ""}],
        deleted=[], run_id="r2",
    )
    d1, d2 = (cat.documents_by_id()[k] for k in ("doc1", "doc2"))
    assert d1.modified_at == 1_800_000_000.5
    assert d1.size_bytes == 4242
    assert d1.etag is None  # empty etag stored as NULL
    assert (d1.status, d1.content_hash, d1.chunk_count) == ("indexed", "hash1", 2)
    assert d2.modified_at == 1_700_000_002.25  # others untouched
    assert len(cat.chunks_of(["doc1"])["doc1"]) == 2


def test_deleted_documents(cat):
    cat.write_results(indexed=[doc(1, n_chunks=3), doc(2, n_chunks=2)], failed=[], touched=[], deleted=[], run_id="r1")
    cat.write_results(indexed=[], failed=[], touched=[], deleted=["doc1", "never-seen"], run_id="r2")
    got = cat.documents_by_id()
    assert set(got) == {"doc1", "doc2"}  # deleting an unknown id creates nothing
    assert got["doc1"].status == "deleted" and got["doc1"].chunk_count == 0
    assert got["doc2"].status == "indexed"
    assert cat.chunks_of(["doc1"]) == {}
    assert cat.all_chunk_ids() == chunk_ids(doc(2, n_chunks=2))
    assert set(cat.live_documents()) == {"doc2"}
    assert cat.counts() == {"documents": 1, "failed": 0, "deleted": 1, "chunks": 2}
    with cat.engine.connect() as conn:
        last = conn.execute(sa.text("SELECT last_run_id FROM documents WHERE doc_id = 'doc1'")).scalar_one()
    assert last == "r2"


def test_write_results_is_one_transaction(cat):
    cat.write_results(indexed=[doc(1, n_chunks=2)], failed=[], touched=[], deleted=[], run_id="r1")
    bad = doc(2)
    bad["uri"] = None  # violates NOT NULL after doc1's chunks were already rewritten in this call
    with pytest.raises(CatalogError):
        cat.write_results(indexed=[doc(1, n_chunks=5, tag="v2"), bad], failed=[], touched=[], deleted=["doc1"], run_id="r2")
    assert cat.all_chunk_ids() == chunk_ids(doc(1, n_chunks=2))
    assert set(cat.documents_by_id()) == {"doc1"}
    assert cat.documents_by_id()["doc1"].chunk_count == 2


# ---------------------------------------------------------------------------------- reads
def test_live_documents_by_uri_prefix(cat):
    uris = {
        1: "s3://bucket/reports/2024/a.pdf",
        2: "s3://bucket/reports/2025/b.pdf",
        3: "s3://bucket/reportsX/c.pdf",
        4: "s3://bucket/100%_done/d.txt",
        5: "s3://bucket/100X-done/e.txt",  # would match "100%_done" if % and _ were wildcards
        6: "s3://bucket/a_b/f.txt",
        7: "s3://bucket/aXb/g.txt",  # would match "a_b" if _ were a wildcard
        8: "s3://bucket/reports/2024/deleted.pdf",
    }
    cat.write_results(indexed=[doc(i, uri=u, n_chunks=1) for i, u in uris.items()], failed=[], touched=[], deleted=[], run_id="r1")
    cat.write_results(indexed=[], failed=[], touched=[], deleted=["doc8"], run_id="r2")

    assert set(cat.live_documents()) == {f"doc{i}" for i in range(1, 8)}
    assert set(cat.live_documents("s3://bucket/reports/")) == {"doc1", "doc2"}
    assert set(cat.live_documents("s3://bucket/reports")) == {"doc1", "doc2", "doc3"}
    assert set(cat.live_documents("s3://bucket/100%_done/")) == {"doc4"}
    assert set(cat.live_documents("s3://bucket/100%")) == {"doc4"}
    assert set(cat.live_documents("s3://bucket/a_b/")) == {"doc6"}
    assert set(cat.live_documents("s3://bucket/a_")) == {"doc6"}
    assert cat.live_documents("s3://other/") == {}


def test_live_documents_prefix_is_case_sensitive(cat):
    cat.write_results(
        indexed=[doc(1, uri="s3://bucket/Reports/a.pdf", n_chunks=1), doc(2, uri="s3://bucket/reports/b.pdf", n_chunks=1)],
        failed=[], touched=[], deleted=[], run_id="r1",
    )
    # S3 keys and POSIX paths are case-sensitive: these are two different folders
    assert set(cat.live_documents("s3://bucket/reports/")) == {"doc2"}
    assert set(cat.live_documents("s3://bucket/Reports/")) == {"doc1"}


def test_live_documents_includes_failed(cat):
    cat.write_results(indexed=[doc(1, n_chunks=1)], failed=[], touched=[], deleted=[], run_id="r1")
    f = {"doc_id": "doc2", "uri": "file:///corpus/doc2.txt", "content_hash": "h", "error": "x", "error_stage": "parse"}
    cat.write_results(indexed=[], failed=[f], touched=[], deleted=[], run_id="r2")
    assert set(cat.live_documents("file:///corpus/")) == {"doc1", "doc2"}


# ---------------------------------------------------------------------------------- runs
def test_runs_start_finish_and_last(cat, monkeypatch):
    clock = iter(f"2026-01-01T00:00:{s:02d}+00:00" for s in range(60))
    monkeypatch.setattr(catalog_mod, "utcnow", lambda: next(clock))
    cat.start_run("run-a", "/data/src", full_sync=True)
    cat.start_run("run-b", "s3://bucket/x", full_sync=False)
    running = cat.last_runs(5)
    assert [r["run_id"] for r in running] == ["run-b", "run-a"]
    assert running[0]["status"] == "running" and running[0]["finished_at"] is None
    assert running[0]["full_sync"] == 0 and running[1]["full_sync"] == 1
    assert all(running[0][k] == 0 for k in catalog_mod.RUN_COUNTS)

    report = {"seen": 10, "new": 3, "changed": 2, "unchanged": 5, "deleted": 1, "failed": 1, "chunks": 7,
              "encoded": 4, "cache_hits": 3, "seconds": {"parse": 0.5}}
    cat.finish_run("run-a", report)
    cat.finish_run("run-b", {"seen": 1}, status="failed")
    a = next(r for r in cat.last_runs(5) if r["run_id"] == "run-a")
    assert a["status"] == "success" and a["finished_at"] == "2026-01-01T00:00:02+00:00"
    assert {k: a[k] for k in catalog_mod.RUN_COUNTS} == {k: report[k] for k in catalog_mod.RUN_COUNTS}
    assert json.loads(a["report"]) == report
    assert a["source"] == "/data/src"
    b = cat.last_runs(1)
    assert len(b) == 1 and b[0]["run_id"] == "run-b" and b[0]["status"] == "failed" and b[0]["seen"] == 1


def test_last_runs_orders_runs_started_in_the_same_second(cat):
    # started_at has one-second resolution; the newest run must still come first
    for i in range(3):
        cat.start_run(f"run-{i}", "src", full_sync=False)
    assert [r["run_id"] for r in cat.last_runs(3)] == ["run-2", "run-1", "run-0"]
