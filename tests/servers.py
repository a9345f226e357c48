"""Real servers on loopback for tests: Chroma, Milvus (milvus-lite's gRPC server) and moto's S3.

Each server runs as a subprocess of the test session, from the venv's own console scripts (the
pinned chromadb, milvus-lite and moto[server]), bound to 127.0.0.1 on a free port, with its data
dir, HOME and log file in a folder of its own. A server counts as started only once it answers
(Chroma's heartbeat, a Milvus ``GetVersion`` call through pymilvus, moto's ``/moto-api/``): the
wait polls at a short interval up to a deadline, never a fixed sleep. A server that exits or
stays silent raises :class:`ServerStartError` with the tail of its log.

Context managers (any test or script)::

    with chroma_server(tmp_path) as srv:      # ServerInfo(host, port, url, proc, log_path, ...)
        chromadb.HttpClient(host=srv.host, port=srv.port)

Session fixtures (import them into a conftest or a test module)::

    from tests.servers import chroma_server_url, milvus_server_uri, s3_endpoint

``chroma_server_url`` -> "http://127.0.0.1:N" (``chroma_server_info`` gives the ServerInfo),
``milvus_server_uri`` -> "http://127.0.0.1:N" (for ``MilvusClient(uri=...)`` / ``RAGOPS_MILVUS_URI``),
``s3_endpoint`` -> "http://127.0.0.1:N" (boto3 ``endpoint_url``; any key id/secret is accepted).
Each kind of server is started once per session, however many modules import the fixtures.

Nothing leaves loopback: the servers bind 127.0.0.1, probes bypass proxy settings, Chroma runs
with ``ANONYMIZED_TELEMETRY=False`` and no OpenTelemetry exporter settings are passed on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # seconds until a server must answer (measured here: Chroma ~1 s, Milvus ~1 s, moto ~0.6 s)
POLL_INTERVAL = 0.05
STOP_GRACE = 10.0  # seconds a server gets to exit after its stop signal, before SIGTERM/SIGKILL
BIND_ATTEMPTS = 3  # a port picked free can be taken before the server binds it: try another


class ServerStartError(RuntimeError):
    """A test server did not come up; the message ends with the tail of its log."""


@dataclass(frozen=True)
class ServerInfo:
    name: str  # "chroma" | "milvus" | "s3"
    host: str
    port: int
    url: str  # http://127.0.0.1:<port>
    proc: subprocess.Popen
    log_path: Path
    data_dir: Path
    argv: tuple[str, ...]  # the exact command line
    started_in: float  # seconds from spawn until it answered

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


# ---------------------------------------------------------------------------------- plumbing
def free_port(host: str = HOST) -> int:
    """A port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def venv_script(name: str) -> str:
    """A console script of the running interpreter's environment (the pinned packages)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerStartError(f"no {name!r} script beside {sys.executable} nor on PATH; is the package installed?")
    return found


def log_tail(path: Path, lines: int = 40, max_chars: int = 4000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    tail = "\n".join(text.splitlines()[-lines:])
    return tail[-max_chars:] or "<empty log>"


def server_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server: this one minus telemetry/tracing exporters, its own HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        HOME=str(home),
        ANONYMIZED_TELEMETRY="False",  # chromadb
        DO_NOT_TRACK="1",
        SCARF_NO_ANALYTICS="true",
        PYTHONUNBUFFERED="1",  # log lines reach the log file as they are written
        NO_COLOR="1",
    )
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), HOST, "localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env.update(extra or {})
    return env


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether GET ``url`` answers 2xx (never through a proxy)."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen, stop_signal: int = signal.SIGTERM, grace: float = STOP_GRACE) -> None:
    """Stop a server started in its own session: ``stop_signal`` to it, then SIGTERM, then SIGKILL
    to its whole process group (children included)."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if proc.poll() is None:
        if _ignores(proc.pid, stop_signal):  # e.g. SIGINT, inherited as ignored from a background shell
            stop_signal = signal.SIGTERM
        for sig, wait in ((stop_signal, grace), (signal.SIGTERM, 3.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # anything the server spawned, and the server if still alive
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _ignores(pid: int, sig: int) -> bool:
    """Whether process ``pid`` ignores ``sig`` (Linux /proc; False where unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _bind_failed(log: str) -> bool:
    low = log.lower()
    # grpc (milvus-lite): "Address already in use"; chroma: "Address ...:N is not available";
    # werkzeug (moto): "Port N is in use by another program"
    return any(m in low for m in ("already in use", "failed to bind", "is not available", "is in use"))


@contextlib.contextmanager
def run_server(
    name: str,
    tmp: Path,
    make_argv: Callable[[int, Path], list[str]],
    is_ready: Callable[[int], bool],
    *,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    stop_signal: int = signal.SIGTERM,
    timeout: float = START_TIMEOUT,
) -> Iterator[ServerInfo]:
    """Start ``make_argv(port, data_dir)`` on a free loopback port, wait until ``is_ready(port)``,
    yield its :class:`ServerInfo`, stop it on exit.

    Everything of this server lives in a new folder ``tmp/<name>-XXXX/`` (``home/``, ``data/``,
    ``server.log``) unless ``data_dir`` is given (to restart a server over the data of another).
    """
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
    home = base / "home"
    home.mkdir()
    data = Path(data_dir) if data_dir is not None else base / "data"
    log_path = base / "server.log"
    failure = ""
    for attempt in range(1, BIND_ATTEMPTS + 1):
        port = free_port()
        argv = make_argv(port, data)
        with open(log_path, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                cwd=base,
                env=server_env(home, env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole, spared the terminal's Ctrl-C
            )
        try:
            deadline = t0 + timeout
            while True:
                if proc.poll() is not None:
                    failure = f"{name} server exited with code {proc.returncode} before answering on {HOST}:{port}"
                    break
                if is_ready(port):
                    break
                if time.perf_counter() > deadline:
                    failure = f"{name} server did not answer on {HOST}:{port} within {timeout:.0f}s"
                    break
                time.sleep(POLL_INTERVAL)
        except BaseException:
            stop_process(proc, stop_signal)
            raise
        if failure:
            stop_process(proc, stop_signal)
            if attempt < BIND_ATTEMPTS and _bind_failed(log_tail(log_path)):
                failure = ""
                continue  # the port was taken between picking and binding it: another one
            raise ServerStartError(f"{failure}\ncommand: {' '.join(argv)}\nlog {log_path}:\n{log_tail(log_path)}")
        started_in = time.perf_counter() - t0
        info = ServerInfo(name, HOST, port, f"http://{HOST}:{port}", proc, log_path, data, tuple(argv), started_in)
        try:
            yield info
        finally:
            stop_process(proc, stop_signal)
        return


# ---------------------------------------------------------------------------------- the servers
def _chroma_ready(port: int) -> bool:
    return http_ok(f"http://{HOST}:{port}/api/v2/heartbeat")


def _milvus_ready(port: int) -> bool:
    if not port_open(HOST, port):  # cheap check first: a client on a closed port waits its timeout
        return False
    try:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=f"http://{HOST}:{port}", timeout=5)
    except Exception:  # noqa: BLE001 - not ready yet, whatever pymilvus says
        return False
    try:
        client.get_server_version()
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _s3_ready(port: int) -> bool:
    return http_ok(f"http://{HOST}:{port}/moto-api/")


def chroma_server(tmp: Path, *, data_dir: Path | None = None, timeout: float = START_TIMEOUT):
    """``chroma run --path DATA --host 127.0.0.1 --port N`` (chromadb's CLI): a context manager
    yielding its :class:`ServerInfo`. Clients: ``chromadb.HttpClient(host=info.host, port=info.port)``."""
    return run_server(
        "chroma",
        tmp,
        lambda port, data: [venv_script("chroma"), "run", "--path", str(data), "--host", HOST, "--port", str(port)],
        _chroma_ready,
        data_dir=data_dir,
        timeout=timeout,
    )


def milvus_server(tmp: Path, *, data_dir: Path | None = None, timeout: float = START_TIMEOUT):
    """``milvus-lite server --data-dir DATA --host 127.0.0.1 --port N``: Milvus Lite behind Milvus'
    gRPC API. Yields its :class:`ServerInfo`; clients: ``MilvusClient(uri=info.url)``.

    Stopped with SIGINT first: milvus-lite shuts down gracefully (drains requests, closes the data
    dir) only on KeyboardInterrupt; SIGTERM would end it without closing the data dir.
    """
    return run_server(
        "milvus",
        tmp,
        lambda port, data: [
            venv_script("milvus-lite"), "server", "--data-dir", str(data), "--host", HOST, "--port", str(port)
        ],
        _milvus_ready,
        data_dir=data_dir,
        stop_signal=signal.SIGINT,
        timeout=timeout,
    )


def s3_server(tmp: Path, *, timeout: float = START_TIMEOUT):
    """``moto_server -H 127.0.0.1 -p N`` (moto[server]): S3 (and moto's other services) in memory.
    Yields its :class:`ServerInfo`; clients: ``boto3.client("s3", endpoint_url=info.url, ...)``."""
    return run_server(
        "s3",
        tmp,
        lambda port, data: [venv_script("moto_server"), "-H", HOST, "-p", str(port)],
        _s3_ready,
        env={"AWS_DEFAULT_REGION": "us-east-1"},
        timeout=timeout,
    )


STARTERS = {"chroma": chroma_server, "milvus": milvus_server, "s3": s3_server}


# ---------------------------------------------------------------------------------- fixtures
_SESSION_SERVERS = pytest.StashKey[dict]()


def terminal_line(config: pytest.Config, line: str) -> None:
    """One line on the terminal, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
            reporter.write("\n")  # after the progress dots
        reporter.write_line(line)


def session_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, kind: str) -> ServerInfo:
    """The one ``kind`` server of this test session, started on first use, stopped at session end.

    Kept in the session's stash, so fixtures imported into several conftests/modules share it.
    """
    servers = request.config.stash.setdefault(_SESSION_SERVERS, {})
    if kind not in servers:
        stack = contextlib.ExitStack()
        info = stack.enter_context(STARTERS[kind](tmp_path_factory.mktemp(f"{kind}-server")))
        servers[kind] = info

        def stop() -> None:
            servers.pop(kind, None)
            stack.close()

        request.addfinalizer(stop)
        terminal_line(
            request.config,
            f"[tests.servers] {kind} server on {info.address} answered in {info.started_in:.2f}s (log: {info.log_path})",
        )
    return servers[kind]


@pytest.fixture(scope="session")
def chroma_server_info(request, tmp_path_factory) -> ServerInfo:
    return session_server(request, tmp_path_factory, "chroma")


@pytest.fixture(scope="session")
def chroma_server_url(chroma_server_info) -> str:
    """http://127.0.0.1:N of the session's Chroma server."""
    return chroma_server_info.url


@pytest.fixture(scope="session")
def milvus_server_info(request, tmp_path_factory) -> ServerInfo:
    return session_server(request, tmp_path_factory, "milvus")


@pytest.fixture(scope="session")
def milvus_server_uri(milvus_server_info) -> str:
    """http://127.0.0.1:N of the session's Milvus server (``Settings(milvus_uri=...)``)."""
    return milvus_server_info.url


@pytest.fixture(scope="session")
def s3_server_info(request, tmp_path_factory) -> ServerInfo:
    return session_server(request, tmp_path_factory, "s3")


@pytest.fixture(scope="session")
def s3_endpoint(s3_server_info) -> str:
    """http://127.0.0.1:N of the session's moto S3 server (boto3 ``endpoint_url``)."""
    return s3_server_info.url
