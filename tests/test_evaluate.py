"""Retrieval recall (rag_ops.evaluate): metrics, golden sets, chunk->document ranking, the
regression gate, the synthetic set, the recall_scores table and ``ragops eval``.

Everything is real: the packaged model, Chroma and Milvus Lite on tmp dirs, SQLite and
PostgreSQL. One tiny BEIR set (8 short documents, 6 scored queries) is ingested once per module;
tests that need another collection re-use its embedding cache, so the model encodes ~8 chunks.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from rag_ops import evaluate as ev
from rag_ops.catalog import Catalog
from rag_ops.config import Settings
from rag_ops.errors import ConfigError, RagopsError, RecallRegression
from rag_ops.identity import doc_id_for
from rag_ops.stores import Hit, StoredChunk, open_store

STORES = ["chroma", "milvus"]

# ---------------------------------------------------------------------------- the tiny BEIR set
CORPUS = [
    {"_id": "doc/1", "title": "Swapping the R7 robot battery",
     "text": "Park the robot at a charging bay, press the red release latch and slide the battery pack out on its rails."},
    {"_id": "Ünï code", "title": "Hotel reimbursement",
     "text": "Hotel nights are reimbursed up to 180 euros per night in Europe when booked through the travel portal."},
    {"_id": ".hidden", "title": "API rate limits",
     "text": "The fleet API accepts 600 requests per minute per token; bursts above the limit receive HTTP 429."},
    {"_id": 42, "title": "Brewing espresso",
     "text": "Grind the coffee beans finely, tamp the grounds and extract a shot for about 25 seconds at 9 bar."},
    {"_id": "a b%c", "title": "Growing tomatoes",
     "text": "Tomato plants need six hours of direct sunlight, deep watering twice a week and a stake for support."},
    {"_id": "volcano", "title": "Volcanic eruptions",
     "text": "Magma rises through the crust and erupts as lava, ash and volcanic gases from the crater."},
    {"_id": "chess", "title": "",
     "text": "The Sicilian Defence begins with e4 c5 and leads to sharp, asymmetrical chess positions."},
    {"_id": "bike", "title": "Fixing a flat bicycle tyre",
     "text": "Remove the wheel, lever the tyre off the rim, patch the inner tube and pump it to the printed pressure."},
]
QUERIES = {
    "q1": "How do I take the battery out of the R7 robot?",
    "q2": "What is the hotel limit per night in Europe?",
    "q3": "How many API requests per minute are allowed?",
    "q4": "How long should an espresso shot be extracted?",
    "q5": "How do I repair a punctured bicycle tyre?",
    "q6": "Why does a volcano erupt lava and ash?",
    "q7": "Which chess opening starts with c5?",  # judged only with grade 0: not scored
    "q8": "A query nobody judged",
}
QRELS = [
    ("q1", "doc/1", 1), ("q2", "Ünï code", 2), ("q2", ".hidden", 0), ("q3", ".hidden", 1), ("q4", "42", 2),
    ("q5", "bike", 1), ("q6", "volcano", 1), ("q7", "chess", 0),
]
SCORED = 6
SET_NAME = "tiny_beir"


def write_beir(root: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()), encoding="utf-8"
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels), encoding="utf-8"
    )
    return root


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    """The tiny set ingested once: (base settings, BEIR dir, set settings, first ingest report)."""
    root = tmp_path_factory.mktemp("evaluate")
    beir_dir = write_beir(root / SET_NAME)
    base = Settings(data_dir=root / "data", source=str(root / "unused"), batch_size=4)
    target, report = ev.ingest_beir(base, beir_dir)
    return base, beir_dir, target, report


# ---------------------------------------------------------------------------- metrics
def test_recall_hand_computed():
    qrels = {"a": 1, "b": 2, "c": 0, "d": 1}  # relevant: a, b, d (c has grade 0)
    ranked = ["x", "b", "c", "a", "y"]
    assert ev.recall_at_k(ranked, qrels, 1) == 0.0
    assert ev.recall_at_k(ranked, qrels, 2) == pytest.approx(1 / 3)
    assert ev.recall_at_k(ranked, qrels, 4) == pytest.approx(2 / 3)
    assert ev.recall_at_k(ranked, qrels, 100) == pytest.approx(2 / 3)  # k beyond the ranking
    assert ev.recall_at_k(["x", "y"], qrels, 10) == 0.0  # nothing relevant retrieved
    assert ev.recall_at_k([], qrels, 10) == 0.0
    assert ev.recall_at_k(["a"], {"a": 0}, 5) == 0.0  # no relevant document at all
    assert ev.recall_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 2) == 1.0  # a repeated key counts once


def test_ndcg_graded_hand_computed():
    qrels = {"a": 3, "b": 2, "c": 1, "z": 0}
    ranked = ["c", "x", "a", "b"]
    dcg = 1 / math.log2(2) + 0 + 3 / math.log2(4) + 2 / math.log2(5)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ev.ndcg_at_k(ranked, qrels, 10) == pytest.approx(dcg / idcg)
    # cut at 2: dcg over c, x; ideal over the two best grades 3, 2
    assert ev.ndcg_at_k(ranked, qrels, 2) == pytest.approx(1.0 / (3 + 2 / math.log2(3)))
    assert ev.ndcg_at_k(["a", "b", "c"], qrels, 10) == pytest.approx(1.0)  # ideal order
    assert ev.ndcg_at_k(["x", "y", "z"], qrels, 10) == 0.0  # none relevant retrieved
    assert ev.ndcg_at_k(["a"], {"a": 0}, 10) == 0.0  # nothing relevant: 0, not a division error


def test_ndcg_ties_in_grades_do_not_depend_on_order():
    qrels = {"a": 2, "b": 2, "c": 1}
    assert ev.ndcg_at_k(["a", "b", "c"], qrels, 3) == pytest.approx(1.0)
    assert ev.ndcg_at_k(["b", "a", "c"], qrels, 3) == pytest.approx(1.0)
    swapped = ev.ndcg_at_k(["c", "a", "b"], qrels, 3)
    expected = (1 + 2 / math.log2(3) + 2 / math.log2(4)) / (2 + 2 / math.log2(3) + 1 / math.log2(4))
    assert swapped == pytest.approx(expected)
    # k larger than the ranking: the ideal still counts every relevant document
    assert ev.ndcg_at_k(["a"], qrels, 10) == pytest.approx(2 / (2 + 2 / math.log2(3) + 1 / math.log2(4)))


def test_mrr_and_hit_hand_computed():
    qrels = {"a": 1, "b": 1}
    assert ev.mrr_at_k(["x", "y", "b", "a"], qrels, 10) == pytest.approx(1 / 3)
    assert ev.mrr_at_k(["x", "y", "b"], qrels, 2) == 0.0  # first relevant beyond k
    assert ev.mrr_at_k([], qrels, 10) == 0.0
    assert ev.mrr_at_k(["x", "x", "a"], qrels, 10) == pytest.approx(1 / 2)  # repeated key counts once
    assert ev.hit_at_k(["x", "a"], qrels, 1) == 0.0
    assert ev.hit_at_k(["x", "a"], qrels, 2) == 1.0
    assert ev.hit_at_k(["x"], qrels, 100) == 0.0


def test_score_rankings_means_over_judged_queries():
    qrels = {
        "q1": {"a": 1},
        "q2": {"b": 2, "c": 1},
        "q3": {"d": 0},  # no relevant document: not scored
    }
    rankings = {"q1": ["a", "x"], "q2": ["x", "c", "y", "b"], "q3": ["d"], "q_unjudged": ["a"]}
    out = ev.score_rankings(rankings, qrels)
    assert set(out) == {
        "recall@1", "recall@5", "recall@10", "recall@20", "recall@100", "ndcg@10", "mrr@10",
        "hit@1", "hit@5", "hit@10", "hit@20", "hit@100", "queries",
    }
    assert out["queries"] == 2
    assert out["recall@1"] == pytest.approx((1 + 0) / 2)
    assert out["recall@5"] == pytest.approx(1.0)
    assert out["hit@1"] == pytest.approx(0.5)
    assert out["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    ndcg_q2 = (1 / math.log2(3) + 2 / math.log2(5)) / (2 + 1 / math.log2(3))
    assert out["ndcg@10"] == pytest.approx((1 + ndcg_q2) / 2)
    assert all(0.0 <= v <= 1.0 for k, v in out.items() if k != "queries")
    # a judged query without a ranking scores 0
    assert ev.score_rankings({}, {"q1": {"a": 1}})["recall@100"] == 0.0
    with pytest.raises(ConfigError, match="ks"):
        ev.score_rankings(rankings, qrels, ks=(0, 5))


# ---------------------------------------------------------------------------- golden set files
def test_load_golden_keeps_only_scored_queries(tmp_path):
    golden = ev.load_golden(write_beir(tmp_path / "set"))
    assert golden.name == "set" and golden.kind == "beir" and golden.path == tmp_path / "set"
    assert sorted(golden.queries) == [f"q{i}" for i in range(1, SCORED + 1)]  # q7 (grade 0 only), q8 unjudged
    assert golden.qrels["q2"] == {"Ünï code": 2, ".hidden": 0}
    assert golden.qrels["q4"] == {"42": 2}  # a numeric _id is read as a string
    assert len(golden) == SCORED


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda r: (r / "queries.jsonl").unlink(), r"file is missing: .*queries\.jsonl"),
        (lambda r: (r / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n{not json\n'), r"queries\.jsonl line 2: not valid JSON"),
        (lambda r: (r / "queries.jsonl").write_text('{"_id": "q1"}\n'), r"queries\.jsonl line 1: field 'text'"),
        (lambda r: (r / "queries.jsonl").write_text('["q1", "x"]\n'), r"queries\.jsonl line 1: expected a JSON object"),
        (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tdoc/1\thigh\n"), r"test\.tsv line 2: score must be an integer, got 'high'"),
        (lambda r: (r / "qrels" / "test.tsv").write_text("q1\tdoc/1\n"), r"test\.tsv line 1: expected 3 tab-separated fields"),
        (lambda r: (r / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tdoc/1\t0\n"), r"test\.tsv: no query has a relevant document"),
        (lambda r: (r / "qrels" / "test.tsv").write_text("q99\tdoc/1\t1\n"), r"judges 1 query id\(s\) that queries\.jsonl does not hold, e\.g\. \['q99'\]"),
        (lambda r: (r / "qrels" / "test.tsv").rename(r / "qrels" / "dev.tsv"), r"no qrels file qrels/test\.tsv \(splits found: \['dev'\]\)"),
    ],
)
def test_load_golden_names_the_file_and_the_problem(tmp_path, breakage, message):
    root = write_beir(tmp_path / "set")
    breakage(root)
    with pytest.raises(ConfigError, match=message):
        ev.load_golden(root)


def test_load_golden_other_split_and_missing_folder(tmp_path):
    root = write_beir(tmp_path / "set")
    (root / "qrels" / "dev.tsv").write_text("q3\t.hidden\t1\n")  # no header line is fine too
    assert list(ev.load_golden(root, split="dev").queries) == ["q3"]
    with pytest.raises(ConfigError, match="does not exist"):
        ev.load_golden(tmp_path / "nope")


def test_corpus_validation(tmp_path):
    root = write_beir(tmp_path / "set", corpus=[{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}])
    with pytest.raises(ConfigError, match=r"corpus\.jsonl line 2: _id 'a' appears twice"):
        list(ev.iter_corpus(root / "corpus.jsonl"))
    root = write_beir(tmp_path / "set2", corpus=[{"_id": "", "text": "x"}])
    with pytest.raises(ConfigError, match=r"line 1: field '_id' must be a non-empty string"):
        list(ev.iter_corpus(root / "corpus.jsonl"))


def test_escaped_ids_are_safe_file_names_and_reverse():
    ids = ["doc/1", "Ünï code", ".hidden", "..", "a b%c", "42", "x.y-z_1", "~$tmp", "tab\there", "emoji😀", "%41"]
    stems = [ev.escape_id(i) for i in ids]
    assert len(set(stems)) == len(ids)
    for original, stem in zip(ids, stems):
        assert re.fullmatch(r"[A-Za-z0-9._%-]+", stem), stem
        assert not stem.startswith(".")
        assert ev.unescape_id(stem) == original
        hit = Hit("c", 1.0, "", "d", f"/data/golden/set/corpus/{stem}.txt", 0, None, None)
        assert ev.beir_key(hit) == original
    assert ev.escape_id("x.y-z_1") == "x.y-z_1"  # safe ids stay readable
    with pytest.raises(ConfigError, match="too long"):
        ev.escape_id("é" * 100)
    with pytest.raises(ConfigError, match="empty _id"):
        ev.escape_id("")


# ---------------------------------------------------------------------------- chunks -> documents
def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


class CountingStore:
    """A real store, recording the sizes of the queries sent to it."""

    def __init__(self, store):
        self.store, self.asked = store, []

    def query(self, vector, k=5):
        self.asked.append(k)
        return self.store.query(vector, k=k)


@pytest.mark.parametrize("name", STORES)
def test_documents_ranked_by_best_chunk_fetching_enough_chunks(name, tmp_path):
    rng = np.random.default_rng(1)
    query = _unit([1, 0, 0, 0, 0, 0, 0, 0])
    chunks, vectors = [], []

    def add(doc, n, closeness):
        for i in range(n):
            noise = rng.normal(size=8)
            noise[0] = 0.0  # orthogonal to the query: the cosine is set by ``closeness`` alone
            v = closeness * query + (1 - closeness) * _unit(noise)
            chunks.append(StoredChunk(f"{doc}-{i}", f"{doc} {i}", doc, f"file:///{doc}.txt", i))
            vectors.append(_unit(v))

    add("A", 12, 0.95)  # 12 chunks, all closer than any other document's
    add("B", 2, 0.6)
    add("C", 1, 0.4)
    add("D", 1, 0.0)
    with open_store(name, Settings(data_dir=tmp_path / "data")) as store:
        store.upsert(chunks, np.stack(vectors))
        counting = CountingStore(store)
        assert ev.rank_documents(counting, query, 3) == ["A", "B", "C"]  # A's chunks count once
        assert counting.asked == [9, 18]  # 9 chunks held only A and B: doubled until 3 documents
        counting.asked.clear()
        # more documents asked than exist: stops once the collection is exhausted
        assert ev.rank_documents(counting, query, 10, limit=store.count()) == ["A", "B", "C", "D"]
        assert counting.asked == [16]
        counting.asked.clear()
        assert ev.rank_documents(counting, query, 10) == ["A", "B", "C", "D"]
        assert counting.asked == [30]  # fewer hits than asked: exhausted after one query
        assert ev.rank_documents(store, query, 1, key=lambda h: h.source_uri) == ["file:///A.txt"]
        assert ev.rank_documents(store, query, 0) == []


# ---------------------------------------------------------------------------- BEIR ingest + scoring
def test_ingest_beir_writes_one_file_per_document(beir):
    base, beir_dir, target, report = beir
    assert target.collection == "beir_tiny_beir"
    corpus_dir = base.data_dir / "golden" / SET_NAME / "corpus"
    assert Path(target.source) == corpus_dir
    names = sorted(p.name for p in corpus_dir.iterdir())
    assert names == sorted(ev.escape_id(str(d["_id"])) + ".txt" for d in CORPUS)
    assert (corpus_dir / "doc%2F1.txt").read_text(encoding="utf-8") == (
        "Swapping the R7 robot battery\n\n" + CORPUS[0]["text"]
    )
    assert (corpus_dir / "chess.txt").read_text(encoding="utf-8") == CORPUS[6]["text"]  # empty title: text alone
    assert report["new"] == len(CORPUS) and report["failed"] == 0
    assert report["golden"]["files_written"] == len(CORPUS)
    # the set has its own catalog: the main one does not list its documents
    main = Catalog(base.catalog_db_url)
    main.migrate()
    assert main.counts()["documents"] == 0
    main.close()
    for name in base.stores:
        with open_store(name, target) as store:
            assert store.count() == report["chunks"] >= len(CORPUS)


def test_ingest_beir_again_is_incremental(beir):
    base, beir_dir, target, _ = beir
    corpus_dir = Path(target.source)
    before = {p.name: p.stat().st_mtime_ns for p in corpus_dir.iterdir()}
    again, report = ev.ingest_beir(base, beir_dir)
    assert again == target
    assert report["golden"]["files_written"] == 0 and report["golden"]["files_unchanged"] == len(CORPUS)
    assert {p.name: p.stat().st_mtime_ns for p in corpus_dir.iterdir()} == before  # not rewritten
    assert report["unchanged"] == len(CORPUS) and report["new"] == 0 and report["encoded"] == 0


@pytest.mark.parametrize("name", STORES)
def test_evaluate_store_on_the_tiny_set(beir, name):
    base, beir_dir, target, _ = beir
    golden = ev.load_golden(beir_dir)
    res = ev.evaluate_store(target, name, golden)
    assert res["store"] == name and res["golden_set"] == SET_NAME
    assert res["collection"] == "beir_tiny_beir" and res["model_id"] == base.model_id
    assert res["queries"] == SCORED
    # each query clearly matches one document: found first, in both stores
    for metric in ("recall@1", "recall@5", "recall@100", "hit@1", "hit@5", "mrr@10", "ndcg@10"):
        assert res[metric] == pytest.approx(1.0), (metric, res)


def test_evaluate_store_refuses_an_empty_collection(beir):
    base, beir_dir, _, _ = beir
    golden = ev.load_golden(beir_dir)
    with pytest.raises(RagopsError, match=r"collection 'beir_nothing_here' in the chroma store is missing or empty"):
        ev.evaluate_store(base.replace(collection="beir_nothing_here"), "chroma", golden)


def test_score_stores_records_and_the_gate_catches_a_degraded_collection(beir):
    base, beir_dir, target, _ = beir
    golden = ev.load_golden(beir_dir)
    for n in range(3):  # three good nights
        good = ev.score_stores(base, golden, target=target, run_id=f"night{n}")
    catalog = Catalog(base.catalog_db_url)
    history = {name: catalog.recall_history(name, SET_NAME, collection=target.collection) for name in STORES}
    assert [h["run_id"] for h in history["milvus"]] == ["night0", "night1", "night2"]
    assert history["chroma"][-1]["metrics"]["recall@100"] == pytest.approx(1.0)
    assert history["chroma"][-1]["metrics"]["queries"] == SCORED
    assert ev.check_regression(good["chroma"], history["chroma"]) == []  # same run: ignored; others equal

    # the same corpus in a second collection (vectors from the cache), then the documents relevant
    # to q1 and q3 deleted from it
    degraded, report = ev.ingest_beir(base, beir_dir, collection="beir_degraded")
    assert report["encoded"] == 0 and report["cache_hits"] == report["chunks"]
    gone = [doc_id_for(str(Path(degraded.source) / f"{ev.escape_id(i)}.txt")) for i in ("doc/1", ".hidden")]
    for name in STORES:
        with open_store(name, degraded) as store:
            assert store.delete_docs(gone) >= 2
    bad = ev.score_stores(base, golden, target=degraded, run_id="night3")
    for name in STORES:
        res = bad[name]
        assert res["collection"] == "beir_degraded"
        assert res["recall@100"] == pytest.approx(4 / 6)
        assert res["hit@1"] == pytest.approx(4 / 6)
        failures = ev.check_regression(res, history[name])
        assert len(failures) == 2
        assert failures[0].startswith("ndcg@10 = 0.6667 on golden set 'tiny_beir'")
        assert "below its baseline 1.0000 (median of the last 3 run(s)); tolerance 0.0200" in failures[0]
        assert failures[1].startswith("recall@100 = 0.6667")
        with pytest.raises(RecallRegression) as info:
            ev.enforce_regression(res, history[name], floor={"recall@5": 0.9})
        assert info.value.retryable is False
        assert len(info.value.failures) == 3 and "recall@5 = 0.6667" in info.value.failures[2]
        assert "below its floor 0.9000" in str(info.value)
    # the degraded run is recorded under its own collection, not in the good series
    assert [h["run_id"] for h in catalog.recall_history("chroma", SET_NAME, collection=target.collection)][-1] == "night2"
    assert catalog.recall_history("chroma", SET_NAME, collection="beir_degraded")[0]["metrics"]["recall@100"] == pytest.approx(4 / 6)
    # the next ingest notices the lost chunks and restores them from the cache
    _, report = ev.ingest_beir(base, beir_dir, collection="beir_degraded")
    assert report["encoded"] == 0
    restored = ev.score_stores(base, golden, target=degraded, record=False)
    assert all(r["recall@100"] == pytest.approx(1.0) for r in restored.values())
    rows = catalog.recall_rows(golden_set=SET_NAME)
    png = ev.plot_trend(rows, base.data_dir / "plots" / "trend.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    catalog.close()


def test_check_regression_rules():
    current = {"ndcg@10": 0.70, "recall@100": 0.90, "golden_set": "scifact", "store": "milvus", "collection": "c"}
    history = [{"run_id": f"r{i}", "metrics": {"ndcg@10": v, "recall@100": 0.9}} for i, v in
               enumerate([0.10, 0.10, 0.75, 0.73, 0.74, 0.71, 0.76, 0.72])]
    # window 7 drops the oldest run: median of [0.10, 0.75, 0.73, 0.74, 0.71, 0.76, 0.72] = 0.73
    failures = ev.check_regression(current, history)
    assert failures == [
        "ndcg@10 = 0.7000 on golden set 'scifact' (milvus, collection 'c') is 0.0300 below its baseline 0.7300 "
        "(median of the last 7 run(s)); tolerance 0.0200"
    ]
    assert ev.check_regression(current, history, tolerance=0.05) == []
    # window 3: median of [0.71, 0.76, 0.72] = 0.72
    assert "median of the last 3 run(s)" in ev.check_regression(current, history, window=3, tolerance=0.01)[0]
    assert ev.check_regression(current, history, window=3, tolerance=0.021) == []
    # flat history entries work too; no history: only floors apply
    assert ev.check_regression(current, [{"ndcg@10": 0.8, "recall@100": 0.9}]) != []
    assert ev.check_regression(current, []) == []
    assert ev.check_regression(current, [], floor={"recall@100": 0.95}) == [
        "recall@100 = 0.9000 on golden set 'scifact' (milvus, collection 'c') is below its floor 0.9500"
    ]
    with pytest.raises(ConfigError, match="metric 'mrr@10' is not in the result"):
        ev.check_regression(current, history, metrics=("mrr@10",))
    with pytest.raises(ConfigError, match="window"):
        ev.check_regression(current, history, window=0)
    ev.enforce_regression(current, history, tolerance=0.05)  # passes: returns quietly


def test_plot_trend_from_history_entries_and_empty(tmp_path):
    rows = [
        {"store": s, "golden_set": "g", "created_at": f"2025-01-0{d}T00:00:00+00:00",
         "metrics": {"ndcg@10": 0.5 + d / 20, "recall@100": 0.9}}
        for s in STORES for d in range(1, 5)
    ]
    assert ev.plot_trend(rows, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert ev.plot_trend([], tmp_path / "empty.png").is_file()


# ---------------------------------------------------------------------------- synthetic set
@pytest.fixture(scope="module")
def main_collection(beir):
    """The tiny corpus ingested as ordinary documents into the main collection (cache hits only)."""
    from rag_ops.pipeline import ingest

    base, _, target, _ = beir
    settings = base.replace(source=target.source)
    report = ingest(settings)
    assert report["encoded"] == 0 and report["new"] == len(CORPUS)
    return settings


def test_query_from_chunk():
    rng = random.Random(1)
    text = "Volcanic eruptions\nMagma rises through the crust and erupts as lava. Ash follows it. " \
           "The crater glows at night for many weeks after a big eruption here."
    q = ev.query_from_chunk(text, rng)
    assert q in ("Magma rises through the crust and erupts as lava.",
                 "The crater glows at night for many weeks after a big eruption here.")
    one = "Hotel nights are reimbursed up to 180 euros per night in Europe."
    assert ev.query_from_chunk(one, rng) == "Hotel nights are reimbursed up to 180 euros"  # never the whole chunk
    assert ev.query_from_chunk("Title\nToo short here.", rng) is None
    long = " ".join(f"w{i}" for i in range(80)) + "."
    assert len(ev.query_from_chunk(long, rng).split()) == 30


def test_synthetic_set_is_deterministic_and_reused(main_collection):
    settings = main_collection
    root = ev.synthetic_dir(settings)
    first = ev.make_synthetic_golden(settings, n_queries=5, seed=13)
    assert first.kind == "synthetic" and first.name == "synthetic@v1" and first.path == root
    assert len(first) == 5
    meta = json.loads((root / "golden.json").read_text())
    assert (meta["seed"], meta["n_queries"], meta["version"], meta["collection"]) == (13, 5, 1, "ragops")
    assert meta["created_at"] and meta["candidates"] >= len(CORPUS)
    assert (root / "corpus.jsonl").is_file() and (root / "qrels" / "test.tsv").is_file()
    live = Catalog(settings.catalog_db_url)
    docs = live.live_documents()
    chunks = live.chunks_of(sorted(docs))
    live.close()
    chunk_doc = {c.chunk_id: d for d, rows in chunks.items() for c in rows}
    with open_store("chroma", settings) as store:
        texts = store.get_texts(list(first.queries))
    for qid, query in first.queries.items():
        assert first.qrels[qid] == {chunk_doc[qid]: 1}  # the query's chunk's document is relevant
        chunk_text = texts[qid][0]
        assert query != " ".join(chunk_text.split()) and 5 <= len(query.split()) <= 30
        assert query.split()[0] in chunk_text

    # re-used as stored: same files, even when asked with other arguments
    mtime = (root / "queries.jsonl").stat().st_mtime_ns
    again = ev.make_synthetic_golden(settings, n_queries=7, seed=99)
    assert (again.name, again.queries, again.qrels) == (first.name, first.queries, first.qrels)
    assert (root / "queries.jsonl").stat().st_mtime_ns == mtime
    # regenerated with the same seed on the same catalog: the same queries, a new version
    regen = ev.make_synthetic_golden(settings, n_queries=5, seed=13, regenerate=True)
    assert regen.name == "synthetic@v2" and regen.meta["version"] == 2
    assert (regen.queries, regen.qrels) == (first.queries, first.qrels)
    other = ev.make_synthetic_golden(settings, n_queries=5, seed=14, regenerate=True)
    assert other.name == "synthetic@v3" and other.queries != first.queries
    assert not (root.parent / "synthetic.tmp").exists() and not (root.parent / "synthetic.old").exists()
    # scored on both stores: the sentence finds its own document
    results = ev.score_stores(settings, other, run_id="synthetic_night")
    for name, res in results.items():
        assert res["golden_set"] == "synthetic@v3" and res["collection"] == "ragops" and res["queries"] == 5
        assert res["hit@5"] == pytest.approx(1.0), res
    with pytest.raises(ConfigError, match="is a synthetic golden set"):
        ev.ingest_beir(settings, root)


def test_golden_sets_are_shared_by_hosts_of_a_server_catalog(tmp_path, corpus, pg_url):
    """Two hosts (own data dirs) with one PostgreSQL catalog: the synthetic set made on one is
    scored on the other as the same set; a BEIR set's own catalog is a schema both reach."""
    from rag_ops.pipeline import ingest

    host_a = Settings(data_dir=tmp_path / "a", source=str(corpus), catalog_url=pg_url, stores=("milvus",))
    ingest(host_a)
    made = ev.make_synthetic_golden(host_a, n_queries=3, seed=5)
    host_b = host_a.replace(data_dir=tmp_path / "b", milvus_uri=str(tmp_path / "a" / "milvus.db"))
    seen = ev.make_synthetic_golden(host_b, n_queries=3, seed=99)  # another host: loaded, not built
    assert (seen.name, seen.queries, seen.qrels) == (made.name, made.queries, made.qrels)
    assert seen.path == ev.synthetic_dir(host_b) and seen.path.is_dir()
    regen = ev.make_synthetic_golden(host_b, n_queries=3, seed=5, regenerate=True)
    assert regen.name == "synthetic@v2"
    assert ev.make_synthetic_golden(host_a, n_queries=3).name == "synthetic@v2"  # host a follows
    from rag_ops.versions import drop_state, schema_ref

    target = ev.beir_settings(host_a, "scifact")
    try:
        assert target.catalog_is_server and "search_path" in target.catalog_db_url
        assert ev.beir_settings(host_b, "scifact").catalog_db_url == target.catalog_db_url
        assert target.cache_backend == "catalog" and target.cache_db_url == host_a.catalog_db_url
    finally:
        drop_state(host_a, schema_ref(host_a, "golden", target.collection))  # a schema of the shared test database


