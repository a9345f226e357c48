"""The ``ragops`` CLI as a real subprocess (real model, real stores under tmp dirs).

Each call that embeds loads the model (several seconds), so one indexed data dir is shared by the
read-only tests of this module; tests that change state use their own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DOCS, write_corpus

REPO = Path(__file__).resolve().parent.parent
REPORT_INTS = ("seen", "new", "changed", "unchanged", "deleted", "failed", "chunks", "encoded", "cache_hits")
# a distinctive sentence of robots/battery.txt: must never reach the logs or the ingest report
SECRET_SENTENCE = "Press the red release latch on the left flank"
assert SECRET_SENTENCE in DOCS["robots/battery.txt"]


def cli_env(data_dir: Path, source: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_") or k == "RAGOPS_MODEL_CACHE_DIR"}
    env.update(RAGOPS_DATA_DIR=str(data_dir), RAGOPS_SOURCE=str(source), RAGOPS_BATCH_SIZE="2", **extra)
    return env


def ragops(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rag_ops", *args], env=env, cwd=str(REPO), capture_output=True, text=True,
        timeout=timeout,
    )


def last_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstderr:\n{proc.stderr[-3000:]}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"no stdout; stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


def assert_no_document_text(*outputs: str) -> None:
    for out in outputs:
        assert SECRET_SENTENCE not in out
        assert "red release latch" not in out


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A data dir indexed once by ``ragops ingest --json``: (env, completed process, report)."""
    root = tmp_path_factory.mktemp("cli_shared")
    env = cli_env(root / "data", write_corpus(root / "src"))
    proc = ragops(env, "ingest", "--json")
    return env, proc, last_json(proc)


# ---------------------------------------------------------------------------- ingest
def test_ingest_json_report(indexed):
    _, proc, report = indexed
    for key in REPORT_INTS:
        assert type(report[key]) is int, (key, report.get(key))
    assert report["seen"] == 3 and report["new"] == 3 and report["failed"] == 0 and report["deleted"] == 0
    assert report["chunks"] >= 3 and report["encoded"] == report["chunks"] and report["cache_hits"] == 0
    n = report["chunks"]
    assert report["upserted"] == {"chroma": n, "milvus": n}
    assert report["removed"] == {"chroma": 0, "milvus": 0}
    assert isinstance(report["seconds"], dict) and report["seconds"]
    for stage, secs in report["seconds"].items():
        assert isinstance(stage, str) and isinstance(secs, (int, float)) and secs >= 0, (stage, secs)
    assert {"parse", "chunk", "embed"} <= set(report["seconds"])


def test_ingest_never_prints_document_text(indexed):
    _, proc, _ = indexed
    assert " INFO " in proc.stderr, "expected INFO logs on stderr"
    assert_no_document_text(proc.stdout, proc.stderr)


def test_second_ingest_does_no_work(indexed):
    env, _, first = indexed
    report = last_json(ragops(env, "ingest", "--json"))
    assert report["encoded"] == 0
    assert report["unchanged"] == 3 and report["new"] == 0 and report["changed"] == 0
    assert report["upserted"] == {"chroma": 0, "milvus": 0}
    assert report["removed"] == {"chroma": 0, "milvus": 0}


def test_status_json_matches_the_index(indexed):
    env, _, report = indexed
    status = last_json(ragops(env, "status", "--json"))
    assert type(status["documents"]) is int and type(status["chunks"]) is int
    assert status["documents"] == 3
    assert status["chunks"] == report["chunks"]
    assert status["stores"] == {"chroma": report["chunks"], "milvus": report["chunks"]}
    # the last runs' encode figures (what a cost estimate learns from)
    run = next(r for r in status["runs"] if r["run_id"] == report["run_id"])  # other tests ingest again
    assert run["status"] == "success"
    assert run["encoded"] == report["encoded"] == report["chunks"]
    assert run["tokens_encoded"] == report["tokens_encoded"] > report["chunks"]
    assert run["encode_seconds"] == report["encode_seconds"] > 0
    assert run["tokens_per_second"] == pytest.approx(report["tokens_encoded"] / report["encode_seconds"], rel=0.01)


