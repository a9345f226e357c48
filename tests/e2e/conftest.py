"""Fixtures that run the real Airflow CLI in subprocesses with a throwaway AIRFLOW_HOME."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import postgres_url

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow_env(home: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "RAGOPS_")) or k == "RAGOPS_MODEL_CACHE_DIR"}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "RAGOPS_DATA_DIR": str(data_dir),
            "RAGOPS_BATCH_SIZE": "2",
        }
    )
    env.update(extra)
    return env


class AirflowCLI:
    def __init__(self, home: Path, data_dir: Path):
        self.home, self.data_dir = home, data_dir
        self.env = airflow_env(home, data_dir)

    def run(self, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def dags_test(self, conf: dict, dag_id: str = "rag_ingest", check: bool = True) -> subprocess.CompletedProcess:
        return self.run("dags", "test", dag_id, "-c", json.dumps(conf), check=check)


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("airflow_home")
    AirflowCLI(home, home / "unused").run("db", "migrate")
    return home


@pytest.fixture
def airflow_cli(airflow_home, tmp_path) -> AirflowCLI:
    return AirflowCLI(airflow_home, tmp_path / "data")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """``make airflow`` as a user runs it (scripts/airflow-standalone.sh: LocalExecutor, the DAGs and
    the plugin, a PostgreSQL metadata DB of its own), one per test module; yields the API's base
    URL, a requests session logged in as admin (password ``test-pw``) and the module's folder."""
    tmp_path = tmp_path_factory.mktemp("standalone")
    base = postgres_url()
    if base is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432: standalone Airflow needs one")
    db = f"ragops_bf_{uuid.uuid4().hex[:8]}"
    db_url = str(sa.engine.make_url(base).set(database=db).render_as_string(hide_password=False))
    port = _free_port()
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "passwords.json").write_text(json.dumps({"admin": "test-pw"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "RAGOPS_")) or k == "RAGOPS_MODEL_CACHE_DIR"}
    env.update(
        AIRFLOW_HOME=str(home),
        RAGOPS_AIRFLOW_DB_URL=db_url,
        RAGOPS_DATA_DIR=str(tmp_path / "data"),
        RAGOPS_SOURCE=str(tmp_path / "src"),
        RAGOPS_BATCH_SIZE="2",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR="True",
    )
    log = open(tmp_path / "standalone.log", "w")
    proc = subprocess.Popen(
        ["bash", str(REPO / "scripts/airflow-standalone.sh")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "standalone.log").read_text()[-3000:]
            try:
                health = requests.get(f"{api}/api/v2/monitor/health", timeout=3).json()
                if all(v.get("status") == "healthy" for k, v in health.items() if k in ("metadatabase", "scheduler")):
                    break
            except (requests.RequestException, ValueError):
                pass
            assert time.time() < deadline, "Airflow did not become healthy in 180 s"
            time.sleep(2)
        token = requests.post(f"{api}/auth/token", json={"username": "admin", "password": "test-pw"}, timeout=10)
        assert token.status_code in (200, 201), token.text
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield api, session, tmp_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        eng = sa.create_engine(sa.engine.make_url(base).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        eng.dispose()