def test_synthetic_set_needs_an_indexed_catalog(tmp_path):
    with pytest.raises(RagopsError, match="the catalog holds no indexed chunk"):
        ev.make_synthetic_golden(Settings(data_dir=tmp_path / "data"), n_queries=3)


# ---------------------------------------------------------------------------- recall_scores table
def _exercise_recall_table(catalog: Catalog) -> None:
    assert "003_recall" in catalog.migrate()
    assert catalog.migrate() == []  # applied once
    indexes = {ix["name"]: ix["column_names"] for ix in sa.inspect(catalog.engine).get_indexes("recall_scores")}
    assert indexes["recall_scores_series"] == ["store", "golden_set", "metric", "created_at"]
    assert indexes["recall_scores_collection"] == ["collection"]
    metrics = {"recall@10": 0.5, "ndcg@10": 0.25, "queries": 4, "store": "chroma", "golden_set": "g", "flag": True}
    for n in range(4):
        written = catalog.write_recall_scores(f"run{n}", "ragops", "chroma", "g", "m", {**metrics, "recall@10": n / 10})
        assert written == 3  # numbers only
    catalog.write_recall_scores("run_other", "other", "chroma", "g", "m", metrics)
    catalog.write_recall_scores("run_milvus", "ragops", "milvus", "g", "m", metrics)
    catalog.write_recall_scores("run3", "ragops", "chroma", "g", "m", {**metrics, "recall@10": 0.3})  # rewrite: no new rows
    hist = catalog.recall_history("chroma", "g", collection="ragops", limit=2)
    assert [h["run_id"] for h in hist] == ["run2", "run3"]  # the newest last
    assert hist[-1]["metrics"] == {"recall@10": pytest.approx(0.3), "ndcg@10": pytest.approx(0.25), "queries": 4.0}
    assert hist[-1]["collection"] == "ragops" and hist[-1]["model_id"] == "m" and hist[-1]["created_at"]
    assert [h["run_id"] for h in catalog.recall_history("chroma", "g")] == ["run0", "run1", "run2", "run_other", "run3"]
    assert catalog.recall_history("chroma", "nope") == []
    rows = catalog.recall_rows(golden_set="g", collection="ragops")
    assert len(rows) == 5 * 3 and {r["store"] for r in rows} == {"chroma", "milvus"}
    with catalog.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM recall_scores")).scalar_one() == 6 * 3


