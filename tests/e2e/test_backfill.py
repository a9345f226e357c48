"""A backfill over two past daily intervals, created through the REST API v2 of a running
Airflow (standalone, LocalExecutor, PostgreSQL metadata DB), ingests only the documents
modified in each interval."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from rag_ops.catalog import Catalog
from rag_ops.config import Settings
from rag_ops.identity import doc_id_for

pytestmark = pytest.mark.slow
UTC = dt.timezone.utc


def _touch(path: Path, text: str, when: dt.datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    ts = when.timestamp()
    os.utime(path, (ts, ts))


def _wait(predicate, timeout: float, what: str, every: float = 2.0):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def test_backfill_over_two_days_ingests_each_days_documents(standalone):
    api, http, tmp = standalone
    src = tmp / "src"
    # rag_ingest runs at 02:00 UTC over the previous day: interval [D 02:00, D+1 02:00)
    day1 = dt.datetime(2026, 11, 20, 2, tzinfo=UTC)
    day2 = day1 + dt.timedelta(days=1)
    _touch(src / "d1/alpha.txt", "Alpha procedure: restart the conveyor after a jam.", day1 + dt.timedelta(hours=5))
    _touch(src / "d1/beta.md", "# Beta\n\nBeta robots charge at dock B every night.", day1 + dt.timedelta(hours=20))
    _touch(src / "d2/gamma.txt", "Gamma shift starts at six in the morning.", day2 + dt.timedelta(hours=1))
    _touch(src / "old/delta.txt", "Delta notes from an earlier month.", day1 - dt.timedelta(days=9))

    def dag_known():
        r = http.get(f"{api}/api/v2/dags/rag_ingest", timeout=10)
        return r.status_code == 200

    _wait(dag_known, 180, "the dag-processor to register rag_ingest")
    r = http.patch(f"{api}/api/v2/dags/rag_ingest", json={"is_paused": False}, timeout=10)
    assert r.status_code == 200, r.text

    body = {
        "dag_id": "rag_ingest",
        "from_date": day1.isoformat(),
        "to_date": day2.isoformat(),
        "max_active_runs": 1,
        "reprocess_behavior": "none",
        "dag_run_conf": {},
    }
    r = http.post(f"{api}/api/v2/backfills", json=body, timeout=30)
    assert r.status_code in (200, 201), r.text

    def backfill_runs_done():
        runs = http.get(
            f"{api}/api/v2/dags/rag_ingest/dagRuns", params={"run_type": "backfill", "order_by": "logical_date"}, timeout=10
        ).json()["dag_runs"]
        if len(runs) == 2 and all(x["state"] in ("success", "failed") for x in runs):
            return runs
        return None

    runs = _wait(backfill_runs_done, 420, "both backfill runs to finish", every=3)
    assert [x["state"] for x in runs] == ["success", "success"], (tmp / "standalone.log").read_text()[-4000:]
    intervals = [(x["data_interval_start"][:10], x["data_interval_end"][:10]) for x in runs]
    assert intervals == [("2026-11-20", "2026-11-21"), ("2026-11-21", "2026-11-22")]

    settings = Settings(data_dir=tmp / "data", source=str(src))
    cat = Catalog(settings.catalog_db_url)
    try:
        reports = {}
        for run in runs:
            with cat.engine.connect() as conn:
                row = conn.execute(sa.text("SELECT report FROM runs WHERE run_id = :r"), {"r": run["dag_run_id"]}).first()
            assert row is not None, f"run {run['dag_run_id']} wrote no report"
            reports[run["data_interval_start"][:10]] = json.loads(row[0])
        docs = cat.documents_by_id()
    finally:
        cat.close()
    assert (reports["2026-11-20"]["seen"], reports["2026-11-20"]["new"]) == (2, 2)
    assert (reports["2026-11-21"]["seen"], reports["2026-11-21"]["new"]) == (1, 1)
    indexed = {row.uri for row in docs.values() if row.status == "indexed"}
    assert indexed == {str(src / "d1/alpha.txt"), str(src / "d1/beta.md"), str(src / "d2/gamma.txt")}
    assert doc_id_for(str(src / "old/delta.txt")) not in docs

    # each mapped process_batch task is a new process: its report splits its time into the
    # imports and the model load it paid, and the work; together no more than the task's run
    for run in runs:
        tis = http.get(f"{api}/api/v2/dags/rag_ingest/dagRuns/{run['dag_run_id']}/taskInstances", timeout=10).json()
        batches = [ti for ti in tis["task_instances"] if ti["task_id"] == "process_batch"]
        assert batches, tis
        for ti in batches:
            r = http.get(
                f"{api}/api/v2/dags/rag_ingest/dagRuns/{run['dag_run_id']}/taskInstances/process_batch/xcomEntries/return_value",
                params={"map_index": ti["map_index"]}, timeout=10,
            )
            assert r.status_code == 200, r.text
            value = r.json()["value"]
            seconds = (json.loads(value) if isinstance(value, str) else value)["seconds"]
            work = {k: v for k, v in seconds.items() if k not in ("imports", "model_load", "encode_model")}
            print(f"process_batch {run['data_interval_start'][:10]}[{ti['map_index']}]: task {ti['duration']:.2f}s; "
                  f"imports {seconds.get('imports', 0):.2f}s, model load {seconds.get('model_load', 0):.2f}s, "
                  f"work {sum(work.values()):.2f}s {work}")
            assert seconds.get("imports", 0) > 0 and seconds.get("model_load", 0) > 0, seconds
            assert sum(v for k, v in seconds.items() if k != "encode_model") <= ti["duration"], (seconds, ti["duration"])
