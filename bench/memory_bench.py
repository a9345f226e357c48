"""Peak memory of `ragops ingest` as the corpus grows: the same generator at two sizes.

    .venv/bin/python bench/memory_bench.py [--docs 2000,20000] [--stores chroma,milvus] [--out DIR]

For each size: ``bench/ingest_bench.py``'s generated prose (2-6 paragraphs a document) is written
as text files, then ``python -m rag_ops ingest --json`` runs in a fresh data dir with default
settings. Each process reports its own peak (the report's ``peak_rss_mb``): the command's own
process, the quality gate's and each store writer's helper process. wait4's figure for the
command is the largest of them all (the kernel folds the waited-for descendants' peaks into a
child's), printed as "any process". Target (issue 13): the command's own peak at the largest
size within 10% of the smallest's. This process imports nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from ingest_bench import build_corpus  # noqa: E402  (generated prose; imports rag_ops.config only)


def run(src: Path, data: Path, stores: str) -> dict:
    """The CLI under wait4 (whose ru_maxrss is the largest of the CLI and its helpers); each
    process's own peak comes from the report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_")}
    env.update(RAGOPS_DATA_DIR=str(data), HF_HUB_OFFLINE="1", RAGOPS_LOG_LEVEL="WARNING")
    out_path = data.parent / f"{data.name}.report.json"
    err_path = data.parent / f"{data.name}.stderr.log"
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag_ops", "ingest", "--source", str(src), "--stores", stores, "--json"],
            stdout=out, stderr=err, env=env, cwd=ROOT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"ingest failed ({code}):\n{err_path.read_text()[-3000:]}")
    report = json.loads(out_path.read_text().strip().splitlines()[-1])
    return {"wall": wall, "any_process_mb": usage.ru_maxrss / 1024, "rss_mb": report["peak_rss_mb"]["ingest"], "report": report}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="2000,20000")
    ap.add_argument("--stores", default="chroma,milvus")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "memory")
    args = ap.parse_args()
    sizes = [int(n) for n in args.docs.split(",")]
    rows = []
    for n in sizes:
        base = args.out / f"docs{n}"
        shutil.rmtree(base, ignore_errors=True)
        nbytes = build_corpus(base / "src", n, None)
        res = run(base / "src", base / "data", args.stores)
        r = res["report"]
        rows.append((n, nbytes, res))
        helpers = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mb"].items() if k != "ingest" and v is not None)
        print(f"{n:>6} docs ({nbytes / 1e6:.1f} MB): {r['chunks']} chunks, {r['encoded']} encoded, wall {res['wall']:.0f}s; "
              f"peak RSS: ragops ingest's process {res['rss_mb']:.0f} MB; helpers (MB): {helpers}; "
              f"any process {res['any_process_mb']:.0f} MB", flush=True)
    if len(rows) > 1:
        small, large = rows[0][2]["rss_mb"], rows[-1][2]["rss_mb"]
        growth = 100 * (large / small - 1)
        print(f"\ngrowth {rows[0][0]} -> {rows[-1][0]} documents: {growth:+.1f}% (target <= 10%: {'MET' if growth <= 10 else 'NOT MET'})")
        first, last = rows[0][2]["report"]["peak_rss_mb"], rows[-1][2]["report"]["peak_rss_mb"]
        for k in last:
            if k != "ingest" and first.get(k) and last[k]:
                print(f"  {k} helper: {first[k]:.0f} -> {last[k]:.0f} MB ({100 * (last[k] / first[k] - 1):+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
