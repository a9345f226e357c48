"""Faults: a store that is down, Airflow's error translation, a SIGKILL in the middle of an
upsert, ``verify``/``--repair`` after tampering, and the quarantine listing.

Everything is real: Chroma and Milvus Lite on tmp_path, the packaged model, real files, real
subprocesses. A "down" store is a server address on a loopback port nothing listens on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import DOCS, write_corpus
from rag_ops import pipeline
from rag_ops.catalog import Catalog
from rag_ops.config import Settings, load_settings
from rag_ops.errors import StoreError
from rag_ops.stores import StoredChunk, open_store
from rag_ops.verify import verify

REPO = Path(__file__).resolve().parent.parent
STORES = ("chroma", "milvus")


# ---------------------------------------------------------------------------- helpers
def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_ids(settings: Settings, name: str) -> set[str]:
    with open_store(name, settings) as store:
        return store.all_ids()


def store_count(settings: Settings, name: str) -> int:
    """Rows in the collection (Milvus counts duplicate primary keys separately)."""
    with open_store(name, settings) as store:
        return store.count()


def with_catalog(settings: Settings, fn):
    cat = Catalog(settings.catalog_db_url)
    cat.migrate()
    try:
        return fn(cat)
    finally:
        cat.close()


def catalog_ids(settings: Settings) -> set[str]:
    return with_catalog(settings, lambda c: c.all_chunk_ids())


def catalog_counts(settings: Settings) -> dict[str, int]:
    return with_catalog(settings, lambda c: c.counts())


def catalog_runs(settings: Settings) -> list[dict]:
    return with_catalog(settings, lambda c: c.last_runs(50))


def assert_stores_match_catalog(settings: Settings) -> set[str]:
    """Every store holds exactly the catalog's chunk ids, once each. Returns those ids."""
    want = catalog_ids(settings)
    assert want, "the catalog lists no chunks"
    for name in STORES:
        have = store_ids(settings, name)
        assert have == want, (
            f"{name}: missing {len(want - have)} {sorted(want - have)[:3]}, orphans {len(have - want)} "
            f"{sorted(have - want)[:3]}"
        )
        assert store_count(settings, name) == len(want), f"{name} holds duplicate rows"
    return want


