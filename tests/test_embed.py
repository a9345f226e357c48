"""The embedder with the real packaged MiniLM (offline) and the SQLite embedding cache."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import NO_NETWORK
from rag_ops.catalog import Catalog
from rag_ops.config import Settings
from rag_ops.cache import SqliteCache
from rag_ops.embed import Embedder
from rag_ops.encoders import BACKENDS
from rag_ops.errors import EmbeddingError
from rag_ops.identity import text_hash
from rag_ops.pipeline import ingest
from rag_ops.stores import open_store

TEXTS = [
    "To swap the R7 battery, park the robot at a charging bay and engage the parking brake.",
    "Hotel nights are reimbursed up to 180 EUR per night in Europe.",
    "The fleet API accepts 600 requests per minute per token.",
    "List endpoints return 100 items per page and a cursor for the next page.",
]


@pytest.fixture(scope="module")
def model_settings() -> Settings:
    return Settings(embed_backend="torch")  # the fp32 reference


@pytest.fixture(scope="module")
def embedder(model_settings) -> Embedder:
    return Embedder(model_settings.model_path, model_settings.model_id)


@pytest.fixture
def spy(embedder, monkeypatch):
    """Records every list of texts actually sent to the model (the real encode still runs)."""
    calls: list[list[str]] = []
    real = embedder.encode

    def encode(texts):
        calls.append(list(texts))
        return real(texts)

    monkeypatch.setattr(embedder, "encode", encode)
    return calls


@pytest.fixture
def cache(tmp_path):
    c = SqliteCache(tmp_path / "c.db")
    yield c
    c.close()


def hashes(texts):
    return [text_hash(t) for t in texts]


# ---------------------------------------------------------------------------- vectors
def test_vectors_are_384d_unit_float32(embedder):
    v = embedder.encode(TEXTS)
    assert v.shape == (len(TEXTS), 384) and v.dtype == np.float32
    assert embedder.dimension == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert np.isfinite(v).all()
    # different texts, different vectors
    assert np.max(v @ v.T - np.eye(len(TEXTS)) * 2) < 0.95


def test_vectors_are_semantically_sensible(embedder):
    q, para, unrelated = embedder.encode(
        [
            "How long does it take to replace the robot's battery?",
            "A technician needs about four minutes to swap the robot battery pack.",
            "Hotel nights are reimbursed up to 180 EUR per night in Europe.",
        ]
    )
    close, far = float(q @ para), float(q @ unrelated)
    assert close > far + 0.2, (close, far)


def test_encode_is_deterministic_and_order_independent(embedder):
    a = embedder.encode(TEXTS)
    b = embedder.encode(list(reversed(TEXTS)))[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)


# ---------------------------------------------------------------------------- cache
def test_embed_encodes_only_cache_misses(embedder, cache, spy):
    first = embedder.embed(TEXTS, hashes(TEXTS), cache)
    assert (first.encoded, first.cache_hits) == (len(TEXTS), 0)
    assert spy == [TEXTS]
    assert first.vectors.shape == (len(TEXTS), 384) and first.vectors.dtype == np.float32
    assert cache.count(embedder.model_id) == len(TEXTS)

    second = embedder.embed(TEXTS, hashes(TEXTS), cache)
    assert (second.encoded, second.cache_hits) == (0, len(TEXTS))
    assert len(spy) == 1, "the model was called although every text was cached"
    assert np.array_equal(second.vectors, first.vectors)

    # a mix: only the new text reaches the model, vectors line up with the input order
    mixed = [TEXTS[2], "Bursts above the limit receive HTTP 429.", TEXTS[0]]
    third = embedder.embed(mixed, hashes(mixed), cache)
    assert (third.encoded, third.cache_hits) == (1, 2)
    assert spy[-1] == ["Bursts above the limit receive HTTP 429."]
    assert np.array_equal(third.vectors[0], first.vectors[2])
    assert np.array_equal(third.vectors[2], first.vectors[0])
    np.testing.assert_allclose(third.vectors[1], embedder.encode([mixed[1]])[0], atol=1e-5)


def test_duplicate_texts_in_one_call_are_encoded_once(embedder, cache, spy):
    texts = [TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[0]]
    res = embedder.embed(texts, hashes(texts), cache)
    assert res.encoded == 2 and res.cache_hits == 0
    assert spy == [[TEXTS[0], TEXTS[1]]]
    assert res.vectors.shape == (4, 384)
    assert np.array_equal(res.vectors[0], res.vectors[2]) and np.array_equal(res.vectors[0], res.vectors[3])
    assert not np.array_equal(res.vectors[0], res.vectors[1])
    assert cache.count() == 2


def test_cache_is_durable_across_cache_objects(embedder, tmp_path, spy):
    path = tmp_path / "c.db"
    c1 = SqliteCache(path)
    first = embedder.embed(TEXTS, hashes(TEXTS), c1)
    c1.close()

    c2 = SqliteCache(path)
    try:
        assert c2.count(embedder.model_id) == len(TEXTS)
        again = embedder.embed(TEXTS, hashes(TEXTS), c2)
        assert (again.encoded, again.cache_hits) == (0, len(TEXTS))
        assert np.array_equal(again.vectors, first.vectors)
        assert len(spy) == 1
    finally:
        c2.close()


def test_cache_is_keyed_by_model_id(model_settings, embedder, cache):
    embedder.embed(TEXTS, hashes(TEXTS), cache)
    other = Embedder(model_settings.model_path, "some-org/another-model")
    res = other.embed(TEXTS, hashes(TEXTS), cache)
    assert (res.encoded, res.cache_hits) == (len(TEXTS), 0)
    assert cache.count(embedder.model_id) == len(TEXTS)
    assert cache.count("some-org/another-model") == len(TEXTS)
    assert cache.count() == 2 * len(TEXTS)
    # and the original model id still hits
    again = embedder.embed(TEXTS, hashes(TEXTS), cache)
    assert (again.encoded, again.cache_hits) == (0, len(TEXTS))


def test_cache_prevents_reencoding_when_reindexing_into_a_fresh_collection(settings, tmp_path):
    first = ingest(settings)
    assert first["new"] == 3 and first["failed"] == 0
    assert first["chunks"] > 0 and first["encoded"] == first["chunks"]

    v2 = settings.replace(collection="reindex_v2", catalog_url=f"sqlite:///{tmp_path}/cat2.db")
    assert v2.cache_path == settings.cache_path
    second = ingest(v2)
    assert second["new"] == 3 and second["failed"] == 0
    assert second["chunks"] == first["chunks"]
    assert second["encoded"] == 0, "chunks were re-encoded although the cache held them"
    assert second["cache_hits"] == second["chunks"]
    assert second["upserted"] == {"chroma": second["chunks"], "milvus": second["chunks"]}

    cat = Catalog(v2.catalog_db_url)
    try:
        ids = cat.all_chunk_ids()
    finally:
        cat.close()
    assert len(ids) == second["chunks"]
    for name in ("chroma", "milvus"):
        with open_store(name, v2) as store:
            assert store.all_ids() == ids
            assert store.count() == second["chunks"]
        with open_store(name, settings) as store:  # the old collection is untouched
            assert store.all_ids() == ids


# ---------------------------------------------------------------------------- precision and errors
@pytest.mark.parametrize("backend, floor", [
    ("torch-bf16", 0.999), ("onnx", 0.99999), ("onnx-int8", 0.95), ("openvino", 0.99999), ("openvino-bf16", 0.999),
])
def test_every_backend_gives_unit_vectors_close_to_the_fp32_reference(model_settings, embedder, tmp_path, backend, floor):
    """Each backend really runs (vectors differ from fp32's bits) and stays close to the reference,
    for texts of every length the model sees (empty, one word, past its 256-token window)."""
    texts = [*TEXTS, "", "R7", " ".join(TEXTS * 30)]
    other = Embedder(model_settings.model_path, model_settings.model_id, backend=backend, cache_dir=tmp_path / "models")
    a = embedder.encode(texts)
    b = other.encode(texts)
    assert b.shape == a.shape == (len(texts), 384) and b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-3)
    cos = np.sum(a * b, axis=1)
    assert (cos >= floor).all(), cos
    assert not np.array_equal(a, b), f"{backend} gave bit-identical vectors: the backend setting had no effect"
    assert np.argmax(b[:4] @ b[:4].T - 2 * np.eye(4), axis=1).tolist() == np.argmax(a[:4] @ a[:4].T - 2 * np.eye(4), axis=1).tolist()


def test_onnx_export_is_made_once_offline_and_reused_without_torch(model_settings, tmp_path):
    """The export lands in the cache folder, named by the model files' hash; a new process with the
    export in place encodes without importing torch or transformers."""
    import json
    import subprocess
    import sys

    cache_dir = tmp_path / "models"
    first = Embedder(model_settings.model_path, model_settings.model_id, backend="onnx-int8", cache_dir=cache_dir)
    first.encode(TEXTS[:1])
    files = sorted(p.name for p in cache_dir.rglob("*") if p.is_file())
    assert files == ["model-int8.onnx", "model.onnx"], files
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from rag_ops.embed import Embedder\n"
        f"e = Embedder({model_settings.model_path!r}, 'm', backend='onnx-int8', cache_dir=Path({str(cache_dir)!r}))\n"
        "v = e.encode(['hello'])\n"
        "print(json.dumps({'dim': v.shape[1], 'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"dim": 384, "torch": False, "transformers": False}
    assert sorted(p.name for p in cache_dir.rglob("*") if p.is_file()) == files  # nothing exported again


OPENVINO_OFFLINE = NO_NETWORK + """
import json, sys
from pathlib import Path
from rag_ops.embed import Embedder
e = Embedder(sys.argv[1], "m", backend="openvino-bf16", cache_dir=Path(sys.argv[2]))
v = e.encode(["hello", "a second text"])
print(json.dumps({"shape": list(v.shape), "attempts": attempts, "torch": "torch" in sys.modules}))
"""


def test_openvino_sends_no_telemetry_even_where_its_telemetry_package_is_installed(
    model_settings, tmp_path, _one_model_export_per_session
):
    """`import openvino` reports to Google Analytics through openvino-telemetry when that package
    is importable (pip installs it with openvino unless --no-deps): the backend must never load it,
    open a connection, or leave OpenVINO's client-id files in the user's home."""
    import json
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    (site / "openvino_telemetry").mkdir(parents=True)
    marker = tmp_path / "telemetry-imported"
    (site / "openvino_telemetry" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-c", OPENVINO_OFFLINE, model_settings.model_path, str(_one_model_export_per_session)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"shape": [2, 384], "attempts": [], "torch": False}
    assert not marker.exists(), "openvino_telemetry was imported"
    assert list(home.iterdir()) == []  # no ~/intel/openvino_ga_cid or consent file


def test_openvino_keeps_its_compiled_model_beside_the_export_and_compiles_a_bad_one_again(
    model_settings, tmp_path, _one_model_export_per_session, caplog
):
    """The first process compiles the export and keeps the compiled model beside it, one file per
    precision; later ones import that file (the same vectors) instead of compiling. A file that
    does not import is compiled again, with a warning, and replaced."""
    import logging
    import os

    from rag_ops.encoders import OpenVinoEncoder, onnx_model

    onnx = tmp_path / "model.onnx"
    onnx.symlink_to(onnx_model(model_settings.model_path, "onnx", _one_model_export_per_session))

    def load(bf16: bool = True) -> OpenVinoEncoder:
        return OpenVinoEncoder(model_settings.model_path, onnx, bf16, 0)

    def blobs() -> list:
        return sorted(tmp_path.glob("openvino-*.blob"))

    first = load()
    assert first._blob is None and len(blobs()) == 1  # compiled, and kept
    bf16_blob = blobs()[0]
    reference = first.encode(TEXTS, 16)
    second = load()
    assert second._blob is not None  # imported
    np.testing.assert_array_equal(second.encode(TEXTS, 16), reference)
    load(bf16=False)
    assert len(blobs()) == 2  # the precision is part of the file's name
    del second
    for blob in blobs():  # cut short, as a full disk would leave a file written in place
        cut = blob.with_name(blob.name + ".cut")
        cut.write_bytes(blob.read_bytes()[:4096])
        os.replace(cut, blob)
    with caplog.at_level(logging.WARNING, logger="rag_ops.encoders"):
        third = load()
    assert third._blob is None and "did not load" in caplog.text
    np.testing.assert_array_equal(third.encode(TEXTS, 16), reference)
    assert bf16_blob.stat().st_size > 4096 and load()._blob is not None  # replaced by a good one


def test_openvino_feeds_shapes_in_steps_so_its_kernel_cache_stays_bounded(model_settings, _one_model_export_per_session):
    """OpenVINO compiles kernels per input shape and keeps them: every batch it is fed is padded
    to a multiple of OPENVINO_PAD_MULTIPLE tokens and to a power-of-two number of rows, whatever
    its texts' lengths and number."""
    from rag_ops.encoders import OpenVinoEncoder, onnx_model
    from rag_ops.encoders.exported import OPENVINO_PAD_MULTIPLE

    onnx = onnx_model(model_settings.model_path, "onnx", _one_model_export_per_session)
    encoder = OpenVinoEncoder(model_settings.model_path, onnx, True, 0)
    shapes = []
    real_infer = encoder.request.infer

    class Request:  # records what OpenVINO is fed
        def infer(self, feed):
            shapes.append(feed["input_ids"].shape)
            return real_infer(feed)

    encoder.request = Request()
    texts = ["R7", "a short one", *(" ".join(["word"] * n) for n in (5, 33, 70, 250, 400))]
    vectors = encoder.encode(texts, 4)  # batches of 4 and of 3 texts
    assert [rows for rows, _ in shapes] == [4, 4], shapes  # 3 rows are fed as 4 (a power of two)
    assert all(tokens % OPENVINO_PAD_MULTIPLE == 0 for _, tokens in shapes), shapes
    assert max(tokens for _, tokens in shapes) == 256  # the model's window, not past it
    assert vectors.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    alone = np.stack([encoder.encode([t], 4)[0] for t in texts])  # the filler rows change no vector
    assert (np.sum(alone * vectors, axis=1) > 0.999).all()


def test_the_backend_is_part_of_the_model_identity(tmp_path):
    """Caches and versions never mix vectors of two backends; fp32 torch keeps the id caches built
    before backends existed carry; chunk ids do not depend on the backend."""
    base = Settings(data_dir=tmp_path, embed_backend="torch")
    ids = {b: base.replace(embed_backend=b).model_id for b in BACKENDS}
    assert ids["torch"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(set(ids.values())) == len(BACKENDS) == 6
    assert {base.replace(embed_backend=b).chunker_fingerprint for b in ids} == {base.chunker_fingerprint}
    assert base.replace(embed_precision="bf16").encoder_backend == "torch-bf16"  # the older spelling
    with pytest.raises(Exception, match="embed_backend must be one of"):
        base.replace(embed_backend="tensorrt")


def test_auto_backend_follows_the_cpu():
    from rag_ops.encoders import auto_backend

    amx = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}
    assert auto_backend(frozenset(amx)) == "openvino-bf16"  # ONNX Runtime's int8 was no faster than fp32 there
    assert auto_backend(frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})) == "onnx-int8"
    assert auto_backend(frozenset({"avx2", "avx_vnni"})) == "onnx-int8"
    assert auto_backend(frozenset({"sse4_2", "avx", "avx2", "fma"})) == "onnx"  # no VNNI: fp32 kernels
    assert auto_backend(frozenset({"fp", "asimd"})) == "torch"  # ARM: nothing measured, the reference


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("kind", ["missing", "empty_dir"])
def test_bad_model_path_raises_embedding_error_naming_it(tmp_path, kind, backend):
    path = tmp_path / "no-such-model"
    if kind == "empty_dir":
        path.mkdir()
    emb = Embedder(str(path), "x", backend=backend, cache_dir=tmp_path / "models")
    with pytest.raises(EmbeddingError) as info:
        emb.encode(["hello"])
    assert str(path) in str(info.value)
    with pytest.raises(EmbeddingError):  # via embed, too, and nothing cached
        cache = SqliteCache(tmp_path / "c.db")
        try:
            emb.embed(["hello"], hashes(["hello"]), cache)
        finally:
            assert cache.count() == 0
            cache.close()


