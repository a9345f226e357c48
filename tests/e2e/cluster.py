"""A real Airflow 3 cluster on loopback for the scale-out test and benchmark.

CeleryExecutor with the local Redis as broker (a database number of its own) and the local
PostgreSQL as metadata DB and result backend; the API server, scheduler and dag-processor; and
Celery workers, each a "host" of its own: its own session, ``HOME``, ``TMPDIR``,
``AIRFLOW_HOME``, ``RAGOPS_DATA_DIR`` and Airflow hostname, so nothing passes between them
through a local disk. ragops reaches its services (catalog, Chroma, Milvus, S3) through the
settings and Airflow connections passed in ``ragops_env``. Readiness is waited for on events
(health endpoint, Celery ping, the REST API), never by fixed sleeps.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


WORDS = (
    "pump valve turbine rotor bearing seal gasket filter sensor relay breaker cable conveyor gearbox shaft coupling "
    "hydraulic pneumatic lubrication vibration inspection calibration maintenance torque pressure temperature "
    "voltage current alarm shutdown startup warehouse forklift pallet dock shipment invoice supplier contract audit "
    "policy safety helmet glove ladder scaffold crane hoist welding cutting drilling painting cleaning storage"
).split()


def document(i: int, topic_seed: int = 0) -> str:
    rng = random.Random(i * 7919 + topic_seed)
    title = f"Procedure {i:04d}: {rng.choice(WORDS)} {rng.choice(WORDS)}"
    paras = []
    for _ in range(rng.randint(2, 3)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(40, 90))]
        paras.append(" ".join(words).capitalize() + f". Reference {i}-{rng.randint(100, 999)}.")
    return title + "\n\n" + "\n\n".join(paras) + "\n"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_groups(sid: int) -> set[int]:
    """Every process group of session ``sid``: Airflow's task supervisor puts each task runner in
    a group of its own, so a host's death is the death of its whole session."""
    groups = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # a zombie is dead already
                groups.add(int(fields[2]))
    return groups


def kill_session(sid: int, sig: int = signal.SIGKILL) -> None:
    for group in session_groups(sid) | {sid}:
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass


