"""Fixed costs and honest timings of `ragops ingest`, measured the way a user runs it: a new
process each time (imports and the model load are part of what a run pays)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_corpus
from test_cli import cli_env, last_json, ragops

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "sentence_transformers", "great_expectations", "unstructured", "spacy")
# the CLI's own entry, then which heavy libraries the process ended up importing
PROBE = (
    "import json, sys\n"
    "from rag_ops.cli import main\n"
    "code = main(sys.argv[1:])\n"
    f"print(json.dumps({{'code': code, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
)


def probe(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return {"report": json.loads(lines[0]), **json.loads(lines[-1])}


def test_every_second_of_an_ingest_belongs_to_a_named_stage(tmp_path):
    """The report's stages (start-up and imports included) add up to its total within 2%, and the
    total is the process's wall time: nothing of the run is left untimed."""
    env = cli_env(tmp_path / "data", write_corpus(tmp_path / "src"))
    t0 = time.perf_counter()
    proc = ragops(env, "ingest", "--json")
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = last_json(proc)
    seconds = dict(report["seconds"])
    total = seconds.pop("total")
    for stage in ("startup", "imports", "model_load", "parse", "chunk", "embed", "quality", "upsert", "commit"):
        assert seconds.get(stage, 0) > 0, f"stage {stage} missing or zero: {seconds}"
    assert abs(total - sum(seconds.values())) <= 0.02 * total, (total, sum(seconds.values()), seconds)
    assert 0.9 * wall <= total <= wall, (total, wall)
    assert set(report["upsert_seconds"]) == {"chroma", "milvus"}  # each store's own time, beside the stage
    # each process's own memory peak: this one, the gate's and each store writer's helper
    peaks = report["peak_rss_mb"]
    assert set(peaks) == {"ingest", "quality", "chroma", "milvus"} and all(v > 50 for v in peaks.values()), peaks


def test_a_run_that_encodes_nothing_imports_no_model_and_no_quality_library(tmp_path):
    """An unchanged re-run imports neither torch, transformers, Great Expectations nor the parsers;
    a one-document edit encoded by ONNX Runtime parses and checks but never loads torch, and its
    quality gate runs in a helper process (imported while this one parsed)."""
    src = write_corpus(tmp_path / "src")
    env = cli_env(tmp_path / "data", src, RAGOPS_EMBED_BACKEND="onnx")
    first = ragops(env, "ingest", "--json")
    assert first.returncode == 0, first.stderr[-3000:]

    again = probe(env, "ingest", "--json")
    assert again["report"]["encoded"] == 0 and again["report"]["unchanged"] == 3
    assert again["loaded"] == [], f"an unchanged re-run imported {again['loaded']}"

    doc = src / "robots" / "battery.txt"
    doc.write_text(doc.read_text() + "\nThe pack weighs eleven kilograms.\n")
    edit = probe(env, "ingest", "--json")
    assert edit["report"]["changed"] == 1 and edit["report"]["encoded"] >= 1
    assert "torch" not in edit["loaded"] and "transformers" not in edit["loaded"], edit["loaded"]
    assert "unstructured" in edit["loaded"]  # it parsed here
    # the gate ran, in a process of its own: this one never imported Great Expectations
    assert "great_expectations" not in edit["loaded"], edit["loaded"]
    assert edit["report"]["seconds"]["quality"] > 0 and Path(edit["report"]["data_docs"]).is_file(), edit["report"]
    # its Data Docs pages (built by the gate's process while the store was written) are there
    docs = Path(edit["report"]["data_docs"]).parent
    run_id = edit["report"]["run_id"]
    assert {p.parent.name for p in (docs / "validations").rglob(f"{run_id}/*")} >= {run_id}, run_id
    assert run_id in (docs / "index.html").read_text()

    # only a timestamp moved: the helpers started for the run are let go unused, nothing is parsed
    other = src / "robots" / "battery.txt"
    later = other.stat().st_mtime + 60
    os.utime(other, (later, later))
    touched = probe(env, "ingest", "--json")
    assert touched["report"]["unchanged"] == 3 and touched["report"]["encoded"] == 0, touched["report"]
    assert touched["loaded"] == [], f"a timestamp-only change imported {touched['loaded']}"


def _spawned_children(pid: int) -> list[int]:
    """The helper processes (multiprocessing ``spawn``) the process ``pid`` started."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                out.append(int(child))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_helpers_of_a_killed_ingest_die_with_it(tmp_path):
    """SIGKILL of `ragops ingest` (the OOM killer, a killed task) takes its helper processes (the
    gate's, each store writer's) with it: none is left holding memory with nothing to do."""
    env = cli_env(tmp_path / "data", write_corpus(tmp_path / "src"), RAGOPS_LOG_LEVEL="INFO")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag_ops", "ingest", "--json"], env=env, cwd=str(REPO),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in proc.stderr:  # the helpers are started with the run, before its first batch
            if "helper processes started" in line:
                break
        helpers = _spawned_children(proc.pid)
        assert len(helpers) == 3, helpers  # the gate, chroma's writer, milvus' writer
        exits = [os.pidfd_open(p) for p in helpers]
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 60
    while exits and time.monotonic() < deadline:  # a pidfd turns readable when its process ends
        ready, _, _ = select.select(exits, [], [], deadline - time.monotonic())
        exits = [fd for fd in exits if fd not in ready]
    for fd in exits:  # not to leave them behind when the test fails
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    assert not exits, f"{len(exits)} helper(s) outlived the killed ingest"
