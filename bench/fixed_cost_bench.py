"""What a small incremental run pays besides its work: `ragops ingest` after a one-document edit.

    .venv/bin/python bench/fixed_cost_bench.py [--docs 300] [--beir ../shared/datasets/cranfield]
        [--backends onnx,torch] [--out DIR] [--edits N] [--against CHECKOUT]

Per backend: a fresh data dir gets a full ingest of the first ``--docs`` documents (title, blank
line, text), then an unchanged re-run, then one document gets a sentence appended and is
ingested again. Each run is the CLI in a new process, as a user or a nightly job runs it; wall
time is measured from outside, the split comes from the report's stages (start-up, imports,
model load, the quality gate, the store writes, the rest is work). Target (issue 13): the edit's
wall time at most 2 x the unchanged re-run's + the encode of its chunks.

``--edits N`` edits the document N times (a new sentence each time) and prints the median and
the fastest edit. ``--against CHECKOUT`` compares this checkout's code with another's (e.g. a
``git worktree`` of an older commit) side by side: each gets a copy of the data dir after the
unchanged re-run, and every edit is ingested by both, in alternating order, so the machine's
drift falls on both alike; the ratio of the medians is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BEIR = ROOT.parent / "shared" / "datasets" / "cranfield"
FIXED = ("startup", "imports", "model_load")


def cli(src: Path, data: Path, backend: str, code: Path = ROOT) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_")}
    env.update(RAGOPS_DATA_DIR=str(data), RAGOPS_EMBED_BACKEND=backend, HF_HUB_OFFLINE="1", RAGOPS_LOG_LEVEL="WARNING")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "rag_ops", "ingest", "--source", str(src), "--stores", "chroma", "--json"],
                         env=env, cwd=code, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def split(report: dict) -> str:
    s = dict(report["seconds"])
    s.pop("total", None)
    work = sum(v for k, v in s.items() if k not in (*FIXED, "quality", "upsert"))
    return (f"start-up {s.get('startup', 0):.2f}, imports {s.get('imports', 0):.2f}, model load {s.get('model_load', 0):.2f}, "
            f"quality {s.get('quality', 0):.2f}, store writes {s.get('upsert', 0):.2f}, work {work:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--beir", type=Path, default=DEFAULT_BEIR)
    ap.add_argument("--backends", default="onnx,torch")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fixed_cost")
    ap.add_argument("--edits", type=int, default=1, help="edits of the document (median and fastest printed)")
    ap.add_argument("--against", type=Path, help="another checkout whose code edits the same data side by side")
    args = ap.parse_args()
    codes = {"this": ROOT}
    if args.against is not None:
        if not (args.against / "rag_ops" / "__init__.py").is_file():
            raise SystemExit(f"--against {args.against}: no rag_ops package there")
        codes["against"] = args.against.resolve()
    shutil.rmtree(args.out, ignore_errors=True)
    src = args.out / "src"
    src.mkdir(parents=True)
    with open(args.beir / "corpus.jsonl") as fh:
        for i, line in enumerate(fh):
            if i >= args.docs:
                break
            doc = json.loads(line)
            (src / f"{doc['_id']}.txt").write_text(f"{doc.get('title', '')}\n\n{doc['text']}\n")
    edited = sorted(src.glob("*.txt"))[len(list(src.glob("*.txt"))) // 2]
    original = edited.read_text()
    for backend in args.backends.split(","):
        data = args.out / f"data-{backend}"
        edited.write_text(original)
        full_wall, full = cli(src, data, backend)
        same_wall, same = cli(src, data, backend)
        print(f"{backend}: full run of {full['seen']} documents {full_wall:.1f}s ({split(full)})")
        print(f"{backend}: unchanged re-run {same_wall:.2f}s, {same['encoded']} encoded ({split(same)})", flush=True)
        datas = {name: data for name in codes}
        for name in codes:
            if name != "this":  # the other checkout starts from the same state, in a copy
                datas[name] = args.out / f"data-{backend}-{name}"
                shutil.copytree(data, datas[name])
        walls: dict[str, list[float]] = {name: [] for name in codes}
        text = original
        for i in range(args.edits):
            text += f"One more sentence about the edited document, number {i + 1}.\n"
            edited.write_text(text)
            for name in (list(codes) if i % 2 == 0 else list(reversed(codes))):
                edit_wall, edit = cli(src, datas[name], backend, codes[name])
                walls[name].append(edit_wall)
                target = 2 * same_wall + edit["encode_seconds"]
                print(f"{backend}: {'' if len(codes) == 1 else f'[{name}] '}one document edited {edit_wall:.2f}s, "
                      f"{edit['encoded']} encoded in {edit['encode_seconds']:.3f}s ({split(edit)}); target 2 x "
                      f"{same_wall:.2f} + {edit['encode_seconds']:.3f} = {target:.2f}s: "
                      f"{'MET' if edit_wall <= target else f'missed by {edit_wall - target:.2f}s ({edit_wall / target:.1f}x)'}",
                      flush=True)
        if args.edits > 1 or len(codes) > 1:
            medians = {name: statistics.median(w) for name, w in walls.items()}
            for name, w in walls.items():
                print(f"{backend}: [{name}: {codes[name]}] {len(w)} edits: median {medians[name]:.2f}s, fastest {min(w):.2f}s")
            if "against" in medians:
                print(f"{backend}: this / against, median edit: {medians['this'] / medians['against']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
