"""The VectorStore contract, run against every backend.

Real Chroma (PersistentClient) and real Milvus Lite on tmp_path, and the same cases against a real
Chroma server (``chroma run``) and a real Milvus server (``milvus-lite server``, Milvus' gRPC
API) started on loopback for the session (tests/servers.py); the real packaged model for the
LangChain compatibility test. Small random dim-8 vectors keep the bulk tests fast.

On a shared server every test uses collections of its own (a unique index name, dropped
afterwards), so tests never see each other's data.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from rag_ops.config import Settings
from rag_ops.errors import StoreError
from rag_ops.stores import Hit, StoredChunk, open_store
from tests.servers import chroma_server, milvus_server
from tests.servers import (  # noqa: F401 - session fixtures: one server of each kind per session, started on first use
    chroma_server_info,
    chroma_server_url,
    milvus_server_info,
    milvus_server_uri,
)

STORES = ["chroma", "milvus"]  # the backends
# how a backend is reached: embedded (Chroma dir, Milvus Lite file) or through a server
KINDS = ["chroma", "milvus", "chroma-server", "milvus-server"]
SERVER_URL_FIXTURE = {"chroma": "chroma_server_url", "milvus": "milvus_server_uri"}
DIM = 8
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------- helpers
def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_chunks(n: int, *, docs: int | None = None, prefix: str = "c", text: str = "text") -> list[StoredChunk]:
    """n chunks; chunk i belongs to doc ``d{i % docs}`` (one doc per chunk when docs is None)."""
    docs = docs or n
    return [
        StoredChunk(
            id=f"{prefix}{i}",
            text=f"{text} {i}",
            doc_id=f"d{i % docs}",
            source_uri=f"file:///corpus/d{i % docs}.txt",
            seq=i // docs,
        )
        for i in range(n)
    ]


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def backend(kind: str) -> str:
    return kind.split("-")[0]


def server_settings(name: str, url: str, data_dir: Path, **kwargs) -> Settings:
    """Settings that point store ``name`` at the server at ``url`` (http://127.0.0.1:N)."""
    if name == "chroma":
        host, port = url.removeprefix("http://").rsplit(":", 1)
        return Settings(data_dir=data_dir, chroma_host=host, chroma_port=int(port), **kwargs)
    return Settings(data_dir=data_dir, milvus_uri=url, **kwargs)


def drop_server_collections(name: str, url: str, prefix: str) -> None:
    """Drop every collection whose name starts with ``prefix`` on the server (test cleanup)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    if name == "chroma":
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        client = chromadb.HttpClient(host=host, port=int(port), settings=ChromaSettings(anonymized_telemetry=False))
        for c in client.list_collections():
            cname = c if isinstance(c, str) else c.name
            if cname.startswith(prefix):
                client.delete_collection(cname)
    else:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=url, timeout=10)
        try:
            for cname in client.list_collections():
                if cname.startswith(prefix):
                    for alias in client.list_aliases(collection_name=cname).get("aliases", []):
                        client.drop_alias(alias)
                    client.drop_collection(cname)
        finally:
            client.close()


def settings_for(kind: str, request, data_dir: Path, collection: str = "ragops") -> Settings:
    """Settings for one test on store ``kind``. On a server the index gets a name unique to this
    test (``<collection>_<hex>``), whose collections are dropped when the test ends."""
    name = backend(kind)
    if not kind.endswith("-server"):
        return Settings(data_dir=data_dir, collection=collection)
    url = request.getfixturevalue(SERVER_URL_FIXTURE[name])  # started on first use only
    unique = f"{collection}_{uuid.uuid4().hex[:10]}"
    request.addfinalizer(lambda: drop_server_collections(name, url, unique))
    return server_settings(name, url, data_dir, collection=unique)


def settings_kwargs(settings: Settings) -> dict:
    """What another process needs to rebuild ``settings`` (store location and index name)."""
    return {
        "data_dir": str(settings.data_dir),
        "collection": settings.collection,
        "chroma_host": settings.chroma_host,
        "chroma_port": settings.chroma_port,
        "milvus_uri": settings.milvus_uri.reveal(),
    }


@pytest.fixture(params=KINDS)
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def store_name(store_kind) -> str:
    return backend(store_kind)


@pytest.fixture
def store_settings(store_kind, request, tmp_path) -> Settings:
    return settings_for(store_kind, request, tmp_path / "data")


@pytest.fixture
def store(store_name, store_settings):
    s = open_store(store_name, store_settings)
    yield s
    s.close()


# ---------------------------------------------------------------------------------- contract
def test_open_store_gives_the_named_backend(store, store_name, store_settings):
    assert store.name == store_name
    # no index version yet: readers and writers are pointed at version 1's physical collection
    assert store.collection == f"{store_settings.collection}__v1"


def test_missing_collection_counts_zero_and_queries_empty(store):
    assert store.exists() is False
    assert store.count() == 0
    assert store.query(unit_vectors(1)[0], k=3) == []
    assert store.all_ids() == set()
    assert store.ids_by_doc(["d0", "d1"]) == {}
    assert store.delete_ids(["c0"]) == 0
    assert store.delete_docs(["d0"]) == 0
    assert store.exists() is False  # reading did not create it


def test_ensure_collection_is_idempotent(store):
    store.ensure_collection(DIM)
    assert store.exists() is True
    store.ensure_collection(DIM)
    assert store.exists() is True
    assert store.count() == 0
    assert store.upsert(make_chunks(3), unit_vectors(3)) == 3
    store.ensure_collection(DIM)  # again, with data: must not reset it
    assert store.count() == 3


def test_upsert_returns_count_and_count_matches(store):
    assert store.upsert([], np.zeros((0, DIM), dtype=np.float32)) == 0
    chunks = make_chunks(25)
    assert store.upsert(chunks, unit_vectors(25)) == 25
    assert store.exists() is True  # upsert creates the collection when needed
    assert store.count() == 25
    assert store.all_ids() == {c.id for c in chunks}


def test_upsert_of_existing_ids_overwrites(store):
    chunks = make_chunks(10, text="old")
    vectors = unit_vectors(10, seed=1)
    store.upsert(chunks, vectors)
    # the same ids with new text and new vectors
    new_chunks = [StoredChunk(c.id, f"new {i}", c.doc_id, c.source_uri, c.seq, page=7, section="S") for i, c in enumerate(chunks[:4])]
    new_vectors = unit_vectors(4, seed=2)
    assert store.upsert(new_chunks, new_vectors) == 4
    assert store.count() == 10  # no second row per id (Milvus insert would add one)
    assert store.all_ids() == {c.id for c in chunks}
    for i in range(4):
        hits = store.query(new_vectors[i], k=10)
        top = hits[0]
        assert top.id == f"c{i}"
        assert top.text == f"new {i}"
        assert top.page == 7 and top.section == "S"
        assert top.score == pytest.approx(1.0, abs=1e-3)
        assert [h.id for h in hits].count(f"c{i}") == 1  # the old row is gone, not just shadowed
    # the untouched ones still hold their old text
    assert store.query(vectors[5], k=1)[0].text == "old 5"


def test_ids_by_doc_groups_ids_across_batches(store):
    n_docs = 450  # more than the 200 doc ids per internal lookup
    chunks = make_chunks(n_docs * 2, docs=n_docs)
    store.upsert(chunks, unit_vectors(len(chunks)))
    asked = [f"d{i}" for i in range(n_docs)] + ["d_unknown"]
    got = store.ids_by_doc(asked)
    assert set(got) == {f"d{i}" for i in range(n_docs)}  # unknown docs are absent, not empty
    for i in range(n_docs):
        assert got[f"d{i}"] == {f"c{i}", f"c{i + n_docs}"}
    assert store.list_doc_ids("d17") == {"c17", f"c{17 + n_docs}"}
    assert store.list_doc_ids("d_unknown") == set()


def test_delete_ids(store):
    chunks = make_chunks(20)
    store.upsert(chunks, unit_vectors(20))
    assert store.delete_ids(["c0", "c5", "c19"]) == 3
    assert store.count() == 17
    assert store.all_ids() == {f"c{i}" for i in range(20)} - {"c0", "c5", "c19"}
    assert store.delete_ids([]) == 0
    assert store.count() == 17


def test_delete_docs_removes_every_chunk_of_the_docs(store):
    chunks = make_chunks(30, docs=10)  # 3 chunks per doc
    store.upsert(chunks, unit_vectors(30))
    removed = store.delete_docs(["d1", "d4", "d_unknown"])
    assert removed == 6
    assert store.count() == 24
    assert store.ids_by_doc(["d1", "d4"]) == {}
    remaining = store.all_ids()
    assert not {c.id for c in chunks if c.doc_id in ("d1", "d4")} & remaining
    assert store.list_doc_ids("d2") == {"c2", "c12", "c22"}
    assert store.delete_docs([]) == 0


def test_all_ids_beyond_one_page(store):
    n = 5_500  # more than the 5,000 per page of Chroma's listing and Milvus' iterator batches
    chunks = make_chunks(n, docs=500)
    assert store.upsert(chunks, unit_vectors(n)) == n
    ids = store.all_ids()
    assert len(ids) == n
    assert ids == {c.id for c in chunks}
    assert store.count() == n


def test_query_closest_first_with_cosine_scores(store):
    n = 60
    vectors = unit_vectors(n, seed=3)
    chunks = make_chunks(n)
    store.upsert(chunks, vectors)
    q = vectors[11]
    k = 8
    hits = store.query(q, k=k)
    assert len(hits) == k
    assert all(isinstance(h, Hit) for h in hits)
    assert hits[0].id == "c11"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    exact = vectors @ q  # cosine similarity of unit vectors
    for h in hits:
        assert h.score == pytest.approx(float(exact[int(h.id[1:])]), abs=1e-3)
    assert [h.id for h in hits] == [f"c{i}" for i in np.argsort(-exact)[:k]]
    # a vector with no near twin: best score is the exact best cosine, which is < 1
    other = unit_vectors(1, seed=99)[0]
    best = store.query(other, k=1)[0]
    assert best.score == pytest.approx(float(np.max(vectors @ other)), abs=1e-3)
    assert best.score < 0.999


def test_query_metadata_round_trips(store):
    chunks = [
        StoredChunk("m0", "page and section", "docA", "s3://bucket/a b/ü.pdf", seq=0, page=3, section="Intro"),
        StoredChunk("m1", "neither page nor section", "docA", "s3://bucket/a b/ü.pdf", seq=1, page=None, section=None),
        StoredChunk("m2", "page zero, no section", "docB", "file:///x.pdf", seq=5, page=0, section=None),
        StoredChunk("m3", "section only", "docB", "file:///x.pdf", seq=6, page=None, section="Ünïcode § 2"),
    ]
    vectors = unit_vectors(4, seed=4)
    store.upsert(chunks, vectors)
    for chunk, v in zip(chunks, vectors):
        top = store.query(v, k=1)[0]
        assert top.id == chunk.id
        assert top.text == chunk.text
        assert top.doc_id == chunk.doc_id
        assert top.source_uri == chunk.source_uri
        assert top.seq == chunk.seq and isinstance(top.seq, int)
        assert top.page == chunk.page
        assert top.section == chunk.section
        d = top.as_dict()
        assert set(d) == {"id", "score", "text", "doc_id", "source_uri", "seq", "page", "section"}


def test_get_texts_by_id(store):
    assert store.get_texts(["c0"]) == {}  # no collection yet: nothing, and nothing created
    assert store.exists() is False
    chunks = make_chunks(1200, docs=300)  # more ids than one internal batch
    chunks[7] = StoredChunk("c7", "Ünïcode \"quoted\" text\nwith a newline", "dX", "file:///x.txt", 0)
    store.upsert(chunks, unit_vectors(len(chunks)))
    asked = [c.id for c in chunks] + ["nope", 'q"uote']
    got = store.get_texts(asked)
    assert set(got) == {c.id for c in chunks}  # unknown ids are absent, not errors
    for c in chunks:
        assert got[c.id] == (c.text, c.doc_id)
    assert store.get_texts([]) == {}
    store.delete_ids(["c1"])
    assert store.get_texts(["c1", "c2"]) == {"c2": ("text 2", "d2")}


def test_drop(store):
    store.upsert(make_chunks(5), unit_vectors(5))
    assert store.exists()
    store.drop()
    assert store.exists() is False
    assert store.count() == 0
    assert store.query(unit_vectors(1)[0]) == []
    assert store.all_ids() == set()
    store.drop()  # dropping a missing collection is a no-op
    # the same store object can create and fill it again
    store.upsert(make_chunks(2, prefix="z"), unit_vectors(2))
    assert store.count() == 2
    assert store.all_ids() == {"z0", "z1"}


def test_data_persists_across_close_and_reopen(store_name, store_settings):
    # embedded: the files keep the data; server: the server keeps it for a new connection
    chunks = make_chunks(40, docs=8)
    vectors = unit_vectors(40, seed=5)
    first = open_store(store_name, store_settings)
    first.upsert(chunks, vectors)
    first.close()
    with open_store(store_name, store_settings) as second:
        assert second.exists()
        assert second.count() == 40
        assert second.all_ids() == {c.id for c in chunks}
        assert second.ids_by_doc(["d3"]) == {"d3": {"c3", "c11", "c19", "c27", "c35"}}
        top = second.query(vectors[9], k=1)[0]
        assert (top.id, top.text, top.doc_id) == ("c9", "text 9", "d1")
        # writes after re-opening work too
        second.delete_docs(["d0"])
    with open_store(store_name, store_settings) as third:
        assert third.count() == 35


def test_collection_written_by_another_process_is_readable(store_name, store_settings):
    # Airflow runs each task in its own process: the writer is gone when the reader starts.
    # (Milvus opens an existing collection "released" in a new process; reads must still work.)
    code = textwrap.dedent(
        f"""
        import numpy as np
        from rag_ops.config import Settings
        from rag_ops.stores import StoredChunk, open_store
        rng = np.random.default_rng(6)
        v = rng.normal(size=(12, {DIM})).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        chunks = [StoredChunk(f"p{{i}}", f"text {{i}}", f"d{{i % 3}}", "file:///p.txt", i) for i in range(12)]
        with open_store({store_name!r}, Settings(**{settings_kwargs(store_settings)!r})) as s:
            assert s.upsert(chunks, v) == 12
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    vectors = unit_vectors(12, seed=6)
    with open_store(store_name, store_settings) as store:
        assert store.exists()
        assert store.count() == 12
        assert store.all_ids() == {f"p{i}" for i in range(12)}
        assert store.list_doc_ids("d1") == {"p1", "p4", "p7", "p10"}
        top = store.query(vectors[4], k=1)[0]
        assert (top.id, top.text) == ("p4", "text 4")
        assert top.score == pytest.approx(1.0, abs=1e-3)


def test_drop_through_another_store_object_is_seen(store_name, store_settings):
    # e.g. `ragops` dropping the collection while a long-lived Runtime still holds its store
    holder = open_store(store_name, store_settings)
    other = open_store(store_name, store_settings)
    try:
        holder.upsert(make_chunks(3), unit_vectors(3))
        assert holder.count() == 3 and other.count() == 3
        other.drop()
        assert holder.exists() is False
        assert holder.count() == 0
        assert holder.query(unit_vectors(1)[0]) == []
        assert holder.all_ids() == set()
    finally:
        holder.close()
        other.close()


def test_collections_are_separate(store_name, store_settings):
    alpha, beta = f"{store_settings.collection}_alpha", f"{store_settings.collection}_beta"
    with open_store(store_name, store_settings, collection=alpha) as a, open_store(
        store_name, store_settings, collection=beta
    ) as b:
        a.upsert(make_chunks(3, prefix="a"), unit_vectors(3))
        b.upsert(make_chunks(5, prefix="b"), unit_vectors(5))
        assert a.count() == 3 and b.count() == 5
        b.drop()
        assert a.count() == 3 and a.all_ids() == {"a0", "a1", "a2"}


# ---------------------------------------------------------------------------------- server restart
@pytest.mark.parametrize("name", STORES)
def test_server_keeps_data_across_a_restart(name, tmp_path):
    # The server counterpart of reopening embedded files: a server stopped and started again
    # over the same data dir (a redeploy: stopped gracefully) still serves what was written.
    # A private server, not the session's: stopping that one would break the other tests.
    start = {"chroma": chroma_server, "milvus": milvus_server}[name]
    chunks = make_chunks(40, docs=8)
    vectors = unit_vectors(40, seed=7)
    with start(tmp_path / "first") as srv:
        data_dir = srv.data_dir
        settings = server_settings(name, srv.url, tmp_path / "data")
        with open_store(name, settings) as store:
            assert store.upsert(chunks, vectors) == 40
    with start(tmp_path / "second", data_dir=data_dir) as srv:
        settings = server_settings(name, srv.url, tmp_path / "data")
        with open_store(name, settings) as store:
            assert store.exists()
            assert store.count() == 40
            assert store.all_ids() == {c.id for c in chunks}
            top = store.query(vectors[9], k=1)[0]
            assert (top.id, top.text, top.doc_id) == ("c9", "text 9", "d1")
            assert store.delete_docs(["d0"]) == 5
            assert store.count() == 35


# ---------------------------------------------------------------------------------- store down
@pytest.mark.parametrize("name", STORES)
def test_store_that_is_down_raises_retryable_store_error(name, tmp_path):
    port = closed_port()
    if name == "chroma":
        settings = Settings(data_dir=tmp_path, chroma_host="127.0.0.1", chroma_port=port)
    else:
        settings = Settings(data_dir=tmp_path, milvus_uri=f"http://127.0.0.1:{port}")
    store = open_store(name, settings)
    for operation in (lambda: store.count(), lambda: store.upsert(make_chunks(1), unit_vectors(1))):
        t0 = time.perf_counter()
        with pytest.raises(StoreError) as info:
            operation()
        elapsed = time.perf_counter() - t0
        err = info.value
        assert err.retryable is True
        message = str(err)
        assert name in message
        assert f"127.0.0.1:{port}" in message
        # a refused connection must be reported quickly (measured: ~1 s Chroma, ~0.5 s Milvus)
        assert elapsed < 15, f"{name} took {elapsed:.1f}s to give up"
    store.close()


def test_milvus_server_credentials_stay_out_of_errors(tmp_path):
    port = closed_port()
    settings = Settings(
        data_dir=tmp_path, milvus_uri=f"http://alice:pa55word@127.0.0.1:{port}", milvus_token="tok-s3cret"
    )
    store = open_store("milvus", settings)
    assert "pa55word" not in store.address and "alice" not in store.address
    with pytest.raises(StoreError) as info:
        store.count()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "pa55word" not in message and "tok-s3cret" not in message


# ---------------------------------------------------------------------------------- LangChain
CHUNK_TEXTS = [
    "To swap the R7 battery, press the red release latch and slide the pack out on its rails.",
    "Hotel nights are reimbursed up to 180 EUR per night in Europe.",
    "The fleet API accepts 600 requests per minute per token; bursts get HTTP 429.",
    "Meals are covered up to 60 EUR per day with itemised receipts.",
]
QUESTION = "How many API requests per minute are allowed?"
EXPECTED = 2


@pytest.fixture(scope="module")
def embedder():
    from rag_ops.embed import make_embedder

    return make_embedder(Settings())


@pytest.fixture(scope="module")
def lc_embeddings(embedder):
    from langchain_core.embeddings import Embeddings

    class RagopsEmbeddings(Embeddings):
        """LangChain's Embeddings interface over the same model ragops ingests with."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embedder.encode(list(texts)).tolist()

        def embed_query(self, text: str) -> list[float]:
            return embedder.encode([text])[0].tolist()

    return RagopsEmbeddings()


@pytest.mark.parametrize("kind", KINDS)
def test_langchain_reads_the_collection(kind, request, tmp_path, embedder, lc_embeddings):
    name = backend(kind)
    settings = settings_for(kind, request, tmp_path / "data", collection="lc_compat")
    chunks = [
        StoredChunk(
            id=f"chunk{i}",
            text=t,
            doc_id=f"doc{i}",
            source_uri=f"file:///corpus/doc{i}.txt",
            seq=i,
            page=None if i % 2 else i + 1,
            section=None if i % 2 else f"Section {i}",
        )
        for i, t in enumerate(CHUNK_TEXTS)
    ]
    with open_store(name, settings) as store:
        store.upsert(chunks, embedder.encode(CHUNK_TEXTS))
        ragops_top = store.query(embedder.encode([QUESTION])[0], k=1)[0]
        physical = store.collection  # the version's collection (lc_compat__v1)
    assert ragops_top.text == CHUNK_TEXTS[EXPECTED] and physical == f"{settings.collection}__v1"

    if name == "chroma":
        import chromadb
        from chromadb.config import Settings as ChromaSettings
        from langchain_chroma import Chroma

        if settings.chroma_host:
            client = chromadb.HttpClient(
                host=settings.chroma_host, port=settings.chroma_port, settings=ChromaSettings(anonymized_telemetry=False)
            )
            vs = Chroma(collection_name=physical, client=client, embedding_function=lc_embeddings)
        else:
            vs = Chroma(
                collection_name=physical,
                persist_directory=str(settings.chroma_path),
                embedding_function=lc_embeddings,
            )
    else:
        from langchain_milvus import Milvus

        vs = Milvus(
            embedding_function=lc_embeddings,
            collection_name=physical,
            connection_args={"uri": settings.milvus_target},
            primary_field="id",
            text_field="text",
            vector_field="vector",
        )
    results = vs.similarity_search_with_score(QUESTION, k=2)
    assert len(results) == 2
    doc, lc_score = results[0]
    assert doc.page_content == CHUNK_TEXTS[EXPECTED]
    assert doc.metadata["doc_id"] == f"doc{EXPECTED}"
    assert doc.metadata["source_uri"] == f"file:///corpus/doc{EXPECTED}.txt"
    assert doc.metadata["seq"] == EXPECTED
    if name == "chroma":
        assert doc.id == f"chunk{EXPECTED}"
        # LangChain's Chroma returns the raw cosine distance of the collection
        assert lc_score == pytest.approx(1.0 - ragops_top.score, abs=1e-3)
    else:
        assert doc.metadata["id"] == f"chunk{EXPECTED}"
        # LangChain's Milvus returns the COSINE metric, i.e. the similarity itself
        assert lc_score == pytest.approx(ragops_top.score, abs=1e-3)
    # plain similarity_search agrees
    assert vs.similarity_search(QUESTION, k=1)[0].page_content == CHUNK_TEXTS[EXPECTED]
