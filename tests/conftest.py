"""Shared fixtures. Everything is real: stores on tmp_path, the packaged model, real files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rag_ops.config import Settings

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

DOCS = {
    "robots/battery.txt": (
        "R7 Battery Swap\n\n"
        "To swap the R7 battery, park the robot at a charging bay and engage the parking brake. "
        "Press the red release latch on the left flank and slide the pack out on its rails. "
        "Insert the fresh pack until the latch clicks; the status ring turns green within ten seconds. "
        "A trained technician needs about four minutes for the whole swap.\n"
    ),
    "policies/travel.md": (
        "# Travel policy\n\n"
        "Hotel nights are reimbursed up to 180 EUR per night in Europe and 220 USD in North America. "
        "Book through the travel portal at least fourteen days ahead.\n\n"
        "## Meals\n\nMeals are covered up to 60 EUR per day with itemised receipts.\n"
    ),
    "support/api.html": (
        "<html><head><title>API limits</title></head><body><h1>API rate limits</h1>"
        "<p>The fleet API accepts 600 requests per minute per token. Bursts above the limit receive "
        "HTTP 429 with a Retry-After header.</p><h2>Pagination</h2><p>List endpoints return 100 items "
        "per page and a cursor for the next page.</p></body></html>"
    ),
}


def write_corpus(root: Path, docs: dict[str, str] = DOCS) -> Path:
    for rel, text in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "src")


@pytest.fixture
def settings(tmp_path: Path, corpus: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", source=str(corpus), batch_size=2)


def postgres_url() -> str | None:
    """The local PostgreSQL test database, or None when no server answers."""
    url = os.environ.get("RAGOPS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        import sqlalchemy as sa

        eng = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        eng.dispose()
        return url
    except Exception:
        return None


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL schema for one test (dropped afterwards)."""
    import uuid

    import sqlalchemy as sa

    base = postgres_url()
    if base is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432 (database test)")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(base)
    with eng.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{base}?options=-csearch_path%3D{schema}"
    with eng.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    eng.dispose()


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return REPO / "samples" / "corpus"


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session", autouse=True)
def _one_model_export_per_session(tmp_path_factory):
    """Every test has a new data dir, and the ONNX export of the model lives beside the data by
    default: the session shares one export folder instead (exports are keyed by the model files'
    hash, so sharing is what a user's model_cache_dir does too), in this process and in the CLI
    and Airflow processes tests start."""
    shared = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGOPS_MODEL_CACHE_DIR", str(shared))
        default = Settings.model_cache_path.fget
        mp.setattr(Settings, "model_cache_path", property(lambda s: default(s) if s.model_cache_dir else shared))
        yield shared


@pytest.fixture(scope="session", autouse=True)
def _stop_milvus_lite_servers():
    """Stop Milvus Lite servers a test left open before pytest closes logging (else the atexit
    hook of milvus_lite logs into closed streams)."""
    yield
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover
        return
    server_manager_instance.release_all()


# Put first in a `python -c` script: every connection the process (or a fork of it) tries is
# refused and recorded in `attempts`, for the script to print.
NO_NETWORK = """
import socket
attempts = []
def refuse(self, address, *a, **k):
    attempts.append(repr(address))
    raise OSError("network disabled by test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
"""


def run_together(code: str, argvs: list[list[str]], *, delay: float = 4, timeout: float = 300) -> list[str]:
    """Run ``python -c code`` once per argument list, all released at the same moment: each gets
    the start time (epoch seconds) as its last argument and must wait for it. Asserts every
    process exited 0; returns the last line each printed."""
    import subprocess
    import sys
    import time

    start = str(time.time() + delay)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, *argv, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    lines = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-2000:]
        lines.append(out.strip().splitlines()[-1])
    return lines