def cli_env(data_dir: Path, source: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_") or k == "RAGOPS_MODEL_CACHE_DIR"}
    env.update(RAGOPS_DATA_DIR=str(data_dir), RAGOPS_SOURCE=str(source), RAGOPS_BATCH_SIZE="2", **extra)
    return env


def ragops(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rag_ops", *args], env=env, cwd=str(REPO), capture_output=True, text=True,
        timeout=timeout,
    )


def last_json(proc: subprocess.CompletedProcess):
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no stdout (exit {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


def report_line(text: str) -> None:
    """Numbers worth reading in the log (run pytest with -s or -rA to see them)."""
    print(f"[faults] {text}")


# ---------------------------------------------------------------------------- 1. a store that is down
@pytest.mark.parametrize("helpers", [False, True], ids=["one-process", "store-writer-process"])
@pytest.mark.parametrize("down", STORES)
def test_store_down_fails_the_run_and_the_next_run_finishes_from_the_cache(settings, down, helpers):
    port = closed_port()
    if down == "chroma":
        broken = settings.replace(chroma_host="127.0.0.1", chroma_port=port)
    else:
        broken = settings.replace(milvus_uri=f"http://127.0.0.1:{port}")
    healthy = next(s for s in STORES if s != down)

    with pytest.raises(StoreError) as info:  # with helpers, Milvus is written from a process of its own
        pipeline.ingest(broken, helper_processes=helpers)
    err = info.value
    assert err.retryable is True
    assert down in str(err) and f"127.0.0.1:{port}" in str(err), str(err)

    # nothing is recorded as indexed; the run is recorded as failed, with the error
    counts = catalog_counts(settings)
    assert counts["documents"] == 0 and counts["chunks"] == 0, counts
    runs = catalog_runs(settings)
    assert [r["status"] for r in runs] == ["failed"], runs
    assert "StoreError" in (runs[0]["report"] or "") and f"127.0.0.1:{port}" in runs[0]["report"]
    # the embedded store was written side by side and may already hold the chunks (uncommitted)
    held_before = store_ids(settings, healthy)

    # the store is back (embedded defaults for both): the next run finishes everything
    report = pipeline.ingest(settings)
    assert report["new"] == 3 and report["failed"] == 0, report
    assert report["encoded"] == 0, f"the cache should have kept the vectors: {report['encoded']} re-encoded"
    assert report["cache_hits"] == report["chunks"] > 0
    ids = assert_stores_match_catalog(settings)
    assert held_before <= ids, f"{healthy} held ids the catalog never listed: {sorted(held_before - ids)[:3]}"
    assert report["upserted"][down] == len(ids)
    assert report["upserted"][healthy] == len(ids) - len(held_before)  # only what it lacked
    assert catalog_counts(settings)["documents"] == 3
    assert sorted(r["status"] for r in catalog_runs(settings)) == ["failed", "success"]
    report_line(f"{down} down: {healthy} held {len(held_before)}/{len(ids)} chunks; rerun encoded {report['encoded']}")


# ---------------------------------------------------------------------------- 2. airflow translation
@pytest.fixture
def airflow_env(monkeypatch, tmp_path, corpus):
    """RAGOPS_* for the adapter (it builds settings from the environment plus params)."""
    for key in list(os.environ):
        if key.startswith("RAGOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
    monkeypatch.setenv("RAGOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGOPS_SOURCE", str(corpus))
    monkeypatch.setenv("RAGOPS_BATCH_SIZE", "2")
    return monkeypatch


def test_airflow_store_down_is_retryable_and_bad_setting_fails_at_once(airflow_env, tmp_path):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from rag_ops import airflow as adapter

    port = closed_port()
    airflow_env.setenv("RAGOPS_CHROMA_HOST", "127.0.0.1")
    airflow_env.setenv("RAGOPS_CHROMA_PORT", str(port))
    run_id = "manual__2026-01-01T00:00:00+00:00"
    settings = load_settings()
    assert settings.chroma_host == "127.0.0.1" and settings.data_dir == tmp_path / "data"
    plan = pipeline.discover(settings, run_id=run_id)
    assert plan.batches
    for ref in plan.batches:
        pipeline.process_batch(settings, ref)
    pipeline.quality_gate(settings, plan.ref)

    context = {
        "params": {"source": "", "full_sync": False, "batch_size": 2, "stores": ["chroma", "milvus"], "scope": "auto"},
        "run_id": run_id,
    }
    with pytest.raises(AirflowException) as info:
        adapter.upsert_store(context, "chroma")
    exc = info.value
    assert type(exc) is AirflowException and not isinstance(exc, AirflowFailException), type(exc)
    assert isinstance(exc.__cause__, StoreError)
    assert "StoreError" in str(exc) and "chroma" in str(exc) and f"127.0.0.1:{port}" in str(exc), str(exc)

    # the same context reaches the staged run: the embedded store takes it
    done = adapter.upsert_store(context, "milvus")
    assert done["store"] == "milvus" and done["upserted"] == len(store_ids(settings, "milvus")) > 0

    # a setting no retry can fix fails the task at once
    airflow_env.setenv("RAGOPS_CHUNK_OVERLAP", "300")  # > chunk_size 250
    with pytest.raises(AirflowFailException) as info:
        adapter.discover({**context, "run_id": "manual__2026-01-02T00:00:00+00:00"})
    assert "ConfigError" in str(info.value) and "chunk_overlap" in str(info.value), str(info.value)


# ---------------------------------------------------------------------------- 3. SIGKILL mid-upsert
TOPICS = ["battery", "hotel", "api", "brakes", "sensors", "firmware", "charging", "warranty", "shipping"]

KILL_SCRIPT = """
import importlib, os, signal
from rag_ops.config import Settings
from rag_ops import pipeline

mod = importlib.import_module({module!r})
cls = getattr(mod, {cls!r})
original = cls.upsert
calls = [0]

def upsert(self, chunks, vectors):
    n = original(self, chunks, vectors)
    calls[0] += 1
    print(f"upsert call {{calls[0]}}: {{len(chunks)}} chunks", flush=True)
    if calls[0] >= {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    return n

cls.upsert = upsert
pipeline.ingest(Settings(data_dir={data_dir!r}, source={source!r}, batch_size=2))
print("NOT KILLED", flush=True)
"""


def write_small_corpus(root: Path, edition: int = 1) -> Path:
    """Nine distinct one-chunk documents: five batches of two. Another edition changes every text."""
    docs = {}
    for i, topic in enumerate(TOPICS):
        body = " ".join(
            f"The {topic} rule number {j} says item {i * 10 + j} must be checked every {edition} weeks by the {topic} team."
            for j in range(12)
        )
        docs[f"{topic}/doc{i}.txt"] = f"{topic.title()} guide {i}, edition {edition}\n\n{body}\n"
    return write_corpus(root, docs)


@pytest.mark.parametrize(
    "killed, after, edited",
    [("milvus", 1, False), ("milvus", 2, False), ("chroma", 1, False), ("milvus", 2, True)],
    ids=["milvus-after-1", "milvus-after-2", "chroma-after-1", "milvus-after-2-every-doc-edited"],
)
def test_sigkill_during_upsert_then_rerun_converges(tmp_path, killed, after, edited):
    source = write_small_corpus(tmp_path / "src")
    settings = Settings(data_dir=tmp_path / "data", source=str(source), batch_size=2)
    old_ids: set[str] = set()
    if edited:  # a clean index first; the killed run replaces every document's chunks
        pipeline.ingest(settings)
        old_ids = assert_stores_match_catalog(settings)
        write_small_corpus(source, edition=2)
    module, cls = {"milvus": ("rag_ops.stores.milvus", "MilvusStore"), "chroma": ("rag_ops.stores.chroma", "ChromaStore")}[killed]
    script = textwrap.dedent(
        KILL_SCRIPT.format(module=module, cls=cls, after=after, data_dir=str(settings.data_dir), source=str(source))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_") or k == "RAGOPS_MODEL_CACHE_DIR"}
    child = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -signal.SIGKILL, f"exit {child.returncode}\n{child.stdout}\n{child.stderr[-3000:]}"
    assert "NOT KILLED" not in child.stdout
    assert child.stdout.count("upsert call") == after, child.stdout

    # the killed run committed nothing: the catalog still describes the state before it
    assert catalog_counts(settings)["documents"] == (len(TOPICS) if edited else 0)
    assert catalog_ids(settings) == old_ids
    held = {name: store_ids(settings, name) for name in STORES}

    report = pipeline.ingest(settings)
    assert report["failed"] == 0, report
    assert (report["changed"] if edited else report["new"]) == len(TOPICS), report
    ids = assert_stores_match_catalog(settings)
    assert len(ids) == report["chunks"] and not ids & old_ids
    for name in STORES:
        assert held[name] <= ids | old_ids, f"{name} held ids no run produced: {sorted(held[name] - ids - old_ids)[:3]}"
    assert held[killed] & ids < ids, f"the kill did not interrupt {killed}: it held every new chunk already"
    assert report["upserted"][killed] == len(ids - held[killed])
    result = verify(settings)
    assert result["ok"] is True, result
    assert report["encoded"] == 0, f"{report['encoded']} chunks re-encoded after the kill"
    assert report["cache_hits"] == report["chunks"]
    report_line(
        f"SIGKILL {killed} after {after} upsert call(s){' (every doc edited)' if edited else ''}: held before rerun "
        f"{ {n: f'{len(h & ids)} new + {len(h & old_ids)} old' for n, h in held.items()} } of {len(ids)}; "
        f"rerun encoded {report['encoded']}, cache hits {report['cache_hits']}, upserted {report['upserted']}, "
        f"removed {report['removed']}"
    )


# ---------------------------------------------------------------------------- 4. verify / --repair
LONG_DOC = "# Fleet maintenance handbook\n\n" + "\n\n".join(
    f"## Procedure {n}\n\n"
    + " ".join(
        f"Step {k} of procedure {n}: inspect component {n * 100 + k} and log the torque reading in the sheet."
        for k in range(14)
    )
    for n in range(4)
)


def test_verify_reports_tampering_and_repair_fixes_it(tmp_path, corpus, settings):
    write_corpus(corpus, {"manuals/handbook.md": LONG_DOC})
    first = pipeline.ingest(settings)
    assert first["new"] == len(DOCS) + 1 and first["failed"] == 0, first
    ids = assert_stores_match_catalog(settings)
    by_doc = with_catalog(settings, lambda c: c.chunks_of(sorted(c.documents_by_id())))
    multi = [rows for rows in by_doc.values() if len(rows) >= 3]
    assert multi, f"the handbook should make several chunks: {[len(r) for r in by_doc.values()]}"
    # lose one chunk out of the middle of the long document and the only chunk of another one
    single = next(rows for rows in by_doc.values() if len(rows) == 1)
    lost = sorted({multi[0][1].chunk_id, single[0].chunk_id})
    with open_store("milvus", settings) as milvus:
        milvus.delete_ids(lost)
    orphan_id = "orphan" + uuid.uuid4().hex[:24]
    vector = np.random.default_rng(7).standard_normal((1, 384)).astype(np.float32)
    vector /= np.linalg.norm(vector)
    with open_store("chroma", settings) as chroma:
        chroma.upsert(
            [StoredChunk(id=orphan_id, text="a vector no run wrote", doc_id="f" * 32, source_uri="/nowhere.txt", seq=0)],
            vector,
        )
    want = {
        "chroma": {"expected": len(ids), "actual": len(ids) + 1, "missing": 0, "orphans": 1},
        "milvus": {"expected": len(ids), "actual": len(ids) - len(lost), "missing": len(lost), "orphans": 0},
    }

    env = cli_env(settings.data_dir, corpus)
    before_cli = ragops(env, "verify", "--json")
    assert before_cli.returncode == 3, f"exit {before_cli.returncode}\n{before_cli.stderr[-3000:]}"
    out = last_json(before_cli)
    assert out["ok"] is False and out["stores"] == want, out

    found = verify(settings)
    assert found["ok"] is False and found["stores"] == want, found
    assert "repaired" not in found

    fixed = verify(settings, repair=True)
    assert fixed["ok"] is True, fixed
    assert all(v["expected"] == v["actual"] == len(ids) and not v["missing"] and not v["orphans"]
               for v in fixed["stores"].values()), fixed
    rep = fixed["repaired"]
    assert rep["orphans_removed"] == {"chroma": 1, "milvus": 0}, rep
    assert rep["documents_restored"] == 2, rep
    assert rep["encoded"] == 0, rep
    assert rep["before"] == want
    assert assert_stores_match_catalog(settings) == ids
    assert orphan_id not in store_ids(settings, "chroma")

    after_cli = ragops(env, "verify", "--json")
    assert after_cli.returncode == 0, f"exit {after_cli.returncode}\n{after_cli.stderr[-3000:]}"
    out = last_json(after_cli)
    assert out["ok"] is True and all(v["missing"] == v["orphans"] == 0 for v in out["stores"].values()), out

    # and the repair left the catalog consistent for the next plain run: nothing to do
    again = pipeline.ingest(settings)
    assert again["new"] == again["changed"] == again["restored"] == again["encoded"] == 0, again
    assert again["unchanged"] == len(DOCS) + 1
    assert all(n == 0 for n in again["upserted"].values()), again


# ---------------------------------------------------------------------------- 5. quarantine listing
def test_quarantine_cli_lists_a_corrupt_file_with_stage_and_reason(tmp_path, corpus, settings):
    broken = corpus / "reports" / "broken.pdf"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"%PDF-1.7\n1 0 obj <</Type /Catalog /Pages 2 0 R>>\nnot really a pdf \x00\xff\xfe\n" * 20)
    report = pipeline.ingest(settings)
    assert report["new"] == len(DOCS) and report["failed"] == 1, report

    proc = ragops(cli_env(settings.data_dir, corpus), "quarantine", "--json")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    rows = last_json(proc)
    assert [r["uri"] for r in rows] == [str(broken)], rows
    row = rows[0]
    assert row["stage"] == "parse", row
    assert "pdf" in row["reason"].lower() and len(row["reason"]) > 10, row
    assert row["first_seen"] and row["last_seen"] and row["last_run_id"] == report["run_id"]
    assert "not really a pdf" not in proc.stdout  # the document's bytes are not echoed


def test_milvus_lite_collection_half_created_by_a_killed_process_is_recovered(tmp_path):
    """A process killed while Milvus Lite creates a collection leaves its folder behind (seen in
    the SIGKILL test above): the next run moves it aside, creates the collection and writes."""
    settings = Settings(data_dir=tmp_path / "data")
    with open_store("milvus", settings) as store:
        assert not store.exists()
        db = Path(store.address)
        (db / "collections" / store.collection).mkdir(parents=True)  # what the killed process left
        store.upsert([StoredChunk(id="c1", text="hello", doc_id="d1", source_uri="u", seq=0)],
                     np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32))
        assert store.count() == 1
    aside = list(Path(f"{db}.interrupted").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(store.collection + "-")
    with open_store("milvus", settings) as again:  # reopens cleanly, data kept
        assert again.count() == 1
