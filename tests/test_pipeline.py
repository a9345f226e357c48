"""The ingest pipeline end to end on real stores, the real model and real files."""

from __future__ import annotations

import os
import time


from rag_ops.catalog import Catalog
from rag_ops.identity import doc_id_for
from rag_ops.pipeline import ingest
from rag_ops.stores import open_store


def store_ids(settings, name):
    with open_store(name, settings) as store:
        return store.all_ids()


def catalog_ids(settings):
    cat = Catalog(settings.catalog_db_url)
    try:
        return cat.all_chunk_ids()
    finally:
        cat.close()


def test_first_run_indexes_everything_in_both_stores(settings):
    report = ingest(settings)
    assert report["seen"] == 3 and report["new"] == 3 and report["failed"] == 0
    assert report["chunks"] >= 3 and report["encoded"] == report["chunks"]
    ids = catalog_ids(settings)
    assert len(ids) == report["chunks"]
    assert store_ids(settings, "chroma") == ids
    assert store_ids(settings, "milvus") == ids
    assert report["upserted"] == {"chroma": len(ids), "milvus": len(ids)}


def test_rerun_does_no_work(settings):
    first = ingest(settings)
    cat = Catalog(settings.catalog_db_url)
    try:  # tokens encoded = the model tokens of every distinct chunk text encoded
        assert first["tokens_encoded"] == sum(c.tokens for cs in cat.chunks_of(list(cat.documents_by_id())).values() for c in cs)
    finally:
        cat.close()
    assert first["tokens_encoded"] > first["chunks"] and first["encode_seconds"] > 0
    before = {s: store_ids(settings, s) for s in ("chroma", "milvus")}
    report = ingest(settings)
    assert report["unchanged"] == 3
    assert report["tokens_encoded"] == 0 and report["encode_seconds"] == 0
    assert report["encoded"] == 0 and report["chunks"] == 0
    assert report["upserted"] == {"chroma": 0, "milvus": 0}
    assert {s: store_ids(settings, s) for s in ("chroma", "milvus")} == before


def test_touched_file_is_not_reparsed_or_reencoded(settings, corpus):
    ingest(settings)
    path = corpus / "robots/battery.txt"
    later = time.time() + 100
    os.utime(path, (later, later))
    report = ingest(settings)
    assert report["unchanged"] == 3 and report["encoded"] == 0 and report["changed"] == 0
    assert report["seconds"].get("parse", 0) == 0
    # the new mtime is recorded, so the next run skips it without reading
    again = ingest(settings)
    assert again["seconds"].get("read", 0) == 0 and again["unchanged"] == 3


def test_edit_replaces_exactly_that_documents_chunks(settings, corpus):
    ingest(settings)
    old = catalog_ids(settings)
    path = corpus / "policies/travel.md"
    path.write_text(path.read_text().replace("180 EUR", "195 EUR"))
    report = ingest(settings)
    assert report["changed"] == 1 and report["unchanged"] == 2
    assert 1 <= report["encoded"] <= report["chunks"]
    new = catalog_ids(settings)
    gone, added = old - new, new - old
    assert gone and added
    doc = doc_id_for(str(path))
    cat = Catalog(settings.catalog_db_url)
    doc_chunks = {c.chunk_id for c in cat.chunks_of([doc])[doc]}
    cat.close()
    assert added <= doc_chunks and not (gone & doc_chunks)  # only the edited document changed
    with open_store("milvus", settings) as milvus:
        assert milvus.list_doc_ids(doc) == doc_chunks
    for name in ("chroma", "milvus"):
        assert store_ids(settings, name) == new
        assert report["removed"][name] == len(gone)
        assert report["upserted"][name] == len(added)


def test_full_sync_propagates_deletions(settings, corpus):
    ingest(settings)
    (corpus / "support/api.html").unlink()
    incremental = ingest(settings)
    assert incremental["deleted"] == 0  # without a full listing nothing is deleted
    report = ingest(settings, full_sync=True)
    assert report["deleted"] == 1
    ids = catalog_ids(settings)
    for name in ("chroma", "milvus"):
        assert store_ids(settings, name) == ids
    doc = doc_id_for(str(corpus / "support/api.html"))
    with open_store("chroma", settings) as chroma:
        assert chroma.list_doc_ids(doc) == set()


