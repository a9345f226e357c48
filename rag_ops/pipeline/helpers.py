"""Helper processes of a run in one process (the CLI): each has one job (prepare batches ahead of
the encoder, run the quality gate, or write one store) and is started with ``spawn``, never fork:
the run's process holds the model's threads."""

from __future__ import annotations

import contextlib
import logging
import os

from rag_ops.config import Settings


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (the kernel's high-water mark)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def helper_event():
    """An ``Event`` the run's helper processes can share (given in their initializer's args)."""
    import multiprocessing

    return multiprocessing.get_context("spawn").Event()


def helper_pool(workers: int, initializer, settings: Settings, *args):
    """A pool of ``spawn``-ed processes, each set up by ``initializer(settings, level, *args)``;
    ``level`` is this process's effective log level, so the helpers log alike."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer, initargs=(settings, level, *args),
    )


class Helper:
    """One helper process, started at once so that its libraries are imported while the run
    parses and encodes; ``close(abandon=True)`` kills it when its job turned out not to be needed
    and it is still importing (rather than waiting for an import nobody will use)."""

    def __init__(self, initializer, settings: Settings, *args):
        self._pool = helper_pool(1, initializer, settings, *args)
        self._ready = self._pool.submit(int)  # the process starts now (its initializer runs first)

    def submit(self, fn, *args):
        return self._pool.submit(fn, *args)

    def close(self, abandon: bool = False) -> None:
        # killed only while still importing: an idle helper is stopped the normal way (killing one
        # that waits on the pool's queue would leave the queue's lock taken, and a warning)
        if abandon and not self._ready.done():
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                with contextlib.suppress(Exception):
                    proc.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)


def die_with_parent() -> None:
    """Have the kernel kill this helper when the process that started it dies (Linux).

    A helper blocks on its pool's queue; when the run's process is killed (SIGKILL, the OOM
    killer) nothing would ever tell it to stop, and it would hold its memory for good. Its work
    is safe to lose: stores are written by content id and the catalog last, so the next run
    redoes it. The helpers are started from the thread that runs the ingest, which lives as long
    as the run (the signal follows the parent thread)."""
    import multiprocessing
    import signal
    import sys

    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the call above
        os._exit(1)


def exit_quickly() -> None:
    """Make this helper process end without tearing down its modules (GX, chromadb, spaCy...:
    about half a second a process here, which the run waited for). Registered first, the handler
    runs after every other exit handler (they run last-registered first): the libraries' own
    clean-up still runs; only the teardown is skipped. Results went back through the pool's
    queue before the process is told to stop."""
    import atexit
    import sys

    def _exit() -> None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)

    atexit.register(_exit)


def start_helper(level: str) -> None:
    """What every helper process does first: die with the run's process, end without module
    teardown, and log at the run's level."""
    from rag_ops.logs import setup_logging

    die_with_parent()
    exit_quickly()
    setup_logging(level)


@contextlib.contextmanager
def _lowest_priority():
    """Imports at the lowest CPU priority: while the model encodes on every core, a busy process at
    normal priority stalls it (see ``pipeline.run``); the priority is restored afterwards where the
    OS allows it (raising it back needs CAP_SYS_NICE; otherwise it stays low)."""
    before = None
    with contextlib.suppress(OSError, AttributeError):
        before = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    try:
        yield
    finally:
        if before is not None:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, before)


_CLIENT_LIBRARIES = {"chroma": "chromadb", "milvus": "pymilvus"}


def init_store_writer(settings: Settings, level: str, store: str, go=None) -> None:
    """A process that writes one store: that store's library imported ahead of use, once ``go``
    (an ``Event``) is set: until then the gate's import has the spare core to itself."""
    import importlib

    start_helper(level)
    if go is not None:
        go.wait()
    # the store's module and its client library (which the store imports lazily); a store
    # without either imports what it needs when it writes
    with _lowest_priority(), contextlib.suppress(ImportError):
        importlib.import_module(f"rag_ops.stores.{store}")
        if store in _CLIENT_LIBRARIES:
            importlib.import_module(_CLIENT_LIBRARIES[store])


def init_gate(settings: Settings, level: str, done=None) -> None:
    """The quality gate's process: Great Expectations' import alone took 2.5-7.6 s of a gate here;
    in this process it overlaps the run's own imports, parsing and encoding, and so does the
    set-up of its context and suites. ``done`` (an ``Event``) is set once they are over."""
    start_helper(level)
    try:
        with _lowest_priority():
            from rag_ops.quality.context import ready

            ready()
    finally:
        if done is not None:
            done.set()


def run_gate(settings: Settings, plan_ref: str):
    """The quality checks of a run in its gate helper (see :func:`init_gate`): their outcomes go
    back to the run's process, which records them in the catalog, so this process never opens it;
    the Data Docs pages are left to ``build_quality_docs``, run while the stores are written."""
    from rag_ops.pipeline.write import check_gate

    return check_gate(settings, plan_ref, defer_docs=True)
