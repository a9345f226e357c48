"""Ingest benchmark: ratios measured side by side in one process (machines here are shared and noisy).

    .venv/bin/python bench/ingest_bench.py [--docs 2000] [--beir DIR] [--out DIR] [--precision fp32|bf16]

Builds a corpus of ``--docs`` text files (from a BEIR ``corpus.jsonl`` when one is found, title +
blank line + text, else generated prose), then measures, with the model loaded beforehand (load
time is not counted, as in shared/PEERS.md):

1. a full ``ingest`` into fresh Chroma + Milvus Lite collections (chunks/s, documents/s);
2. raw ``SentenceTransformer.encode`` (torch, ``--precision``) of exactly the chunks the pipeline
   produced (same batch size), timed before and after the pipeline run; ratio = pipeline ÷ raw
   (above 1 when the pipeline's encode backend is faster than torch: ``RAGOPS_EMBED_BACKEND``);
3. an unchanged re-run (fraction of the full run, chunks encoded);
4. 1% of documents touched (mtime moved, bytes equal), 1% edited, 1% deleted with full sync;
5. peak RSS of the process after the full run (model, stores and pipeline; before the baseline).
Targets (issue #2): ratio >= 0.8; unchanged re-run <= 3% of the full run with 0 encodes.
Settings come from ``RAGOPS_*`` variables like the CLI's, e.g. the peers' setup in
shared/PEERS.md: ``RAGOPS_CHUNK_SIZE=256 RAGOPS_EMBED_BATCH_SIZE=32 ... --beir DIR/cranfield --docs 1400``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag_ops.config import Settings  # noqa: E402  (applies the privacy env first)

DEFAULT_BEIR = ROOT.parent / "shared" / "datasets" / "scifact"
WORDS = (
    "robot fleet battery dock charging route warehouse pallet sensor lidar firmware update schedule "
    "operator safety incident outage latency throughput network controller mission order picking "
    "shelf aisle map calibration error recovery report policy customer support release version"
).split()


def build_corpus(dest: Path, n_docs: int, beir: Path | None, seed: int = 7) -> int:
    """Write ``n_docs`` .txt files; returns total bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    if beir is not None and (beir / "corpus.jsonl").exists():
        with open(beir / "corpus.jsonl") as fh:
            for i, line in enumerate(fh):
                if i >= n_docs:
                    break
                doc = json.loads(line)
                text = f"{doc.get('title', '').strip()}\n\n{doc['text'].strip()}\n"
                path = dest / f"{i // 500:03d}" / f"{doc['_id']}.txt"
                path.parent.mkdir(exist_ok=True)
                path.write_text(text)
                total += len(text.encode())
        return total
    rng = random.Random(seed)
    for i in range(n_docs):
        paras = []
        for _ in range(rng.randint(2, 6)):
            sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "." for _ in range(rng.randint(3, 7))]
            paras.append(" ".join(sents))
        text = f"Document {i}\n\n" + "\n\n".join(paras) + "\n"
        path = dest / f"{i // 500:03d}" / f"doc{i:05d}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        total += len(text.encode())
    return total


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_child_rss_mb() -> float:
    """The largest peak RSS of any finished child or grandchild (helper processes, Milvus Lite servers)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--beir", type=Path, default=DEFAULT_BEIR if DEFAULT_BEIR.exists() else None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "ingest")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--batch-size", type=int, default=None, help="documents per batch (default: the setting)")
    ap.add_argument("--prepare-workers", type=int, default=None, help="helper processes parsing ahead (default: the setting)")
    args = ap.parse_args()

    from rag_ops.embed import load_model
    from rag_ops.logs import setup_logging
    from rag_ops.pipeline import ingest
    from rag_ops.stores import open_store

    setup_logging("WARNING")
    if args.out.exists():
        shutil.rmtree(args.out)
    corpus = args.out / "corpus"
    nbytes = build_corpus(corpus, args.docs, args.beir)
    settings = Settings.from_env(  # RAGOPS_* variables apply, as for the CLI
        data_dir=args.out / "data", source=str(corpus), embed_precision=args.precision,
        **({"batch_size": args.batch_size} if args.batch_size else {}),
        **({"prepare_workers": args.prepare_workers} if args.prepare_workers is not None else {}),
    )
    print(f"corpus: {args.docs} documents, {nbytes / 1e6:.1f} MB ({'BEIR ' + args.beir.name if args.beir else 'generated'})")
    print(f"settings: chunk {settings.chunk_size}/{settings.chunk_overlap} tokens, encode batch {settings.embed_batch_size}, "
          f"{settings.batch_size} docs/batch, {settings.prepare_workers} prepare worker(s), backend {settings.encoder_backend} (raw encode: torch {settings.embed_precision}), stores {','.join(settings.stores)}")

    t = time.perf_counter()
    model = load_model(settings.model_path)
    print(f"model loaded in {time.perf_counter() - t:.1f}s (not counted below)")

    def raw_encode(texts: list[str]) -> float:
        import contextlib

        import torch

        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if settings.embed_precision == "bf16" else contextlib.nullcontext()
        t0 = time.perf_counter()
        with ctx:
            model.encode(texts, batch_size=settings.embed_batch_size, normalize_embeddings=True, show_progress_bar=False)
        return time.perf_counter() - t0

    # warm-up so neither side pays first-call costs
    raw_encode(["warm up the model"] * 64)

    t = time.perf_counter()
    full = ingest(settings, helper_processes=True)
    full_s = time.perf_counter() - t
    rss_full = peak_rss_mb()  # before the raw-encode baseline runs in this process
    rss_child = peak_child_rss_mb()
    with open_store("chroma", settings) as chroma:
        got = chroma._collection().get(include=["documents"])  # every chunk text the pipeline produced
    texts = got["documents"]
    assert len(texts) == full["chunks"], (len(texts), full["chunks"])
    raw_s = (raw_encode(texts) + raw_encode(texts)) / 2
    pipe_cps, raw_cps = full["chunks"] / full_s, len(texts) / raw_s

    t = time.perf_counter()
    rerun = ingest(settings, helper_processes=True)
    rerun_s = time.perf_counter() - t

    files = sorted(p for p in corpus.rglob("*.txt"))
    rng = random.Random(11)
    one_pct = max(1, len(files) // 100)
    sample = rng.sample(files, 3 * one_pct)  # three disjoint 1% samples, as in shared/PEERS.md
    touched, edited, deleted = sample[:one_pct], sample[one_pct : 2 * one_pct], sample[2 * one_pct :]
    for p in touched:
        st = p.stat()
        os.utime(p, (st.st_atime, st.st_mtime + 3600))
    t = time.perf_counter()
    touch_run = ingest(settings, helper_processes=True)
    touch_s = time.perf_counter() - t
    for p in edited:
        p.write_text(p.read_text() + "\nAddendum: this paragraph was added by the benchmark to edit the document.\n")
    t = time.perf_counter()
    edit_run = ingest(settings, helper_processes=True)
    edit_s = time.perf_counter() - t
    for p in deleted:
        p.unlink()
    t = time.perf_counter()
    delete_run = ingest(settings, full_sync=True, helper_processes=True)
    delete_s = time.perf_counter() - t
    with open_store("chroma", settings) as chroma, open_store("milvus", settings) as milvus:
        left = {"chroma": chroma.count(), "milvus": milvus.count()}
    from rag_ops.catalog import Catalog

    cat = Catalog(settings.catalog_db_url)
    catalog_chunks = cat.counts()["chunks"]
    cat.close()

    rows = [
        ("full run: chunks", f"{full['chunks']} from {full['new']} documents ({full['failed']} failed)"),
        ("full run: seconds", f"{full_s:.1f} (stages: " + ", ".join(f"{k} {v:.1f}" for k, v in full["seconds"].items() if k != "total") + ")"),
        ("full run: documents/s", f"{full['new'] / full_s:.1f}"),
        ("pipeline chunks/s", f"{pipe_cps:.1f}"),
        ("raw encode chunks/s (same chunks)", f"{raw_cps:.1f}"),
        ("RATIO pipeline / raw encode", f"{pipe_cps / raw_cps:.3f}   (target >= 0.8)"),
        ("unchanged re-run: share of full run", f"{rerun_s / full_s:.4f} ({rerun_s:.2f}s), encoded {rerun['encoded']}   (target <= 0.03, 0)"),
        (f"{len(touched)} touched (mtime only): share / encoded", f"{touch_s / full_s:.4f}, encoded {touch_run['encoded']}, parsed {touch_run['new'] + touch_run['changed']}"),
        (f"{len(edited)} edited: share / encoded", f"{edit_s / full_s:.4f} ({edit_s:.2f}s), encoded {edit_run['encoded']} of {edit_run['chunks']} chunks re-chunked"),
        ("edited run: stages", ", ".join(f"{k} {v:.2f}" for k, v in edit_run["seconds"].items())),
        (f"{len(deleted)} deleted + full sync", f"{delete_s / full_s:.4f}, removed {delete_run['removed']}, "
                                               f"store counts {left} vs catalog {catalog_chunks}"),
        ("peak RSS of the full run (model included)", f"{rss_full:.0f} MB"),
        ("peak RSS of the largest child (helpers, Milvus Lite server)", f"{rss_child:.0f} MB"),
        ("peak RSS incl. the raw-encode baseline", f"{peak_rss_mb():.0f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