def test_concurrent_encoders_share_the_cores(model_settings, monkeypatch):
    """Airflow runs parallel_batches process_batch tasks at once: each encodes with its share of
    the cores, unless embed_threads says otherwise; the setting really drives torch."""
    import torch

    from rag_ops import embed

    monkeypatch.setattr(embed, "available_cores", lambda: 4)
    model_settings = model_settings.replace(embed_backend="torch")
    assert embed.make_embedder(model_settings).threads == 0  # the CLI alone: torch's default
    assert embed.make_embedder(model_settings, concurrent_encoders=2).threads == 2
    assert embed.make_embedder(model_settings, concurrent_encoders=8).threads == 1
    assert embed.make_embedder(model_settings.replace(embed_threads=3), concurrent_encoders=2).threads == 3
    before = torch.get_num_threads()
    try:
        one = Embedder(model_settings.model_path, model_settings.model_id, backend="torch", threads=1)
        vec = one.encode(["torch threads follow the setting"])
        assert torch.get_num_threads() == 1 and vec.shape == (1, 384)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(Exception, match="embed_threads must be >= 0"):
        model_settings.replace(embed_threads=-1)


def test_encode_seconds_leave_out_the_model_load_so_the_planner_learns_the_real_speed(tmp_path, corpus, monkeypatch):
    """A tiny run in a process that loads the model: the load is its own figure and stage, and the
    tokens/s the re-index planner learns is the model's, not the load's."""
    from rag_ops import encoders
    from rag_ops.catalog import Catalog
    from rag_ops.config import Settings
    from rag_ops.reindex import encode_throughput

    monkeypatch.setattr(encoders, "_ENCODERS", {})  # as in a new process: the first encode loads the model
    settings = Settings(data_dir=tmp_path / "data", source=str(corpus), stores=("milvus",), embed_backend="torch")
    report = ingest(settings)
    assert report["encoded"] > 0 and report["model_load_seconds"] > 0
    assert report["seconds"]["model_load"] == report["model_load_seconds"]
    assert report["encode_seconds"] <= report["seconds"]["embed"]  # the embed stage no longer holds the load
    cat = Catalog(settings.catalog_db_url)
    try:
        learnt, _ = encode_throughput(cat, settings.model_id)
    finally:
        cat.close()
    honest = report["tokens_encoded"] / report["encode_seconds"]
    with_load = report["tokens_encoded"] / (report["encode_seconds"] + report["model_load_seconds"])
    # the load is no small share of a tiny run's encode, so the two figures are far apart
    assert report["model_load_seconds"] > 0.1 * report["encode_seconds"]
    assert learnt == pytest.approx(honest, rel=0.01) and learnt > 1.05 * with_load
