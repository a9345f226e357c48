"""Recall benchmark against published figures: any BEIR-format folder, both stores.

    .venv/bin/python bench/recall_bench.py DATASET_DIR [--out DIR] [--split test] [--reference "ndcg@10=64.51,..."]

Ingests the set's corpus through the real pipeline with default settings (``ingest_beir``: one
text file per document, title + blank line + text, into a collection of its own, in Chroma and
Milvus Lite), scores its queries through ``rag_ops.evaluate`` (documents ranked by their best
chunk) and prints nDCG@10, recall@10, recall@100 and MRR@10 per store beside the reference, with
the ingest time. The reference comes from ``--reference`` or from the first Markdown table of the
folder's README.md whose header names these metrics (values in percent). Target (issue #4): on
both stores nDCG@10 and recall@100 no more than 1 point below the reference.

A second run reuses ``--out`` (the ingest is incremental: 0 encodes) unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag_ops.config import Settings  # noqa: E402  (applies the privacy env first)

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
HEADER_NAMES = {"ndcg@10": "ndcg@10", "recall@10": "recall@10", "recall@100": "recall@100", "mrr@10": "mrr@10"}


def reference_from_readme(folder: Path) -> dict[str, float]:
    """The first Markdown table in README.md whose header has nDCG@10 etc.; percent values."""
    readme = folder / "README.md"
    if not readme.exists():
        return {}
    lines = readme.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines[:-2]):
        cells = [c.strip().lower() for c in line.strip().strip("|").split("|")]
        if "ndcg@10" not in cells:
            continue
        values = [c.strip() for c in lines[i + 2].strip().strip("|").split("|")]
        out = {}
        for name, raw in zip(cells, values):
            if name in HEADER_NAMES and re.fullmatch(r"[0-9.]+", raw):
                out[HEADER_NAMES[name]] = float(raw)
        if out:
            return out
    return {}


def parse_reference(raw: str) -> dict[str, float]:
    out = {}
    for part in raw.split(","):
        name, _, value = part.partition("=")
        out[name.strip().lower()] = float(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/)")
    ap.add_argument("--out", type=Path, default=None, help="data dir (default bench/out/recall/<name>)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--reference", default=None, help='e.g. "ndcg@10=64.51,recall@100=92.50" (percent)')
    ap.add_argument("--fresh", action="store_true", help="start from an empty data dir")
    args = ap.parse_args()

    from rag_ops import evaluate as ev
    from rag_ops.logs import setup_logging

    setup_logging("WARNING")
    dataset = args.dataset.expanduser().resolve()
    out = args.out or ROOT / "bench" / "out" / "recall" / dataset.name
    if args.fresh and out.exists():
        shutil.rmtree(out)
    settings = Settings(data_dir=out)
    golden = ev.load_golden(dataset, split=args.split)
    reference = parse_reference(args.reference) if args.reference else reference_from_readme(dataset)
    print(f"golden set: {golden.name}, {len(golden)} judged queries; data dir {out}")
    print(f"settings: chunk {settings.chunk_size}/{settings.chunk_overlap} tokens, model {settings.model_id}, "
          f"chroma hnsw M={settings.chroma_hnsw_m} ef_c={settings.chroma_hnsw_ef_construction} "
          f"ef_s={settings.chroma_hnsw_ef_search}, milvus {settings.milvus_index_type}")

    t = time.perf_counter()
    target, report = ev.ingest_beir(settings, dataset)
    ingest_s = time.perf_counter() - t
    print(f"ingest: {report['new'] + report['changed']} documents indexed, {report['unchanged']} unchanged, "
          f"{report['failed']} failed, {report['chunks']} chunks, {report['encoded']} encoded in {ingest_s:.1f}s")

    t = time.perf_counter()
    results = ev.score_stores(settings, golden, target=target, record=False)
    score_s = time.perf_counter() - t
    print(f"scored {len(golden)} queries on {len(results)} stores in {score_s:.1f}s\n")

    header = f"{'metric':<12}{'reference':>11}" + "".join(f"{s:>10}{'Δ':>8}" for s in results)
    print(header)
    print("-" * len(header))
    verdicts = []
    for m in METRICS:
        ref = reference.get(m)
        row = f"{m:<12}{(f'{ref:.2f}' if ref is not None else '-'):>11}"
        for store, res in results.items():
            value = 100 * res[m]
            delta = value - ref if ref is not None else None
            row += f"{value:>10.2f}{(f'{delta:+.2f}' if delta is not None else ''):>8}"
            if m in ("ndcg@10", "recall@100") and delta is not None:
                verdicts.append((store, m, delta >= -1.0))
        print(row)
    if verdicts:
        ok = all(v for *_, v in verdicts)
        print(f"\ntarget (nDCG@10 and recall@100 within 1 point of the reference, both stores): {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
