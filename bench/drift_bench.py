"""Drift benchmark on real text: false positives and detection of rag_ops.drift, per test and rule.

    .venv/bin/python bench/drift_bench.py [--datasets ../shared/datasets] [--trials 50]
        [--sizes 50,200] [--reference 1000] [--mix 0.2] [--permutations N]

Two BEIR collections (``scifact``: biomedical abstracts, ``cranfield``: aerodynamics abstracts)
are embedded with the packaged model and default settings, one vector per document (title +
blank line + text, as ``ragops eval --ingest`` writes them; the model reads the first 256
tokens). ``reference + max(sizes)`` documents are taken from each, in a seeded order, and their
vectors cached in ``bench/out/drift/<set>.npy`` (a second run encodes nothing).

For each collection A as the reference (and B the other one), at each batch size b, each seeded
trial draws a fresh split of A's documents into a reference sample of R and a batch of b
*others* (so a batch never overlaps its reference), plus b documents of B, and runs
``detect_drift`` on:

- A vs A  -> a flag is a **false positive**;
- A vs B  -> a flag is a **detection** (a whole batch from another domain);
- A vs mix -> detection of a partial drift: a batch of A's documents in which a share ``--mix``
  is replaced by B's documents.

Rates are printed per test (classifier, mmd, centroid) and per rule (any, majority, all), then
the null and drift distributions of the scores (to read the thresholds against). Target: at
batch size 200, false positives <= 5% and detection >= 95% for the default rule. Raw per-trial
values go to ``bench/out/drift/results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag_ops.config import DRIFT_TESTS, Settings  # noqa: E402  (applies the privacy env first)

SETS = ("scifact", "cranfield")
RULES = ("any", "majority", "all")
POOL_SEED = 20240601  # the order documents are taken from each corpus


def read_corpus(folder: Path) -> tuple[list[str], list[str]]:
    """Ids and texts of a BEIR corpus.jsonl (title + blank line + text; empty documents skipped)."""
    ids, texts = [], []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            title, body = (row.get("title") or "").strip(), (row.get("text") or "").strip()
            text = f"{title}\n\n{body}" if title and body else (title or body)
            if text:
                ids.append(str(row["_id"]))
                texts.append(text)
    return ids, texts


def pool_vectors(name: str, folder: Path, count: int, out: Path, embedder_factory):
    """Vectors of ``count`` documents of a corpus (seeded order), from the cache where possible."""
    import numpy as np

    ids, texts = read_corpus(folder)
    order = np.random.default_rng(POOL_SEED).permutation(len(ids))[: min(count, len(ids))]
    want = [ids[i] for i in order]
    vec_path, ids_path = out / f"{name}.npy", out / f"{name}.ids.json"
    cached_ids: list[str] = json.loads(ids_path.read_text()) if ids_path.exists() and vec_path.exists() else []
    cached = np.load(vec_path) if cached_ids else None
    keep = 0
    while keep < min(len(cached_ids), len(want)) and cached_ids[keep] == want[keep]:
        keep += 1
    if keep == len(want):
        return cached[: len(want)], 0, 0.0
    t = time.perf_counter()
    fresh = embedder_factory().encode([texts[i] for i in order[keep:]])
    seconds = time.perf_counter() - t
    vectors = fresh if keep == 0 else np.vstack([cached[:keep], fresh])
    np.save(vec_path, vectors)
    ids_path.write_text(json.dumps(want))
    return vectors, len(fresh), seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--sizes", default="50,200")
    ap.add_argument("--reference", type=int, default=None, help="reference sample size (default: the setting)")
    ap.add_argument("--mix", type=float, default=0.2, help="share of the 'partial drift' batch from the other set")
    ap.add_argument("--permutations", type=int, default=None, help="MMD permutations (default: the setting)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "drift")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    import numpy as np

    from rag_ops.drift import combine_verdicts, detect_drift
    from rag_ops.embed import make_embedder
    from rag_ops.logs import setup_logging

    setup_logging("WARNING")
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    base = Settings(data_dir=args.out)
    settings = base.replace(drift_reference_size=args.reference, drift_mmd_permutations=args.permutations)
    R = settings.drift_reference_size
    need = R + max(sizes)

    embedder = None

    def factory():
        nonlocal embedder
        embedder = embedder or make_embedder(settings)
        return embedder

    pools = {}
    for name in SETS:
        vectors, encoded, secs = pool_vectors(name, args.datasets / name, need, args.out, factory)
        if len(vectors) < need:
            raise SystemExit(f"{name} has only {len(vectors)} non-empty documents; need {need} (reference + batch)")
        pools[name] = vectors
        print(f"{name}: {len(vectors)} document vectors ({encoded} encoded now in {secs:.1f}s, the rest cached)")
    print(f"model {settings.model_id}; reference {R}; {args.trials} trials per cell; MMD "
          f"{settings.drift_mmd_permutations} permutations; thresholds: AUC > {settings.drift_auc_threshold}, "
          f"p < {settings.drift_mmd_p_value}, centroid > {settings.drift_centroid_threshold}; "
          f"default rule {settings.drift_rule!r}; partial drift = {args.mix:.0%} of the batch from the other set\n")

    t_all = time.perf_counter()
    raw: list[dict] = []
    for a, b in (SETS, SETS[::-1]):
        for size in sizes:
            for trial in range(args.trials):
                rng = np.random.default_rng([args.seed, SETS.index(a), size, trial])
                perm = rng.permutation(len(pools[a]))
                ref = pools[a][perm[:R]]
                same = pools[a][perm[R : R + size]]
                other = pools[b][rng.choice(len(pools[b]), size, replace=False)]
                k = int(round(args.mix * size))
                mixed = np.vstack([same[: size - k], other[:k]])
                for kind, batch in (("same", same), ("other", other), ("mix", mixed)):
                    rep = detect_drift(ref, batch, settings=settings, seed=trial)
                    raw.append({
                        "reference": a, "batch_from": a if kind == "same" else b, "kind": kind, "size": size,
                        "trial": trial, "auc": rep.auc, "p_value": rep.p_value, "mmd2": rep.mmd2,
                        "centroid": rep.centroid_distance, "verdicts": rep.verdicts, "seconds": rep.seconds,
                    })
    elapsed = time.perf_counter() - t_all
    (args.out / "results.json").write_text(json.dumps(raw))

    def rate(rows, name):
        flags = [r["verdicts"][name] if name in DRIFT_TESTS else combine_verdicts(r["verdicts"], name) for r in rows]
        return 100.0 * sum(flags) / len(flags)

    names = (*DRIFT_TESTS, *RULES)
    header = f"{'reference':<10}{'batch':>6}  " + "".join(f"{n:>10}" for n in names)
    for title, kind in (("false positives (batch from the reference's own collection), %", "same"),
                        ("detection (batch from the other collection), %", "other"),
                        (f"detection of partial drift ({args.mix:.0%} of the batch from the other collection), %", "mix")):
        print(title)
        print(header)
        print("-" * len(header))
        for a in SETS:
            for size in sizes:
                rows = [r for r in raw if r["reference"] == a and r["size"] == size and r["kind"] == kind]
                print(f"{a:<10}{size:>6}  " + "".join(f"{rate(rows, n):>10.0f}" for n in names))
        print()

    print("score distributions (both references pooled): median [5th-95th percentile], max or min")
    for size in sizes:
        for kind in ("same", "mix", "other"):
            rows = [r for r in raw if r["size"] == size and r["kind"] == kind]
            auc = np.array([r["auc"] for r in rows])
            pv = np.array([r["p_value"] for r in rows])
            cd = np.array([r["centroid"] for r in rows])
            q = lambda x: f"{np.median(x):.4f} [{np.percentile(x, 5):.4f}-{np.percentile(x, 95):.4f}]"  # noqa: E731
            print(f"  batch {size:>4} {kind:<5}  AUC {q(auc)} max {auc.max():.3f} | p {q(pv)} | "
                  f"centroid {q(cd)} max {cd.max():.4f} min {cd.min():.4f}")
    print()

    mean_s = float(np.mean([r["seconds"] for r in raw]))
    print(f"{len(raw)} drift checks in {elapsed:.0f}s ({mean_s:.2f}s each on average)")
    rule = settings.drift_rule
    ok = all(
        rate([r for r in raw if r["reference"] == a and r["size"] == 200 and r["kind"] == "same"], rule) <= 5.0
        and rate([r for r in raw if r["reference"] == a and r["size"] == 200 and r["kind"] == "other"], rule) >= 95.0
        for a in SETS
    ) if 200 in sizes else None
    if ok is not None:
        print(f"target (rule {rule!r}, batch 200: false positives <= 5%, detection >= 95%, both references): "
              f"{'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
