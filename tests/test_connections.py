"""Airflow connections -> settings (rag_ops.connections) and the adapter that reads them
(rag_ops.airflow.task_settings), with connections defined the way a deployment defines them:
``AIRFLOW_CONN_*`` variables, read through Airflow's own secrets backends."""

from __future__ import annotations

import json
import logging

import pytest

from rag_ops.config import Secret
from rag_ops.connections import ConnectionInfo, aws_from, catalog_from, chroma_from, milvus_from
from rag_ops.errors import ConfigError


def test_postgres_connection_becomes_a_catalog_url_with_its_password_quoted():
    conn = ConnectionInfo(conn_type="postgres", host="db", port=5433, login="rag", password=Secret("p@ss:/w"), schema="cat")
    url = catalog_from(conn)["catalog_url"]
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url.reveal())
    assert (parsed.drivername, parsed.host, parsed.port, parsed.username, parsed.password, parsed.database) == (
        "postgresql+psycopg", "db", 5433, "rag", "p@ss:/w", "cat")
    assert catalog_from(ConnectionInfo(conn_type="http", host="x")) == {}
    assert catalog_from(ConnectionInfo(extra={"url": "sqlite:////tmp/c.db"}))["catalog_url"].reveal() == "sqlite:////tmp/c.db"


def test_chroma_milvus_and_aws_connections():
    assert chroma_from(ConnectionInfo(host="https://chroma.internal", port=443, password=Secret("tok"))) == {
        "chroma_ssl": True, "chroma_host": "chroma.internal", "chroma_port": 443, "chroma_token": Secret("tok")}
    assert chroma_from(ConnectionInfo()) == {}
    m = milvus_from(ConnectionInfo(host="milvus", login="root", password=Secret("Milvus1")))
    assert m["milvus_uri"].reveal() == "http://milvus:19530" and m["milvus_token"].reveal() == "root:Milvus1"
    assert milvus_from(ConnectionInfo(extra={"uri": "https://z.cloud:443", "token": "abc"}))["milvus_token"].reveal() == "abc"
    a = aws_from(ConnectionInfo(login="AKIA1", password=Secret("sk"), extra={"endpoint_url": "http://minio:9000", "region_name": "eu-west-1"}))
    assert a == {"s3_access_key_id": "AKIA1", "s3_secret_access_key": Secret("sk"), "s3_endpoint_url": "http://minio:9000",
                 "s3_region": "eu-west-1"}


@pytest.fixture
def airflow_conns(monkeypatch, tmp_path):
    """A clean environment of Airflow and ragops variables, with a scratch AIRFLOW_HOME."""
    import os

    for key in list(os.environ):
        if key.startswith(("AIRFLOW_CONN_", "AIRFLOW__CORE__EXECUTOR", "RAGOPS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("RAGOPS_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def _define(mp, conn_id: str, **fields) -> None:
    mp.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_task_settings_read_connections_and_ragops_variables_win(airflow_conns, caplog, capfd):
    from rag_ops.airflow import task_settings

    _define(airflow_conns, "ragops_catalog", conn_type="postgres", host="pg", port=5432, login="rag",
            password="catalog-pw-123", schema="ragops")
    _define(airflow_conns, "chroma_default", conn_type="http", host="chroma", port=8001)
    _define(airflow_conns, "milvus_default", conn_type="generic", host="milvus", port=19530, password="milvus-tok-456")
    _define(airflow_conns, "aws_default", conn_type="aws", login="AKIAEXAMPLE", password="aws-secret-789",
            extra={"endpoint_url": "http://minio:9000"})
    airflow_conns.setenv("RAGOPS_CHROMA_HOST", "chroma-from-variable")  # a variable wins over the connection
    with caplog.at_level(logging.DEBUG):
        s = task_settings(batch_size=7)
    assert s.catalog_db_url == "postgresql+psycopg://rag:catalog-pw-123@pg:5432/ragops"
    assert (s.chroma_host, s.chroma_port) == ("chroma-from-variable", 8001)
    assert s.milvus_target == "http://milvus:19530" and s.milvus_token.reveal() == "milvus-tok-456"
    assert s.s3_access_key_id == "AKIAEXAMPLE" and s.s3_secret_access_key.reveal() == "aws-secret-789"
    assert s.s3_endpoint_url == "http://minio:9000" and s.batch_size == 7
    assert s.cache_backend == "catalog"  # the server catalog holds the shared cache
    out, err = capfd.readouterr()
    logged = caplog.text + out + err  # Airflow's logging setup may route records to its own handlers
    for secret in ("catalog-pw-123", "milvus-tok-456", "aws-secret-789"):
        assert secret not in logged and secret not in repr(s) and secret not in str(s.describe())
    assert "settings from Airflow connections: aws_secret" not in logged
    assert "settings from Airflow connections: catalog_url, chroma_host, chroma_port" in logged


def test_connection_ids_are_settings(airflow_conns):
    from rag_ops.airflow import task_settings

    _define(airflow_conns, "team_pg", conn_type="postgres", host="pg2", login="x", schema="db2")
    _define(airflow_conns, "ragops_catalog", conn_type="postgres", host="ignored", schema="db1")
    airflow_conns.setenv("RAGOPS_CATALOG_CONN_ID", "team_pg")
    assert task_settings().catalog_db_url == "postgresql+psycopg://x@pg2/db2"
    airflow_conns.setenv("RAGOPS_CATALOG_CONN_ID", "")  # empty: the default id again
    assert task_settings().catalog_db_url == "postgresql+psycopg://ignored/db1"


def test_distributed_executor_refuses_embedded_state_at_the_first_task(airflow_conns):
    from rag_ops.airflow import task_settings

    airflow_conns.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with pytest.raises(ConfigError) as err:
        task_settings()
    assert "CeleryExecutor" in str(err.value) and "RAGOPS_CATALOG_URL" in str(err.value)
    # every piece of state on services: accepted
    airflow_conns.setenv("RAGOPS_CATALOG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    airflow_conns.setenv("RAGOPS_CHROMA_HOST", "127.0.0.1")
    airflow_conns.setenv("RAGOPS_MILVUS_URI", "http://127.0.0.1:19530")
    airflow_conns.setenv("RAGOPS_STAGING_URL", "s3://ragops/staging")
    assert task_settings().embedded_state() == []
    # an executor list with a distributed one in it counts as distributed
    airflow_conns.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor,KubernetesExecutor")
    airflow_conns.delenv("RAGOPS_STAGING_URL")
    with pytest.raises(ConfigError, match="KubernetesExecutor.*RAGOPS_STAGING_URL"):
        task_settings()
    airflow_conns.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert task_settings().staging_root.endswith("staging")


def test_executor_names():
    from rag_ops.airflow import executor_names

    assert executor_names("CeleryExecutor") == ["CeleryExecutor"]
    assert executor_names("LocalExecutor, my_exec:my.company.executors.EdgeExecutor") == ["LocalExecutor", "EdgeExecutor"]
    assert executor_names("airflow.providers.celery.executors.celery_executor.CeleryExecutor") == ["CeleryExecutor"]