def wait_for(pred: Callable[[], Any], what: str, timeout: float, every: float = 0.25, alive: Callable[[], None] | None = None):
    """Poll ``pred`` until it returns something truthy; ``alive`` raises if a component died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive:
            alive()
        try:
            out = pred()
            if out:
                return out
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # not up yet
            last = exc
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else ""))


class Cluster:
    """Airflow with the CeleryExecutor and N worker hosts. Use as a context manager."""

    def __init__(self, root: Path, ragops_env: dict[str, str], workers: tuple[str, ...] = ("worker-a", "worker-b"),
                 concurrency: int = 1, redis_db: int = 11, heartbeat_timeout: int = 20):
        self.root = root
        self.ragops_env = ragops_env
        self.worker_names = list(workers)
        self.concurrency = concurrency
        self.redis_db = redis_db
        self.heartbeat_timeout = heartbeat_timeout
        self.db = f"ragops_cluster_{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.password = secrets.token_urlsafe(12)
        self._token = ""
        from cryptography.fernet import Fernet

        self._fernet = Fernet.generate_key().decode()
        self._jwt = secrets.token_urlsafe(48)
        self._api_key = secrets.token_urlsafe(48)
        self.timings: dict[str, float] = {}
        self.killed: set[str] = set()
        self._addresses: dict[str, str] = {}

    # ------------------------------------------------------------------ environment
    def env(self, name: str) -> dict[str, str]:
        """A component's environment: the shared Airflow config, ragops' settings, and a HOME,
        TMPDIR, AIRFLOW_HOME and data dir of its own (a separate host)."""
        host = self.root / "hosts" / name
        for sub in ("home", "tmp", "airflow", "data"):
            (host / sub).mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RAGOPS_"))}
        pg = f"postgres@127.0.0.1:5432/{self.db}"
        env.update({
            "PATH": f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(REPO),  # the hostname callable below lives in tests/e2e
            "HOME": str(host / "home"), "TMPDIR": str(host / "tmp"), "AIRFLOW_HOME": str(host / "airflow"),
            "RAGOPS_DATA_DIR": str(host / "data"), "RAGOPS_TEST_HOST": self.address(name),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": self._fernet,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.e2e.cluster.worker_hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.root / "passwords.json"),
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://{pg}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{self.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg://{pg}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(self.port), "AIRFLOW__API__BASE_URL": self.api,
            "AIRFLOW__API__SECRET_KEY": self._api_key, "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt,
            "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
            # a worker that died is noticed when its task's heartbeats stop for this long
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "3",
        })
        env.update(self.ragops_env)
        return env

    def address(self, name: str) -> str:
        """The host's Airflow hostname: a loopback address of its own (the API server reads task
        logs from ``http://<hostname>:8793``, so a name would be looked up in DNS)."""
        if name not in self._addresses:
            self._addresses[name] = f"127.0.0.{11 + len(self._addresses)}"
        return self._addresses[name]

    def host_of(self, address: str) -> str:
        """The host name of an Airflow hostname (``address``)."""
        return next((n for n, a in self._addresses.items() if a == address), address)

    def _start(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [str(BIN / "airflow"), *args], env=self.env(name), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(self.root / "hosts" / name),
        )

    def start_worker(self, name: str) -> None:
        self._start(name, "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", str(self.concurrency),
                    "--skip-serve-logs")
        if name not in self.worker_names:
            self.worker_names.append(name)

    def alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None and n not in self.killed}
        if dead:
            tails = {n: (self.root / f"{n}.log").read_text(errors="replace")[-2500:] for n in dead}
            raise RuntimeError(f"cluster components exited: {dead}\n" + "\n".join(f"--- {n}\n{t}" for n, t in tails.items()))

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Cluster":
        import psycopg
        import redis

        self.root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        (self.root / "passwords.json").write_text(json.dumps({"admin": self.password}))
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        redis.Redis(host="127.0.0.1", port=6379, db=self.redis_db).flushdb()
        try:
            subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=self.env("migrate"), check=True,
                           capture_output=True, timeout=300)
            self._start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1")
            self._start("scheduler", "scheduler")
            self._start("dag-processor", "dag-processor")
            for w in list(self.worker_names):
                self.start_worker(w)
            wait_for(lambda: httpx.get(f"{self.api}/api/v2/monitor/health", timeout=3).status_code == 200,
                     "the API server", 180, alive=self.alive)
            for part in ("scheduler", "dag_processor"):
                wait_for(lambda: self.health().get(part, {}).get("status") == "healthy", part, 120, alive=self.alive)
            self.wait_workers(self.worker_names)
            for dag_id in ("rag_ingest", "rag_reindex"):
                wait_for(lambda: self.call("GET", f"/dags/{dag_id}")["dag_id"], f"DAG {dag_id} parsed", 180, every=1,
                         alive=self.alive)
            self.timings["start"] = round(time.monotonic() - t0, 1)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import psycopg
        import redis

        for name, proc in self.procs.items():
            kill_session(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, proc in self.procs.items():
            while time.monotonic() < deadline and session_groups(proc.pid):
                time.sleep(0.2)
            kill_session(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        redis.Redis(host="127.0.0.1", port=6379, db=self.redis_db).flushdb()

    def wait_workers(self, names: list[str], timeout: float = 120) -> None:
        """Until every named worker answers a Celery ping (the same app the workers run)."""
        code = (
            "import json, sys\n"
            "from airflow.providers.celery.executors.celery_executor import app\n"
            "print(json.dumps([k for d in (app.control.ping(timeout=1.0) or []) for k in d]))\n"
        )

        def answered() -> bool:
            out = subprocess.run([sys.executable, "-c", code], env=self.env("ping"), capture_output=True, text=True,
                                 timeout=60)
            got = {k.split("@")[0] for k in json.loads(out.stdout.strip().splitlines()[-1] or "[]")} if out.stdout else set()
            return set(names) <= got

        wait_for(answered, f"Celery workers {names}", timeout, every=0.5, alive=self.alive)

    def kill_host(self, name: str) -> None:
        """SIGKILL a worker host: its Celery worker and every task process it started."""
        self.killed.add(name)
        kill_session(self.procs[name].pid)
        self.procs[name].wait(timeout=15)
        wait_for(lambda: not session_groups(self.procs[name].pid), f"{name} to die", 15, every=0.05)

    # ------------------------------------------------------------------ REST API v2
    def health(self) -> dict:
        return httpx.get(f"{self.api}/api/v2/monitor/health", timeout=3).json()

    def token(self) -> str:
        r = httpx.post(f"{self.api}/auth/token", json={"username": "admin", "password": self.password}, timeout=10)
        r.raise_for_status()
        return r.json()["access_token"]

    def call(self, method: str, path: str, **kw: Any) -> Any:
        if not self._token:
            self._token = self.token()
        for _ in range(2):
            r = httpx.request(method, f"{self.api}/api/v2{path}", headers={"Authorization": f"Bearer {self._token}"},
                              timeout=30, **kw)
            if r.status_code != 401:
                break
            self._token = self.token()
        r.raise_for_status()
        return r.json()

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def wait_idle(self, dag_id: str, timeout: float = 600) -> None:
        """Until the DAG has no queued or running run (unpausing a DAG with a schedule starts the
        run of its latest interval)."""
        def idle() -> bool:
            runs = self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]
            return all(r["state"] in ("success", "failed") for r in runs)

        wait_for(idle, f"{dag_id} to have no active run", timeout, every=1, alive=self.alive)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        return self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 900) -> str:
        return wait_for(lambda: (s := self.run_state(dag_id, run_id)) in ("success", "failed") and s,
                        f"{dag_id} run {run_id}", timeout, every=1, alive=self.alive)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        path += f"/{map_index}/tries" if map_index >= 0 else "/tries"
        return self.call("GET", path)["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")["value"]

    def log_tail(self, names: list[str] | None = None, chars: int = 3000) -> str:
        names = names or list(self.procs)
        return "\n".join(f"--- {n}\n" + (self.root / f"{n}.log").read_text(errors="replace")[-chars:] for n in names)


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` for the test hosts: the name of the host process."""
    import socket

    return os.environ.get("RAGOPS_TEST_HOST") or socket.getfqdn()
