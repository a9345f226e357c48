"""Staging, one contract for both backends: a local folder and S3 (moto's S3 server on loopback),
and the pipeline run through S3 staging as tasks on different hosts would run it."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from rag_ops.config import Settings
from rag_ops.errors import StagingMissing
from rag_ops.staging import open_staging, staging_at
from tests.servers import s3_endpoint, s3_server_info  # noqa: F401 - session fixtures


def s3_settings(tmp_path, endpoint: str, **kw) -> Settings:
    import boto3

    bucket = f"stage-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    return Settings(data_dir=tmp_path / "data", staging_url=f"s3://{bucket}/ragops/staging", s3_endpoint_url=endpoint,
                    s3_access_key_id="testing", s3_secret_access_key="testing", **kw)


@pytest.fixture(params=["local", "s3"])
def settings_for(request, tmp_path):
    if request.param == "local":
        return Settings(data_dir=tmp_path / "data")
    return s3_settings(tmp_path, request.getfixturevalue("s3_endpoint"))


def test_json_and_arrays_round_trip_and_missing_files_say_so(settings_for):
    st = open_staging(settings_for)
    run = st.run_url("manual__2026-01-01T00:00:00+00:00")
    assert ":" not in run.split("/")[-1] and "+" not in run.split("/")[-1]
    st.write_json(st.join(run, "plan.json"), {"a": [1, 2], "b": "x"})
    vectors = np.random.default_rng(0).standard_normal((7, 384)).astype(np.float32)
    st.write_array(st.join(run, "v.npy"), vectors)
    again = staging_at(st.join(run, "v.npy"), settings_for)  # a reference names its own backend
    assert again.read_json(st.join(run, "plan.json")) == {"a": [1, 2], "b": "x"}
    back = again.read_array(st.join(run, "v.npy"))
    assert back.dtype == np.float32 and np.array_equal(back, vectors)
    assert st.exists(st.join(run, "plan.json")) and not st.exists(st.join(run, "nope.json"))
    with pytest.raises(StagingMissing, match="nope.json"):
        st.read_json(st.join(run, "nope.json"))
    st.write_json(st.join(run, "plan.json"), {"a": 3})  # replaced whole
    assert st.read_json(st.join(run, "plan.json")) == {"a": 3}
    st.remove_run(run)
    assert not st.exists(st.join(run, "plan.json")) and not st.exists(st.join(run, "v.npy"))
    st.remove_run(run)  # gone already: no error


def test_clean_stale_removes_old_runs_only(settings_for):
    st = open_staging(settings_for)
    old, new = st.run_url("old"), st.run_url("new")
    st.write_json(st.join(old, "plan.json"), {})
    st.write_json(st.join(new, "plan.json"), {})
    assert st.clean_stale(3600, keep=new) == 0  # nothing is an hour old
    time.sleep(0.01)
    assert st.clean_stale(0, keep=new) == 1  # everything older than now, but the kept run
    assert not st.exists(st.join(old, "plan.json")) and st.exists(st.join(new, "plan.json"))


def test_pipeline_steps_on_two_hosts_share_only_s3_staging(tmp_path, corpus, s3_endpoint, pg_url):
    """discover on one host, each batch processed on another (own data dir: nothing on a shared
    disk), gate + stores + commit on a third: the staged references carry everything."""
    from rag_ops import pipeline
    from rag_ops.verify import verify

    host_a = s3_settings(tmp_path / "a", s3_endpoint, source=str(corpus), batch_size=1, catalog_url=pg_url,
                         stores=("milvus",), milvus_uri="")
    bucket_url = host_a.staging_url
    host_b = host_a.replace(data_dir=tmp_path / "b")
    host_c = host_a.replace(data_dir=tmp_path / "c")
    plan = pipeline.discover(host_a, run_id="scheduled__2026-01-02T00:00:00+00:00")
    assert plan.ref.startswith(bucket_url) and len(plan.batches) == 3
    assert all(ref.startswith(bucket_url) for ref in plan.batches)
    results = [pipeline.process_batch(host_b, ref) for ref in plan.batches]
    assert all(r["result"].startswith(bucket_url) for r in results)
    assert sum(r["counts"]["encoded"] for r in results) > 0
    assert not (tmp_path / "a" / "data" / "staging").exists() and not (tmp_path / "b" / "data" / "staging").exists()
    # the store is a Milvus Lite file of host c: the writer and the commit run there
    host_c = host_c.replace(milvus_uri=str(tmp_path / "c" / "milvus.db"))
    pipeline.quality_gate(host_c, plan.ref)
    report = pipeline.commit_run(host_c, plan.ref, [pipeline.upsert_store(host_c, "milvus", plan.ref)])
    assert report["new"] == 3 and report["failed"] == 0 and report["upserted"]["milvus"] == report["chunks"]
    assert not open_staging(host_a).exists(plan.ref)  # the run's staging is removed at its commit
    assert verify(host_c)["ok"]
    # the cache is the PostgreSQL catalog's: another index on a fourth host encodes nothing for the same texts
    host_d = host_a.replace(data_dir=tmp_path / "d", catalog_url=f"sqlite:///{tmp_path / 'd' / 'cat.db'}",
                            embedding_cache="catalog", embedding_cache_url=pg_url,
                            milvus_uri=str(tmp_path / "d" / "m.db"))
    again = pipeline.ingest(host_d)
    assert again["new"] == 3 and again["encoded"] == 0 and again["cache_hits"] == report["chunks"]