@pytest.mark.parametrize("store", ["milvus", "chroma"])
def test_query_json_returns_k_hits_best_first(indexed, store):
    env, _, _ = indexed
    proc = ragops(env, "query", "how long does a battery swap take", "--store", store, "-k", "2", "--json")
    hits = last_json(proc)
    assert isinstance(hits, list) and len(hits) == 2
    for h in hits:
        assert {"id", "score", "text", "doc_id", "source_uri"} <= set(h)
        assert isinstance(h["score"], (int, float)) and isinstance(h["text"], str) and h["text"]
        assert len(h["id"]) == 32 and len(h["doc_id"]) == 32
    assert hits[0]["source_uri"].endswith("battery.txt")
    assert "four minutes" in hits[0]["text"]
    assert hits[0]["score"] >= hits[1]["score"]
    assert hits[0]["id"] != hits[1]["id"]
    assert_no_document_text(proc.stderr)


def test_ingest_selected_store_only(tmp_path):
    env = cli_env(tmp_path / "data", write_corpus(tmp_path / "src"))
    report = last_json(ragops(env, "ingest", "--stores", "chroma", "--json"))
    assert report["stores"] == ["chroma"]
    assert report["upserted"] == {"chroma": report["chunks"]} and report["chunks"] >= 3
    assert "milvus" not in report["removed"]
    status = last_json(ragops(env, "status", "--json"))
    assert status["stores"] == {"chroma": report["chunks"], "milvus": 0}


def test_plain_ingest_then_full_sync_removes_a_deleted_file(tmp_path):
    src = write_corpus(tmp_path / "src")
    env = cli_env(tmp_path / "data", src)
    plain = ragops(env, "ingest")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "encoded" in plain.stdout
    assert "seen 3" in plain.stdout and "chroma +" in plain.stdout and "milvus +" in plain.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain.stdout.strip().splitlines()[-1])
    assert_no_document_text(plain.stdout, plain.stderr)
    produced = re.search(r"chunks: (\d+) produced", plain.stdout)
    assert produced, plain.stdout
    before = int(produced.group(1))
    assert before >= 3

    (src / "robots" / "battery.txt").unlink()
    report = last_json(ragops(env, "ingest", "--full-sync", "--json"))
    assert report["deleted"] == 1 and report["unchanged"] == 2 and report["encoded"] == 0
    assert report["removed"]["chroma"] >= 1 and report["removed"]["milvus"] >= 1

    status = last_json(ragops(env, "status", "--json"))
    assert status["documents"] == 2
    assert status["chunks"] < before
    assert status["chunks"] == before - report["removed"]["chroma"] == before - report["removed"]["milvus"]
    assert status["stores"] == {"chroma": status["chunks"], "milvus": status["chunks"]}


# ---------------------------------------------------------------------------- errors
def test_bad_setting_is_a_one_line_error(tmp_path):
    env = cli_env(tmp_path / "data", tmp_path / "src", RAGOPS_CHUNK_SIZE="abc")
    proc = ragops(env, "ingest", "--json", timeout=60)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert "RAGOPS_CHUNK_SIZE" in err and "abc" in err
    assert proc.stdout.strip() == ""


def quality_results(env: dict[str, str], run_id: str | None = None) -> list[dict]:
    """The catalog's recorded gate outcomes (of one run, or of all)."""
    import sqlalchemy as sa

    from rag_ops.catalog import Catalog, quality_results as table
    from rag_ops.config import Settings

    catalog = Catalog(Settings(data_dir=Path(env["RAGOPS_DATA_DIR"])).catalog_db_url)
    try:
        if run_id is not None:
            return catalog.quality_results_of(run_id)
        with catalog.read() as conn:
            return [dict(r) for r in conn.execute(sa.select(table)).mappings()]
    finally:
        catalog.close()


def test_every_gate_outcome_is_in_the_catalog(indexed):
    """The CLI's gate checks in its own process and hands its outcomes back; the run's process
    records each expectation's (the dashboard's quality panel reads them)."""
    env, _, report = indexed
    results = quality_results(env, report["run_id"])
    assert {r["suite"] for r in results} == {"documents", "chunks", "embeddings", "gate"}
    assert len(results) >= 20 and all(r["success"] for r in results), results


