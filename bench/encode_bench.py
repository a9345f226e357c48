"""Encode backends side by side: speed, load, memory and retrieval quality against torch fp32.

    .venv/bin/python bench/encode_bench.py [--datasets ../shared/datasets/scifact,../shared/datasets/cranfield]
        [--backends torch,torch-bf16,onnx,onnx-int8,openvino,openvino-bf16] [--texts 512] [--rounds 3] [--out DIR] [--skip-recall]

1. Throughput: the real chunks of the first documents of each set (ragops' own chunker), encoded
   by every backend in this one process, in interleaved rounds (the machine's noise hits all
   alike); the figure is the median texts/s, and its ratio to torch fp32's.
2. Load time and peak RSS: a fresh process per backend loads it (ONNX: from the export already
   made) and encodes 32 texts; its VmHWM (ru_maxrss would carry this process's peak over exec).
3. Quality: each set ingested through the real pipeline into both stores (``ingest_beir``, its own
   data dir per backend) and scored (``score_stores``): nDCG@10 and recall@100 beside fp32's.

A backend qualifies for ``auto`` when it is within 0.5 point of fp32 on nDCG@10 and recall@100 on
every set and store; the fastest qualifying one is printed as the choice for this CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag_ops.config import Settings  # noqa: E402  (applies the privacy env first)
from rag_ops.encoders import BACKENDS  # noqa: E402

DEFAULT_SETS = [ROOT.parent / "shared" / "datasets" / "scifact", ROOT.parent / "shared" / "datasets" / "cranfield"]
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimd")
BOUND = 0.5  # points of nDCG@10 / recall@100 a backend may lose against fp32 and still qualify

LOAD_PROBE = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from rag_ops.encoders import load_encoder
enc = load_encoder(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
load = time.perf_counter() - t0
enc.encode(json.loads(sys.argv[4]), 16)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"load": load, "rss_mb": hwm / 1024}))
"""


def cpu_description() -> str:
    from rag_ops.encoders import cpu_flags

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = [f for f in CPU_FLAGS if f in cpu_flags()]
    import os

    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores; flags: {' '.join(flags) or '-'}"