def test_recall_scores_table_sqlite(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        _exercise_recall_table(catalog)
    finally:
        catalog.close()


def test_recall_scores_table_postgres(pg_url):
    catalog = Catalog(pg_url)
    try:
        assert catalog.dialect == "postgresql"
        _exercise_recall_table(catalog)
    finally:
        catalog.close()


# ---------------------------------------------------------------------------- CLI
@pytest.fixture
def cli_env(beir, monkeypatch):
    import os

    base, beir_dir, target, _ = beir
    for key in list(os.environ):
        if key.startswith("RAGOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RAGOPS_DATA_DIR", str(base.data_dir))
    return base, beir_dir


def _last_json(out: str):
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return json.loads(lines[-1])


def test_cli_eval_json(cli_env, capsys):
    from rag_ops.cli import main

    base, beir_dir = cli_env
    assert main(["eval", "--golden", str(beir_dir), "--store", "milvus", "--json"]) == 0
    one = _last_json(capsys.readouterr().out)
    assert one["store"] == "milvus" and one["golden_set"] == SET_NAME and one["collection"] == "beir_tiny_beir"
    assert one["queries"] == SCORED and one["ndcg@10"] == pytest.approx(1.0) and one["recall@100"] == pytest.approx(1.0)
    assert {"mrr@10", "hit@1", "recall@5"} <= set(one) and one["run_id"].startswith("cli__")

    assert main(["eval", "--ingest", str(beir_dir), "--json"]) == 0
    both = _last_json(capsys.readouterr().out)
    assert set(both["stores"]) == set(STORES)
    first = both["stores"][both["store"]]  # the first store's metrics also at the top level
    assert {k: both[k] for k in first} == first and both["store"] == STORES[0]
    assert all(r["recall@5"] == pytest.approx(1.0) for r in both["stores"].values())

    assert main(["eval", "--golden", str(beir_dir)]) == 0  # readable table
    table = capsys.readouterr().out
    assert "golden set 'tiny_beir'" in table and re.search(r"ndcg@10\s+1\.0000\s+1\.0000", table)

    catalog = Catalog(base.catalog_db_url)
    runs = {h["run_id"] for h in catalog.recall_history("milvus", SET_NAME)}
    catalog.close()
    assert one["run_id"] in runs and both["stores"]["milvus"]["run_id"] in runs


def test_cli_eval_synthetic_and_errors(cli_env, main_collection, capsys):
    from rag_ops.cli import main

    base, beir_dir = cli_env
    assert main(["eval", "--synthetic", "-n", "4", "--store", "chroma", "--json"]) == 0
    res = _last_json(capsys.readouterr().out)
    assert res["golden_set"].startswith("synthetic@v") and res["collection"] == "ragops" and res["store"] == "chroma"
    assert 1 <= res["queries"] <= 5
    for argv in (["eval"], ["eval", "--synthetic", "--golden", str(beir_dir)], ["eval", "--golden", str(beir_dir), "--seed", "3"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    capsys.readouterr()
    assert main(["eval", "--golden", str(base.data_dir / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