def test_data_interval_selects_documents_by_modified_time(settings, corpus):
    old_t, new_t = 1_700_000_000, 1_700_090_000
    for rel in ("robots/battery.txt", "policies/travel.md"):
        os.utime(corpus / rel, (old_t, old_t))
    os.utime(corpus / "support/api.html", (new_t, new_t))
    r1 = ingest(settings, since=old_t - 10, until=old_t + 10)
    assert r1["seen"] == 2 and r1["new"] == 2
    r2 = ingest(settings, since=new_t - 10, until=new_t + 10)
    assert r2["seen"] == 1 and r2["new"] == 1
    assert ingest(settings, since=0, until=1)["seen"] == 0


def test_store_added_later_is_filled_from_the_cache(settings):
    first = ingest(settings, stores=["chroma"])
    assert set(first["upserted"]) == {"chroma"}
    assert store_ids(settings, "milvus") == set()
    second = ingest(settings)
    assert second["restored"] == 3 and second["encoded"] == 0
    assert second["upserted"]["milvus"] == first["chunks"] and second["upserted"]["chroma"] == 0
    assert store_ids(settings, "milvus") == store_ids(settings, "chroma") == catalog_ids(settings)


def test_bad_document_is_recorded_and_batch_goes_on(settings, corpus):
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "notes.xyz").write_text("some text")
    report = ingest(settings)
    assert report["new"] == 3 and report["failed"] == 2
    assert "empty" in report["failures"][str(corpus / "empty.txt")]
    assert "no parser for extension '.xyz'" in report["failures"][str(corpus / "notes.xyz")]
    again = ingest(settings)
    assert again["failed"] == 0 and again["encoded"] == 0 and again["unchanged"] == 5


def test_prepare_ahead_in_a_helper_process_gives_the_same_index(tmp_path, corpus):
    """The CLI's helper process prepares slices of batches (here 1-document batches, so the
    helper and this process share the work): same chunks, same ids, same reports' counts."""
    from rag_ops import pipeline
    from rag_ops.config import Settings

    (corpus / "more").mkdir()
    for i in range(40):  # more than two slices of PREPARE_SLICE documents in one batch
        (corpus / "more" / f"note{i:02d}.txt").write_text(f"Note {i}\n\nMaintenance note number {i} for dock {i % 7}.\n")
    seq = Settings(data_dir=tmp_path / "seq", source=str(corpus), batch_size=20)
    ahead = seq.replace(data_dir=tmp_path / "ahead", prepare_workers=1)
    a = ingest(seq)
    b = ingest(ahead, helper_processes=True)
    assert a["new"] == b["new"] == 43 and a["chunks"] == b["chunks"] and b["failed"] == 0
    assert catalog_ids(seq) == catalog_ids(ahead) == store_ids(ahead, "chroma") == store_ids(ahead, "milvus")
    assert pipeline.PREPARE_SLICE < 20 < 43
    again = ingest(ahead, helper_processes=True)
    assert again["unchanged"] == 43 and again["encoded"] == 0


def test_merge_prepared_keeps_each_documents_chunk_rows():
    from collections import Counter

    from rag_ops.pipeline import PreparedBatch, merge_prepared

    one = PreparedBatch("b", 2, [{"doc_id": "a", "chunk_rows": [0, 2]}, {"doc_id": "x"}],
                        [{"chunk_id": "a0"}, {"chunk_id": "a1"}], Counter(new=1, failed=1), Counter(parse=1.0))
    two = PreparedBatch("b", 1, [{"doc_id": "c", "chunk_rows": [0, 1]}], [{"chunk_id": "c0"}], Counter(new=1),
                        Counter(parse=0.5))
    merged = merge_prepared([one, two])
    assert merged.n_docs == 3 and merged.counts == Counter(new=2, failed=1) and merged.seconds["parse"] == 1.5
    rows = {o["doc_id"]: o.get("chunk_rows") for o in merged.outcomes}
    assert rows == {"a": [0, 2], "x": None, "c": [2, 3]}
    assert [merged.chunk_rows[i]["chunk_id"] for i in range(*rows["c"])] == ["c0"]
