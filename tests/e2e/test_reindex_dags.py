"""rag_reembed and rag_reindex through the real Airflow CLI: drift emits the re-index asset event
(and a same-distribution batch does not); a forced re-index swaps; an over-budget one stops."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from rag_ops import pipeline
from rag_ops.config import Settings
from rag_ops.versions import open_catalog
from tests.conftest import SHARED

pytestmark = pytest.mark.slow

DATASETS = SHARED / "datasets"


def _write_titles(dest: Path, dataset: str, lines: list[int]) -> None:
    """The titles of documents of a BEIR corpus (by line number) as text files.

    Titles keep the encoding cheap while the samples stay large enough for the drift tests'
    defaults (one vector per document; at 80 documents a side, two random SciFact sets were
    sometimes told apart by chance, at 250 they were not)."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = set(lines)
    with open(DATASETS / dataset / "corpus.jsonl") as fh:
        for i, line in enumerate(fh):
            if i in wanted:
                title = json.loads(line).get("title", "").strip()
                if title:
                    (dest / f"{dataset}_{i:05d}.txt").write_text(title + "\n")


def _reindex_events(home: Path) -> int:
    conn = sqlite3.connect(home / "airflow.db")
    try:
        return conn.execute(
            "SELECT COUNT(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri LIKE 'ragops://reindex/%'"
        ).fetchone()[0]
    finally:
        conn.close()


def _task_states(home: Path, dag_id: str) -> dict[str, str]:
    conn = sqlite3.connect(home / "airflow.db")
    try:
        run = conn.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()[0]
        return dict(conn.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run)))
    finally:
        conn.close()


@pytest.mark.skipif(not (DATASETS / "scifact" / "corpus.jsonl").exists(), reason="../shared/datasets is not beside the repo")
def test_reembed_emits_the_reindex_event_only_on_drift(airflow_cli, tmp_path):
    import random

    src = tmp_path / "src"
    # two disjoint random sets of SciFact documents, drawn once with a fixed seed (the drift
    # report depends only on the texts); the false-positive rate of the defaults over many
    # draws is measured in bench/drift_bench.py, not here
    sample = random.Random(6).sample(range(5183), 500)
    _write_titles(src / "ref", "scifact", sample[:250])
    settings = Settings(data_dir=airflow_cli.data_dir, source=str(src))
    airflow_cli.env["RAGOPS_SOURCE"] = str(src)
    pipeline.ingest(settings)
    before = _reindex_events(airflow_cli.home)

    airflow_cli.dags_test({}, dag_id="rag_reembed")  # first check draws the reference: no batch yet
    assert _task_states(airflow_cli.home, "rag_reembed")["request_reindex"] == "skipped"

    _write_titles(src / "same", "scifact", sample[250:])  # more of the same collection
    pipeline.ingest(settings)
    airflow_cli.dags_test({}, dag_id="rag_reembed")
    states = _task_states(airflow_cli.home, "rag_reembed")
    assert states == {"check_drift": "success", "request_reindex": "skipped"}, states
    assert _reindex_events(airflow_cli.home) == before

    _write_titles(src / "other", "cranfield", list(range(125)))  # aerodynamics against biomedicine
    pipeline.ingest(settings)
    airflow_cli.dags_test({}, dag_id="rag_reembed")
    assert _task_states(airflow_cli.home, "rag_reembed")["request_reindex"] == "success"
    assert _reindex_events(airflow_cli.home) == before + 1
    cat = open_catalog(settings)
    try:
        reports = cat.drift_reports(collection="ragops")
    finally:
        cat.close()
    assert [r["drifted"] for r in reports[-2:]] == [False, True]
    assert reports[-1]["batch_size"] >= 50 and reports[-1]["auc"] > 0.55


def test_reindex_dag_swaps_and_stops_over_budget(airflow_cli, tmp_path):
    from tests.conftest import write_corpus

    settings = Settings(data_dir=airflow_cli.data_dir, source=str(write_corpus(tmp_path / "src")))
    airflow_cli.env["RAGOPS_SOURCE"] = settings.source
    pipeline.ingest(settings)

    airflow_cli.dags_test({}, dag_id="rag_reindex")  # nothing drifted: every step skipped
    states = _task_states(airflow_cli.home, "rag_reindex")
    assert states["plan_reindex"] == "success" and states["swap"] == "skipped", states

    airflow_cli.dags_test({"force": True, "reason": "e2e"}, dag_id="rag_reindex")
    states = _task_states(airflow_cli.home, "rag_reindex")
    assert all(states[t] == "success" for t in ("plan_reindex", "plan_build", "build_batch", "commit_build", "catch_up",
                                                 "quality_gate", "recall_gate", "swap", "retire_old_versions")), states
    assert states["mark_failed"] == "skipped"
    cat = open_catalog(settings)
    try:
        live = cat.live_versions("ragops")
    finally:
        cat.close()
    assert {s: r["version"] for s, r in live.items()} == {"chroma": 2, "milvus": 2}
    assert "e2e" in live["chroma"]["reason"]

    airflow_cli.env["RAGOPS_CHUNK_SIZE"] = "64"  # config drift: every chunk changes
    proc = airflow_cli.dags_test({"max_tokens": 10}, dag_id="rag_reindex", check=False)
    out = proc.stdout + proc.stderr
    assert "BudgetExceeded" in out and "tokens to encode > budget of 10 tokens" in out, out[-3000:]
    cat = open_catalog(settings)
    try:
        assert {r["version"] for r in cat.versions("ragops")} == {1, 2}  # nothing registered, nothing built
        assert cat.lock_holder("ragops") is None
    finally:
        cat.close()
