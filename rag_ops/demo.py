"""``make demo``: run the rag_ingest DAG on the bundled samples with embedded defaults, then query.

Steps: prepare a project-local Airflow (SQLite metadata DB under ``AIRFLOW_HOME``), run
``airflow dags test rag_ingest`` (the real DAG, all tasks, in one process), then ask both stores
the questions in ``samples/questions.txt`` and print the hits and the run report. A second run
finds every document unchanged and encodes nothing.

Airflow is driven through its CLI in a subprocess: this module does not import Airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rag_ops.config import PROJECT_ROOT, load_settings

QUESTIONS = PROJECT_ROOT / "samples" / "questions.txt"


def airflow_env(airflow_home: Path) -> dict[str, str]:
    """Environment for an embedded, offline, quiet Airflow using the project's DAGs."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        }
    )
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{airflow_home / 'airflow.db'}")
    return env


def run(cmd: list[str], env: dict[str, str], log_path: Path) -> None:
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"demo: `{' '.join(cmd)}` failed (exit {proc.returncode}); full log: {log_path}")


def main() -> int:
    settings = load_settings()
    airflow_home = Path(os.environ.get("AIRFLOW_HOME", PROJECT_ROOT / ".airflow" / "demo")).absolute()
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = airflow_env(airflow_home)
    log_path = airflow_home / "demo.log"
    bin_dir = Path(sys.executable).parent
    airflow = str(bin_dir / "airflow")

    print(f"ragops demo — data dir {settings.data_dir}, Airflow home {airflow_home}")
    print(f"source: {settings.source}")
    t0 = time.perf_counter()
    run([airflow, "db", "migrate"], env, log_path)
    print(f"airflow metadata DB ready ({time.perf_counter() - t0:.1f}s)")

    t1 = time.perf_counter()
    run([airflow, "dags", "test", "rag_ingest"], env, log_path)
    print(f"rag_ingest DAG run finished ({time.perf_counter() - t1:.1f}s); task logs in {log_path}")

    from rag_ops.catalog import Catalog
    from rag_ops.cli import format_report
    from rag_ops.embed import make_embedder
    from rag_ops.stores import open_store

    catalog = Catalog(settings.catalog_db_url)
    last = catalog.last_runs(1)
    counts = catalog.counts()
    catalog.close()
    if not last or last[0]["status"] != "success" or not last[0]["report"]:
        raise SystemExit("demo: the DAG run did not record a successful run in the catalog")
    report = json.loads(last[0]["report"])

    questions = [q.strip() for q in QUESTIONS.read_text().splitlines() if q.strip()]
    embedder = make_embedder(settings)
    vectors = embedder.encode(questions)
    for name in settings.stores:
        with open_store(name, settings) as store:
            print(f"\n=== {name}: {store.count()} vectors in {store.collection!r} (live version of {settings.collection!r})")
            for question, vector in zip(questions, vectors):
                print(f"\nQ: {question}")
                for i, hit in enumerate(store.query(vector, k=3), 1):
                    where = Path(hit.source_uri).relative_to(Path(settings.source)) if hit.source_uri.startswith(settings.source) else hit.source_uri
                    page = f", page {hit.page}" if hit.page else ""
                    print(f"  {i}. [{hit.score:.3f}] {where}{page}")
                    print(f"     {' '.join(hit.text.split())[:220]}")

    print("\n=== run report")
    print(format_report(report))
    print(f"catalog: {counts['documents']} documents, {counts['chunks']} chunks, {counts['failed']} failed")
    print(f"encoded this run: {report['encoded']} (a second `make demo` encodes 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
