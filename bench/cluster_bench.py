"""Cluster benchmark: the same corpus through the single-process CLI and through Airflow's
CeleryExecutor with two worker hosts, side by side in one run (machines here are shared and noisy).

    .venv/bin/python bench/cluster_bench.py [--docs 2000] [--batch-size 1000] [--beir DIR]

Both write the same servers (a Chroma server, a Milvus server from ``milvus-lite server``), with a
PostgreSQL catalog (and so the embedding cache) of their own each, so both encode everything:

* **CLI**: ``ragops ingest`` in one process, local folder staging: wall time of the command,
  model load and imports included;
* **cluster**: ``rag_ingest`` triggered through the REST API on the cluster of
  ``tests/e2e/cluster.py`` (scheduler, dag-processor, API server, two Celery workers with their own
  HOME and data dir, one task slot each, ``RAGOPS_PARALLEL_BATCHES=2``), S3 staging on moto's
  server: from the trigger to the run's success (the cluster's own start-up is not counted).

Prints documents/s of each and cluster ÷ CLI (target of issue 11: >= 0.85, i.e. the cluster's
overhead <= 15%, on a machine where the two workers share the same two cores). A corpus from a
BEIR ``corpus.jsonl`` (default: SciFact from ../shared/datasets when present), else generated.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_bench import DEFAULT_BEIR, build_corpus  # noqa: E402

from tests.e2e.cluster import BIN, Cluster  # noqa: E402
from tests.servers import chroma_server, milvus_server, s3_server  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def create_db(name: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_db(name: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def timeline_of(tis: list[dict], cluster: Cluster) -> list[str]:
    """Each task instance's start and duration relative to the run's first task, and its host."""
    ts = _ts
    done = [t for t in tis if t.get("start_date") and t.get("end_date")]
    if not done:
        return []
    t0 = min(ts(t["start_date"]) for t in done)
    rows = sorted(done, key=lambda t: ts(t["start_date"]))
    return [
        f"{t['task_id'] + ('[%d]' % t['map_index'] if t['map_index'] >= 0 else ''):20} start {ts(t['start_date']) - t0:6.1f}"
        f"  took {ts(t['end_date']) - ts(t['start_date']):6.1f}  on {cluster.host_of(t['hostname'])}"
        for t in rows
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=1000, help="documents per mapped batch")
    ap.add_argument("--beir", type=Path, default=DEFAULT_BEIR if DEFAULT_BEIR.exists() else None)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ragops-cluster-bench-"))
    corpus = work / "corpus"
    size = build_corpus(corpus, args.docs, args.beir)
    n_docs = sum(1 for _ in corpus.rglob("*.txt"))
    print(f"corpus: {n_docs} documents, {size / 1e6:.1f} MB ({'BEIR ' + args.beir.name if args.beir else 'generated'})")
    dbs = [f"ragops_bench_cli_{uuid.uuid4().hex[:6]}", f"ragops_bench_cluster_{uuid.uuid4().hex[:6]}"]
    for db in dbs:
        create_db(db)
    try:
        with chroma_server(work / "chroma") as chroma, milvus_server(work / "milvus") as milvus, s3_server(work / "s3") as s3:
            import boto3

            client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="k",
                                  aws_secret_access_key="s")
            client.create_bucket(Bucket="docs")
            client.create_bucket(Bucket="stage")
            for path in sorted(corpus.rglob("*.txt")):
                client.upload_file(str(path), "docs", f"corpus/{path.relative_to(corpus)}")
            common = {
                "RAGOPS_CHROMA_HOST": "127.0.0.1", "RAGOPS_CHROMA_PORT": str(chroma.port),
                "RAGOPS_MILVUS_URI": milvus.url, "RAGOPS_S3_ENDPOINT_URL": s3.url,
                "RAGOPS_S3_ACCESS_KEY_ID": "k", "RAGOPS_S3_SECRET_ACCESS_KEY": "s",
                "RAGOPS_SOURCE": "s3://docs/corpus", "RAGOPS_BATCH_SIZE": str(args.batch_size),
            }

            # the single-process CLI
            env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPS_", "AIRFLOW"))} | common | {
                "RAGOPS_CATALOG_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbs[0]}",
                "RAGOPS_COLLECTION": "bench_cli", "RAGOPS_DATA_DIR": str(work / "cli"),
            }
            t0 = time.perf_counter()
            out = subprocess.run([str(BIN / "ragops"), "ingest", "--json"], env=env, capture_output=True, text=True)
            cli_s = time.perf_counter() - t0
            if out.returncode != 0:
                sys.exit(f"ragops ingest failed:\n{out.stderr[-3000:]}")
            cli = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"CLI:     {cli_s:7.1f} s  {cli['new']} documents, {cli['chunks']} chunks, {cli['encoded']} encoded")

            # the two-worker cluster
            ragops_env = common | {
                "RAGOPS_CATALOG_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbs[1]}",
                "RAGOPS_COLLECTION": "bench_cluster", "RAGOPS_STAGING_URL": "s3://stage/ragops",
                "RAGOPS_PARALLEL_BATCHES": "2", "RAGOPS_STORE_WRITERS": "2",
            }
            with Cluster(work / "cluster", ragops_env) as cluster:
                cluster.unpause("rag_ingest")
                cluster.wait_idle("rag_ingest")  # the scheduled run that unpausing starts is not timed
                t0 = time.perf_counter()
                t_trigger = time.time()
                run_id = cluster.trigger("rag_ingest")
                state = cluster.wait_run("rag_ingest", run_id, timeout=7200)
                cluster_s = time.perf_counter() - t0
                if state != "success":
                    sys.exit("cluster run failed:\n" + cluster.log_tail())
                rep = cluster.xcom("rag_ingest", run_id, "commit_catalog")
                tis = cluster.task_instances("rag_ingest", run_id)
                timeline = timeline_of(tis, cluster)
                first_start = min(_ts(t["start_date"]) for t in tis if t.get("start_date"))
                hosts = sorted({cluster.host_of(t["hostname"]) for t in cluster.task_instances("rag_ingest", run_id)
                                if t["hostname"]})
            print(f"cluster: {cluster_s:7.1f} s  {rep['new']} documents, {rep['chunks']} chunks, {rep['encoded']} encoded "
                  f"(tasks on {', '.join(hosts)}; cluster start {cluster.timings['start']} s, not counted)")
            print(f"cluster timeline (s after the first task started, {first_start - t_trigger:.1f} s after the trigger):")
            for line in timeline:
                print("  " + line)
            cli_rate, cluster_rate = cli["new"] / cli_s, rep["new"] / cluster_s
            print(f"\ndocuments/s: CLI {cli_rate:.2f}, cluster {cluster_rate:.2f}; cluster / CLI = {cluster_rate / cli_rate:.3f} "
                  f"(overhead {100 * (1 - cluster_rate / cli_rate):.1f}%; target overhead <= 15%)")
    finally:
        for db in dbs:
            drop_db(db)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