def sample_chunks(datasets: list[Path], n: int, settings: Settings) -> list[str]:
    """The first ``n`` chunk texts of the sets, in equal parts, chunked as the pipeline does."""
    from rag_ops.chunk import make_chunker
    from rag_ops.clean import clean_blocks
    from rag_ops.evaluate import iter_corpus
    from rag_ops.parse import parse_document

    chunker = make_chunker(settings)
    texts: list[str] = []
    for ds in datasets:
        mine: list[str] = []
        for doc_id, title, text in iter_corpus(ds / "corpus.jsonl"):
            if len(mine) >= n // len(datasets):
                break
            try:
                blocks = clean_blocks(parse_document(f"{title}\n\n{text}".encode(), f"{doc_id}.txt"))
            except Exception:  # noqa: BLE001 - a document the pipeline would quarantine
                continue
            mine.extend(c.text for c in chunker.chunk_document(doc_id, doc_id, blocks))
        texts.extend(mine[: n // len(datasets)])
    return texts


def throughput(backends: list[str], texts: list[str], settings: Settings, rounds: int) -> dict[str, float]:
    from rag_ops.embed import make_embedder

    embedders = {b: make_embedder(settings.replace(embed_backend=b)) for b in backends}
    for e in embedders.values():
        e.encode(texts[:16])  # load (and export) outside the clock
    times: dict[str, list[float]] = {b: [] for b in backends}
    for r in range(rounds):
        order = backends if r % 2 == 0 else list(reversed(backends))
        for b in order:
            t0 = time.perf_counter()
            embedders[b].encode(texts)
            times[b].append(time.perf_counter() - t0)
    return {b: len(texts) / statistics.median(t) for b, t in times.items()}


def load_and_rss(backend: str, settings: Settings, texts: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE, settings.model_path, backend, str(settings.model_cache_path), json.dumps(texts[:32])],
        capture_output=True, text=True, check=True, timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def recall(backend: str, dataset: Path, out: Path, cache_dir: Path) -> dict[str, dict[str, float]]:
    from rag_ops import evaluate as ev

    settings = Settings(data_dir=out / backend / dataset.name, embed_backend=backend, model_cache_dir=str(cache_dir))
    golden = ev.load_golden(dataset)
    t0 = time.perf_counter()
    target, report = ev.ingest_beir(settings, dataset)
    seconds = time.perf_counter() - t0
    results = ev.score_stores(settings, golden, target=target, record=False)
    print(f"  {backend:<14} {dataset.name:<10} ingest {seconds:7.1f}s ({report['encoded']} encoded, "
          f"encode {report['encode_seconds']:.1f}s)  "
          + "  ".join(f"{s}: nDCG@10 {100 * r['ndcg@10']:.2f} R@100 {100 * r['recall@100']:.2f}" for s, r in results.items()),
          flush=True)
    return {s: {"ndcg@10": 100 * r["ndcg@10"], "recall@100": 100 * r["recall@100"]} for s, r in results.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(str(d) for d in DEFAULT_SETS))
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--texts", type=int, default=512, help="chunks per throughput round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "encode")
    ap.add_argument("--skip-recall", action="store_true")
    args = ap.parse_args()

    from rag_ops.logs import setup_logging

    setup_logging("WARNING")
    datasets = [Path(d).expanduser().resolve() for d in args.datasets.split(",") if d]
    backends = [b for b in args.backends.split(",") if b]
    if backends[0] != "torch":
        backends = ["torch", *[b for b in backends if b != "torch"]]
    cache_dir = args.out / "models"
    settings = Settings(data_dir=args.out / "scratch", model_cache_dir=str(cache_dir))
    print(f"CPU: {cpu_description()}")
    from importlib.metadata import version

    import onnxruntime
    import torch

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino {version('openvino')}; auto here: {settings.replace(embed_backend='auto').encoder_backend}")

    texts = sample_chunks(datasets, args.texts, settings)
    speed = throughput(backends, texts, settings, args.rounds)
    loads = {b: load_and_rss(b, settings, texts) for b in backends}
    scores: dict[str, dict] = {}
    if not args.skip_recall:
        print("\nquality through the pipeline (both stores):")
        for b in backends:
            scores[b] = {ds.name: recall(b, ds, args.out, cache_dir) for ds in datasets}

    print(f"\nthroughput on {len(texts)} chunks, median of {args.rounds} interleaved rounds; load and RSS in a fresh process")
    sets = [ds.name for ds in datasets]
    head = f"{'backend':<14}{'texts/s':>9}{'× fp32':>8}{'load s':>8}{'RSS MB':>8}"
    stores = sorted({s for b in scores.values() for d in b.values() for s in d})
    for ds in sets if scores else []:
        for s in stores:
            head += f"{f'{ds[:4]}/{s[:3]} nDCG':>16}{'R@100':>8}"
    print(head)
    qualified = []
    for b in backends:
        row = f"{b:<14}{speed[b]:>9.1f}{speed[b] / speed['torch']:>8.2f}{loads[b]['load']:>8.2f}{loads[b]['rss_mb']:>8.0f}"
        ok = True
        for ds in sets if scores else []:
            for s in stores:
                mine, ref = scores[b][ds][s], scores["torch"][ds][s]
                row += f"{mine['ndcg@10']:>10.2f}{mine['ndcg@10'] - ref['ndcg@10']:>+6.2f}{mine['recall@100']:>8.2f}"
                ok &= mine["ndcg@10"] >= ref["ndcg@10"] - BOUND and mine["recall@100"] >= ref["recall@100"] - BOUND
        print(row + ("" if not scores else ("  qualifies" if ok else "  outside the bound")))
        if ok:
            qualified.append(b)
    if scores:
        best = max(qualified, key=lambda b: speed[b])
        print(f"\nfastest backend within {BOUND} point of fp32 on every set and store: {best} "
              f"({speed[best] / speed['torch']:.2f}× fp32) on this CPU")
    (args.out / "results.json").write_text(json.dumps(
        {"cpu": cpu_description(), "texts": len(texts), "speed": speed, "loads": loads, "scores": scores}, indent=1))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
