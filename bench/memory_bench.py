"""Peak memory of `ragops ingest` as the corpus grows: the same generator at two sizes.

    .venv/bin/python bench/memory_bench.py [--docs 2000,20000] [--stores chroma,milvus] [--out DIR]

For each size: ``bench/ingest_bench.py``'s generated prose (2-6 paragraphs a document) is written
as text files, then ``python -m rag_ops ingest --json`` runs in a fresh data dir with default
settings. The CLI process's peak RSS comes from wait4 (its own ``ru_maxrss``); its helper
processes (a store writer, Milvus Lite's server) are reported apart, as the largest peak among
them. Target (issue 13): the CLI's peak at the largest size within 10% of the smallest's.
This process imports nothing heavy, so the children's peaks are theirs alone.
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
    """The CLI under wait4, so its own ru_maxrss is read apart from its helpers'."""
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
    import resource

    helpers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # max over every waited descendant
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "largest_descendant_mb": helpers, "report": report}


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
        print(f"{n:>6} docs ({nbytes / 1e6:.1f} MB): {r['chunks']} chunks, {r['encoded']} encoded, wall {res['wall']:.0f}s; "
              f"peak RSS ragops ingest {res['rss_mb']:.0f} MB (largest process incl. helpers {res['largest_descendant_mb']:.0f} MB)",
              flush=True)
    if len(rows) > 1:
        small, large = rows[0][2]["rss_mb"], rows[-1][2]["rss_mb"]
        growth = 100 * (large / small - 1)
        print(f"\ngrowth {rows[0][0]} -> {rows[-1][0]} documents: {growth:+.1f}% (target <= 10%: {'MET' if growth <= 10 else 'NOT MET'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
