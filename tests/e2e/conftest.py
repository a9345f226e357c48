"""Fixtures that run the real Airflow CLI in subprocesses with a throwaway AIRFLOW_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow_env(home: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "RAGOPS_"))}
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
