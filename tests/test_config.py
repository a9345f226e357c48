from pathlib import Path

import pytest

from rag_ops.config import PACKAGED_MODEL, Settings
from rag_ops.errors import ConfigError


def test_defaults_are_embedded(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.catalog_db_url == f"sqlite:///{tmp_path / 'catalog.db'}"
    assert s.milvus_target == str(tmp_path / "milvus.db")
    assert s.chroma_path == tmp_path / "chroma"
    assert s.stores == ("chroma", "milvus")
    assert s.embedding_model == PACKAGED_MODEL
    assert Path(s.model_path, "config.json").exists()
    assert Path(s.source).is_dir()


def test_env_overrides_and_types(tmp_path):
    env = {
        "RAGOPS_DATA_DIR": str(tmp_path / "x"),
        "RAGOPS_CHUNK_SIZE": "128",
        "RAGOPS_STORES": "milvus",
        "RAGOPS_CATALOG_URL": "postgresql+psycopg://u:hunter2@db/x",
    }
    s = Settings.from_env(env)
    assert s.data_dir == tmp_path / "x"
    assert s.chunk_size == 128
    assert s.stores == ("milvus",)
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.describe())
    assert s.catalog_db_url.endswith("@db/x")


def test_explicit_overrides_win_over_env(tmp_path):
    s = Settings.from_env({"RAGOPS_BATCH_SIZE": "5"}, batch_size=7, data_dir=tmp_path)
    assert s.batch_size == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"chunk_overlap": 300}, "chunk_overlap must be >= 0 and < chunk_size. Got 300 >= 250."),
        ({"stores": ("chroma", "pinecone")}, "stores must be a non-empty subset"),
        ({"collection": "a-b"}, "collection must be 3-60 characters"),
        ({"embed_precision": "fp8"}, "embed_precision must be fp32 or bf16"),
        ({"milvus_search_params": "[1]"}, "milvus_search_params must be a JSON object"),
        ({"embedding_cache": "redis"}, "embedding_cache must be one of ['auto', 'sqlite', 'catalog']. Got 'redis'."),
        ({"staging_url": "gs://bucket/x"}, "staging_url must be a folder or s3://bucket/prefix. Got 'gs://bucket/x'."),
    ],
)
def test_invalid_settings_say_what_was_received(tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as err:
        Settings(data_dir=tmp_path, **kwargs)
    assert message in str(err.value)


def test_bad_int_env_is_a_config_error():
    with pytest.raises(ConfigError, match="RAGOPS_CHUNK_SIZE must be an integer"):
        Settings.from_env({"RAGOPS_CHUNK_SIZE": "lots"})


def test_privacy_env_is_applied():
    import os

    import rag_ops.config  # noqa: F401

    assert os.environ["ANONYMIZED_TELEMETRY"] == "False"
    assert os.environ["DO_NOT_TRACK"]
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["AIRFLOW__USAGE_DATA_COLLECTION__ENABLED"] == "False"


def test_secret_never_formats_its_value():
    import logging
    import pickle

    from rag_ops.config import Secret

    s = Secret("hunter2")
    shown = [
        f"{s}", f"{s!s}", f"{s!r}", f"{s:>20}", "%s" % s, "%r" % (s,), "{}".format(s), str(s), repr(s),
        str({"url": s}), str([s]), str(ValueError(s)),
        logging.Formatter("%(message)s").format(logging.makeLogRecord({"msg": "url %s", "args": (s,)})),
    ]
    assert all("hunter2" not in text for text in shown), shown
    assert not isinstance(s, str)  # a str subclass would print itself in every case above
    assert s.reveal() == "hunter2" and bool(s) and not Secret("")
    assert Secret(s) == s and Secret("x") != s and pickle.loads(pickle.dumps(s)).reveal() == "hunter2"


def test_secret_settings_from_env_stay_secret(tmp_path):
    s = Settings.from_env({"RAGOPS_S3_SECRET_ACCESS_KEY": "k3y", "RAGOPS_CHROMA_TOKEN": "t0k"}, data_dir=tmp_path)
    assert s.s3_secret_access_key.reveal() == "k3y" and s.chroma_token.reveal() == "t0k"
    assert "k3y" not in repr(s) and "t0k" not in repr(s) and "k3y" not in str(s.describe())


def test_embedded_defaults_are_refused_on_a_distributed_executor(tmp_path):
    with pytest.raises(ConfigError) as err:
        Settings(data_dir=tmp_path).require_shared_state("CeleryExecutor")
    message = str(err.value)
    for name in ("RAGOPS_CATALOG_URL", "RAGOPS_CHROMA_HOST", "RAGOPS_MILVUS_URI", "RAGOPS_STAGING_URL", "RAGOPS_EMBEDDING_CACHE"):
        assert name in message
    assert "CeleryExecutor" in message


def test_shared_services_pass_the_distributed_check_and_share_the_cache(tmp_path):
    shared = Settings(
        data_dir=tmp_path, catalog_url="postgresql+psycopg://u:pw@db/cat", chroma_host="chroma",
        milvus_uri="http://milvus:19530", staging_url="s3://bucket/staging",
    )
    shared.require_shared_state("KubernetesExecutor")  # nothing left on a worker's disk
    assert shared.embedded_state() == []
    assert shared.cache_backend == "catalog" and shared.cache_db_url.endswith("@db/cat")
    assert shared.staging_root == "s3://bucket/staging"
    # a version's own catalog keeps the shared cache
    built = shared.with_catalog("sqlite:///" + str(tmp_path / "v2.db"))
    assert built.cache_backend == "catalog" and built.cache_db_url.endswith("@db/cat")
    # a single store in use: only its setting matters
    only_milvus = shared.replace(stores=("milvus",), chroma_host="")
    assert only_milvus.embedded_state() == []
    explicit = shared.replace(embedding_cache="sqlite")
    assert [name for name, _ in explicit.embedded_state()] == ["RAGOPS_EMBEDDING_CACHE"]


def test_embedded_settings_keep_the_sqlite_cache_and_local_staging(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.cache_backend == "sqlite" and s.staging_root == str(tmp_path / "staging")
    assert Settings(data_dir=tmp_path, staging_url=str(tmp_path / "elsewhere")).staging_root == str(tmp_path / "elsewhere")
    assert Settings(data_dir=tmp_path, embedding_cache="catalog").cache_backend == "catalog"
