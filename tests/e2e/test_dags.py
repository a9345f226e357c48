"""Every DAG imports; rag_ingest runs end to end through the real Airflow CLI (`airflow dags test`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rag_ops.catalog import Catalog
from rag_ops.config import Settings
from rag_ops.stores import open_store
from tests.conftest import write_corpus
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.slow


def test_every_dag_imports_and_is_wired_as_designed():
    code = r"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=%r)
out = {"errors": {k: v[-500:] for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    out.setdefault("params", {})[dag_id] = sorted(dag.params.keys())
    out.setdefault("retries", {})[dag_id] = {t.task_id: t.retries for t in dag.tasks}
print(json.dumps(out))
""" % str(REPO / "dags")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == {}
    assert out["dags"]["rag_ingest"] == {
        "discover_documents": ["process_batch"],
        "process_batch": ["quality_gate"],
        "quality_gate": ["upsert_chroma", "upsert_milvus"],
        "upsert_chroma": ["commit_catalog"],
        "upsert_milvus": ["commit_catalog"],
        "commit_catalog": [],
    }
    assert out["params"]["rag_ingest"] == [
        "batch_size", "full_sync", "quality_max_duplicate_rate", "quality_max_failure_share",
        "quality_max_near_duplicate_rate", "quality_min_printable_ratio", "retry_quarantined", "scope", "source",
        "stores",
    ]
    assert out["dags"]["rag_recall"] == {
        "prepare_golden_sets": ["score_golden_set"],
        "score_golden_set": ["check_recall", "plot_recall"],
        "check_recall": [],
        "plot_recall": [],
    }
    assert out["params"]["rag_recall"] == ["floors", "stores", "tolerance", "window"]
    assert out["retries"]["rag_recall"]["check_recall"] == 0  # the same index scores the same
    assert out["dags"]["rag_reembed"] == {"check_drift": ["request_reindex"], "request_reindex": []}
    assert out["params"]["rag_reembed"] == ["stores"]
    assert out["retries"]["rag_reembed"]["request_reindex"] == 0
    steps = ["plan_reindex", "plan_build", "build_batch", "commit_build", "catch_up", "quality_gate", "recall_gate", "swap",
             "retire_old_versions"]
    expected = {a: sorted([b, "mark_failed"]) for a, b in zip(steps, steps[1:])}
    expected["plan_reindex"] = sorted(steps[1:])  # every step takes its context (by XCom)
    expected["retire_old_versions"] = ["mark_failed"]
    expected["mark_failed"] = []
    assert out["dags"]["rag_reindex"] == expected
    assert out["params"]["rag_reindex"] == ["force", "max_seconds", "max_tokens", "reason", "stores"]
    assert {t for t, r in out["retries"]["rag_reindex"].items() if r == 0} == {"plan_reindex", "quality_gate", "recall_gate", "mark_failed"}
    assert out["dags"]["ragops_after_ingest"] == {"export_run_figures": []}  # dags/examples/after_ingest.py
    retries = out["retries"]["rag_ingest"]
    assert retries.pop("quality_gate") == 0  # same data, same verdict: no retry
    assert all(r >= 2 for r in retries.values())


def _last_report(settings: Settings) -> dict:
    cat = Catalog(settings.catalog_db_url)
    try:
        run = cat.last_runs(1)[0]
        assert run["status"] == "success"
        return json.loads(run["report"])
    finally:
        cat.close()


def _state(settings: Settings) -> dict:
    cat = Catalog(settings.catalog_db_url)
    ids = cat.all_chunk_ids()
    cat.close()
    stores = {}
    for name in ("chroma", "milvus"):
        with open_store(name, settings) as store:
            stores[name] = store.all_ids()
    return {"catalog": ids, **stores}


def test_after_ingest_example_exports_the_runs_figures(airflow_cli, tmp_path):
    """dags/examples/after_ingest.py, as a data engineer copies it: after an ingest, its task
    writes the run's figures where the docs say."""
    from rag_ops.pipeline import ingest

    src = write_corpus(tmp_path / "src")
    report = ingest(Settings(data_dir=airflow_cli.data_dir, source=str(src)))
    airflow_cli.dags_test({}, dag_id="ragops_after_ingest")
    files = list((airflow_cli.data_dir / "exports").glob("ingest_*.json"))
    assert len(files) == 1, files
    figures = json.loads(files[0].read_text())
    assert figures["run_id"] == report["run_id"] and figures["new"] == 3 and figures["chunks"] == report["chunks"]
    assert set(figures) >= {"encoded", "cache_hits", "upserted", "failed"}


def test_rag_ingest_end_to_end(airflow_cli, tmp_path):
    src = write_corpus(tmp_path / "src")
    settings = Settings(data_dir=airflow_cli.data_dir, source=str(src))
    conf = {"source": str(src)}

    airflow_cli.dags_test(conf)
    first = _last_report(settings)
    state = _state(settings)
    assert first["new"] == 3 and first["failed"] == 0 and first["chunks"] >= 3
    assert state["catalog"] and state["catalog"] == state["chroma"] == state["milvus"]

    airflow_cli.dags_test(conf)  # nothing changed: no encodes, no upserts
    second = _last_report(settings)
    assert second["unchanged"] == 3 and second["encoded"] == 0
    assert second["upserted"] == {"chroma": 0, "milvus": 0}
    assert _state(settings) == state

    edited = src / "policies/travel.md"
    edited.write_text(edited.read_text().replace("60 EUR per day", "75 EUR per day"))
    airflow_cli.dags_test(conf)
    third = _last_report(settings)
    after_edit = _state(settings)
    assert third["changed"] == 1 and third["unchanged"] == 2 and third["encoded"] >= 1
    gone, added = state["catalog"] - after_edit["catalog"], after_edit["catalog"] - state["catalog"]
    assert gone and added and len(added) == third["upserted"]["chroma"] == third["upserted"]["milvus"]
    assert after_edit["catalog"] == after_edit["chroma"] == after_edit["milvus"]

    (src / "support/api.html").unlink()
    airflow_cli.dags_test({**conf, "full_sync": True})
    fourth = _last_report(settings)
    final = _state(settings)
    assert fourth["deleted"] == 1
    assert final["catalog"] == final["chroma"] == final["milvus"]
    assert len(final["catalog"]) < len(after_edit["catalog"])


def test_rag_ingest_store_param_skips_the_other_store(airflow_cli, tmp_path):
    src = write_corpus(tmp_path / "src")
    settings = Settings(data_dir=airflow_cli.data_dir, source=str(src))
    airflow_cli.dags_test({"source": str(src), "stores": ["milvus"]})
    report = _last_report(settings)
    assert report["upserted"] == {"milvus": report["chunks"]}
    state = _state(settings)
    assert state["chroma"] == set() and state["milvus"] == state["catalog"]