def test_a_failed_quality_gate_is_a_clear_error_and_writes_nothing(tmp_path):
    """The gate runs in its own process in the CLI: its failure still reaches the user as the
    named check, with the exit code of an error, no traceback, and no store or catalog write."""
    same = "Gate manual\n\nThe very same paragraph about quality gates, copied into every file.\n"
    env = cli_env(
        tmp_path / "data", write_corpus(tmp_path / "src", {f"copy{i}.txt": same for i in range(3)}),
        RAGOPS_QUALITY_MAX_DUPLICATE_RATE="0.1",
    )
    proc = ragops(env, "ingest", "--json")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "quality gate failed" in proc.stderr and "text_repeats" in proc.stderr and "0.666667" in proc.stderr
    assert "Traceback" not in proc.stderr and "leaked" not in proc.stderr, proc.stderr[-3000:]
    status = last_json(ragops(env, "status", "--json"))
    assert status["documents"] == 0 and status["stores"] == {"chroma": 0, "milvus": 0}, status
    # the failed checks are in Data Docs for the user to read
    pages = list((tmp_path / "data" / "quality" / "data_docs" / "validations" / "ragops_chunks").rglob("*.html"))
    assert len(pages) == 1 and "text_repeats" in pages[0].read_text(), pages
    # and recorded, with the ones that passed
    failed = [r for r in quality_results(env) if not r["success"]]
    assert [(r["suite"], r["column_name"]) for r in failed] == [("chunks", "text_repeats")], failed


def test_no_command_is_a_usage_error(tmp_path):
    proc = ragops(cli_env(tmp_path / "data", tmp_path / "src"), timeout=60)
    assert proc.returncode == 2
    assert "usage" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- re-index lock
def test_unlock_releases_a_dead_reindex_lock_and_fails_its_unfinished_versions(tmp_path):
    """A re-index that died keeps its lock (until the TTL) and a 'building' version; `ragops
    unlock` releases the lock, marks that version failed and leaves the live one alone."""
    from rag_ops.catalog import Catalog
    from rag_ops.config import Settings

    settings = Settings(data_dir=tmp_path / "data", source=str(tmp_path / "src"))
    cat = Catalog(settings.catalog_db_url)
    cat.migrate()
    common = {"index_name": "ragops", "embedding_model": "m", "model_id": "m", "model_hash": "h", "chunk_size": 250,
              "chunk_overlap": 32, "chunker_hash": "c"}
    cat.add_version({**common, "store": "chroma", "version": 1, "collection": "ragops__v1", "status": "live"})
    cat.add_version({**common, "store": "chroma", "version": 2, "collection": "ragops__v2", "status": "building",
                     "run_id": "dead-run"})
    cat.acquire_lock("ragops", "dead-run", ttl_seconds=3600)
    cat.close()
    env = cli_env(tmp_path / "data", tmp_path / "src")

    wrong = ragops(env, "unlock", "--holder", "other-run", timeout=60)
    assert wrong.returncode == 1 and "held by 'dead-run'" in wrong.stderr, wrong.stderr
    out = last_json(ragops(env, "unlock", "--holder", "dead-run", "--json", timeout=60))
    assert out["released"] is True and out["holder"] == "dead-run" and out["failed_versions"] == ["chroma:v2"]

    versions = last_json(ragops(env, "versions", "--json", timeout=60))
    assert versions["lock"] is None
    assert [(v["version"], v["status"]) for v in versions["versions"]] == [(1, "live"), (2, "failed")]
    assert "lock was broken" in versions["versions"][1]["error"]
    again = ragops(env, "unlock", timeout=60)
    assert again.returncode == 0 and "no re-index lock" in again.stdout
    cat = Catalog(settings.catalog_db_url)
    try:
        cat.acquire_lock("ragops", "next-run", ttl_seconds=3600)  # a new re-index can start at once
        assert cat.lock_holder("ragops")["holder"] == "next-run"
    finally:
        cat.close()
