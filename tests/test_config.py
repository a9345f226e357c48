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
