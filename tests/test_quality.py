"""The quality gate: real Great Expectations 1.x suites, real numpy vectors, real Data Docs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import NO_NETWORK
from rag_ops import quality
from rag_ops.errors import RagopsError
from rag_ops.quality import GateResult, QualityGateError, Thresholds, check_quality, enforce

REPO = Path(__file__).resolve().parent.parent
SECRET = "Zanzibar-quartz-7781"  # planted in every chunk text: must never appear in reasons or logs
DIM = 384


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_batch(n_docs: int = 10, chunks_per_doc: int = 3, dim: int = DIM, seed: int = 0):
    """A clean batch: n_docs documents, chunks_per_doc chunks each, one unit vector per chunk."""
    documents = [
        {"doc_id": f"doc{i:04d}", "uri": f"/corpus/d{i}.txt", "size": 2_000 + i, "n_chars": 1_500,
         "printable_ratio": 0.99, "utf8_ok": True}
        for i in range(n_docs)
    ]
    chunks = [
        {"chunk_id": f"doc{i:04d}-c{s}", "doc_id": f"doc{i:04d}", "source_uri": f"/corpus/d{i}.txt", "seq": s,
         "text": f"{SECRET} document {i} part {s} says something of its own.", "tokens": 40 + s}
        for i in range(n_docs)
        for s in range(chunks_per_doc)
    ]
    return documents, chunks, unit_vectors(len(chunks), dim, seed)


def rows_of(chunks: list[dict], doc_id: str) -> list[int]:
    return [i for i, c in enumerate(chunks) if c["doc_id"] == doc_id]


def run(documents, chunks, vectors, thresholds: Thresholds | None = None, **kw) -> GateResult:
    return check_quality(documents, chunks, vectors, thresholds or Thresholds(), run_id=kw.pop("run_id", "test"), **kw)


# ---------------------------------------------------------------------------- clean
def test_clean_batch_passes_every_expectation():
    documents, chunks, vectors = make_batch()
    gate = run(documents, chunks, vectors)
    assert gate.quarantined == {}
    assert gate.batch_failures == []
    assert gate.data_docs is None
    enforce(gate)  # does not raise
    assert {o.suite for o in gate.outcomes} == {"documents", "chunks", "embeddings", "gate"}
    failed = [o for o in gate.outcomes if not o.success]
    assert failed == []
    by_name = {(o.suite, o.expectation, o.column): o for o in gate.outcomes}
    # the spec'd checks are all there, as GX expectations
    for key in [
        ("documents", "expect_column_values_to_be_between", "n_chars"),
        ("documents", "expect_column_values_to_be_between", "size"),
        ("documents", "expect_column_values_to_be_in_set", "utf8_ok"),
        ("documents", "expect_column_values_to_be_between", "printable_ratio"),
        ("chunks", "expect_column_values_to_be_between", "text_chars"),
        ("chunks", "expect_column_values_to_be_between", "tokens"),
        ("chunks", "expect_column_values_to_be_unique", "chunk_id"),
        ("chunks", "expect_column_values_to_not_be_null", "source_uri"),
        ("chunks", "expect_column_mean_to_be_between", "text_repeats"),
        ("embeddings", "expect_column_values_to_be_in_set", "dim"),
        ("embeddings", "expect_column_values_to_be_in_set", "finite"),
        ("embeddings", "expect_column_values_to_be_between", "norm"),
        ("embeddings", "expect_column_unique_value_count_to_be_between", "fingerprint"),
        ("embeddings", "expect_column_mean_to_be_between", "near_duplicate"),
    ]:
        assert key in by_name, key
    assert json.loads(by_name[("embeddings", "expect_column_unique_value_count_to_be_between", "fingerprint")].observed_value) == 30
    assert json.loads(by_name[("embeddings", "expect_column_mean_to_be_between", "near_duplicate")].observed_value) == 0


# ---------------------------------------------------------------------------- row level
def _spoil_doc(field, value):
    def spoil(documents, chunks, vectors, target):
        next(d for d in documents if d["doc_id"] == target)[field] = value
    return spoil


def _spoil_chunk(field, value):
    def spoil(documents, chunks, vectors, target):
        chunks[rows_of(chunks, target)[1]][field] = value
    return spoil


def _spoil_vector(kind):
    def spoil(documents, chunks, vectors, target):
        row = rows_of(chunks, target)[0]
        if kind == "nan":
            vectors[row, 7] = np.nan
        else:
            vectors[row] *= 1.5
    return spoil


ROW_CASES = {
    # case: (spoil, suite, expectation, column, observed)
    "empty text": (_spoil_doc("n_chars", 0), "documents", "expect_column_values_to_be_between", "n_chars", "observed 0, expected >= 1"),
    "oversize": (_spoil_doc("size", 60 * 1024 * 1024), "documents", "expect_column_values_to_be_between", "size", f"observed {60 * 1024 * 1024}, expected between 1 and {50 * 1024 * 1024}"),
    "non-utf8": (_spoil_doc("utf8_ok", False), "documents", "expect_column_values_to_be_in_set", "utf8_ok", "observed false, expected true"),
    "low printable ratio": (_spoil_doc("printable_ratio", 0.42), "documents", "expect_column_values_to_be_between", "printable_ratio", "observed 0.42, expected between 0.9 and 1"),
    "printable ratio missing": (_spoil_doc("printable_ratio", None), "documents", "expect_column_values_to_not_be_null", "printable_ratio", "observed null, expected not null"),
    "empty chunk": (_spoil_chunk("text", "  \n "), "chunks", "expect_column_values_to_be_between", "text_chars", "observed 0, expected >= 1"),
    "too many tokens": (_spoil_chunk("tokens", 300), "chunks", "expect_column_values_to_be_between", "tokens", "observed 300, expected between 1 and 256"),
    "null source_uri": (_spoil_chunk("source_uri", None), "chunks", "expect_column_values_to_not_be_null", "source_uri", "observed null, expected not null"),
    "NaN vector": (_spoil_vector("nan"), "embeddings", "expect_column_values_to_be_in_set", "finite", "observed false, expected true"),
    "unnormalised vector": (_spoil_vector("scale"), "embeddings", "expect_column_values_to_be_between", "norm", "observed 1.5, expected between 0.999 and 1.001"),
}


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_row_level_failure_quarantines_exactly_the_offending_document(case):
    spoil, suite, expectation, column, observed = ROW_CASES[case]
    documents, chunks, vectors = make_batch()
    target = "doc0003"
    spoil(documents, chunks, vectors, target)
    gate = run(documents, chunks, vectors)
    assert list(gate.quarantined) == [target]
    reason = gate.quarantined[target]
    assert reason == f"{suite}: {expectation}({column}) failed: {observed}"
    assert SECRET not in reason and "/corpus/" not in reason  # no text, no uri
    assert gate.batch_failures == []  # 1 of 10 documents: under max_failure_share
    enforce(gate)
    failing = [o for o in gate.outcomes if not o.success]
    assert [(o.suite, o.expectation, o.column, o.unexpected_count) for o in failing] == [(suite, expectation, column, 1)]


def test_a_document_failing_several_checks_gets_every_reason():
    documents, chunks, vectors = make_batch()
    documents[2]["n_chars"] = 0
    documents[2]["utf8_ok"] = False
    vectors[rows_of(chunks, "doc0002")[0]] *= 0.5
    gate = run(documents, chunks, vectors)
    assert list(gate.quarantined) == ["doc0002"]
    reasons = gate.quarantined["doc0002"].split("; ")
    assert len(reasons) == 3
    assert any("(n_chars)" in r for r in reasons) and any("(utf8_ok)" in r for r in reasons)
    assert any(r.startswith("embeddings: expect_column_values_to_be_between(norm)") for r in reasons)


def test_duplicate_chunk_id_quarantines_its_document():
    documents, chunks, vectors = make_batch()
    chunks[rows_of(chunks, "doc0005")[2]]["chunk_id"] = chunks[rows_of(chunks, "doc0005")[0]]["chunk_id"]
    gate = run(documents, chunks, vectors)
    assert list(gate.quarantined) == ["doc0005"]
    assert "expect_column_values_to_be_unique(chunk_id)" in gate.quarantined["doc0005"]
    assert gate.batch_failures == []


def test_chunk_without_doc_id_cannot_be_quarantined_so_the_batch_fails():
    documents, chunks, vectors = make_batch()
    chunks[4]["doc_id"] = None
    gate = run(documents, chunks, vectors)
    assert gate.quarantined == {}
    assert gate.batch_failures == [
        "chunks: expect_column_values_to_not_be_null(doc_id) failed on 1 row(s) with no doc_id to quarantine: expected not null"
    ]


def test_thresholds_are_per_call():
    documents, chunks, vectors = make_batch()
    chunks[0]["tokens"] = 200
    assert run(documents, chunks, vectors).quarantined == {}
    strict = run(documents, chunks, vectors, Thresholds(max_chunk_tokens=128))
    assert strict.quarantined == {"doc0000": "chunks: expect_column_values_to_be_between(tokens) failed: observed 200, expected between 1 and 128"}
    assert run(documents, chunks, vectors).quarantined == {}  # the suites were not changed by the strict call


# ---------------------------------------------------------------------------- batch level
def test_wrong_dimension_fails_the_batch_naming_observed_and_expected():
    documents, chunks, _ = make_batch()
    vectors = unit_vectors(len(chunks), 768)
    gate = run(documents, chunks, vectors)
    assert gate.batch_failures == ["embeddings: expect_column_values_to_be_in_set(dim) failed: observed 768, expected 384"]
    assert gate.quarantined == {}  # a wrong model is the batch's problem, not a document's
    with pytest.raises(QualityGateError) as info:
        enforce(gate)
    assert "expect_column_values_to_be_in_set(dim) failed: observed 768, expected 384" in str(info.value)


def test_constant_vectors_fail_the_batch():
    documents, chunks, _ = make_batch()
    vectors = np.tile(unit_vectors(1), (len(chunks), 1))
    gate = run(documents, chunks, vectors)
    assert "embeddings: expect_column_unique_value_count_to_be_between(fingerprint) failed: observed 1, expected >= 2" in gate.batch_failures
    assert "embeddings: expect_column_mean_to_be_between(near_duplicate) failed: observed 1.0, expected <= 0.5" in gate.batch_failures
    assert gate.quarantined == {}


def test_identical_texts_may_share_one_vector():
    documents, chunks, _ = make_batch(n_docs=1, chunks_per_doc=1)
    chunks.append({**chunks[0], "chunk_id": "other", "seq": 1})
    vectors = np.tile(unit_vectors(1), (2, 1))
    gate = run(documents, chunks, vectors, Thresholds(max_duplicate_chunk_rate=0.5, max_near_duplicate_rate=1.0))
    fingerprint = next(o for o in gate.outcomes if o.column == "fingerprint")
    assert fingerprint.success  # one distinct text: one vector is right, not a constant model
    assert gate.batch_failures == []


def test_near_duplicates_over_the_bound_fail_the_batch():
    documents, chunks, vectors = make_batch()  # 30 vectors
    rng = np.random.default_rng(1)
    for row in range(1, 18):  # rows 0..17 all within cosine 0.999 of row 0, none identical
        v = vectors[0] + rng.normal(scale=1e-3, size=DIM).astype(np.float32)
        vectors[row] = v / np.linalg.norm(v)
    gate = run(documents, chunks, vectors)
    assert gate.batch_failures == ["embeddings: expect_column_mean_to_be_between(near_duplicate) failed: observed 0.6, expected <= 0.5"]
    fingerprint = next(o for o in gate.outcomes if o.column == "fingerprint")
    assert fingerprint.success and json.loads(fingerprint.observed_value) == 30
    assert gate.quarantined == {}


def test_duplicate_chunk_text_over_the_bound_fails_the_batch():
    documents, chunks, vectors = make_batch()
    for c in chunks[:20]:
        c["text"] = f"{SECRET} the same boilerplate footer"
    gate = run(documents, chunks, vectors)  # 19 of 30 chunks repeat an earlier one
    assert gate.batch_failures == ["chunks: expect_column_mean_to_be_between(text_repeats) failed: observed 0.633333, expected <= 0.5"]
    assert all(SECRET not in m for m in gate.batch_failures)


def test_quarantined_share_over_max_failure_share_fails_the_batch():
    documents, chunks, vectors = make_batch()
    for d in documents[:3]:
        d["n_chars"] = 0
    gate = run(documents, chunks, vectors)
    assert sorted(gate.quarantined) == ["doc0000", "doc0001", "doc0002"]
    assert gate.batch_failures == [
        "gate: quarantined_document_share failed: observed 0.3 (3 of 10 documents), expected <= 0.2 (max_failure_share)"
    ]
    share = next(o for o in gate.outcomes if o.suite == "gate")
    assert (share.success, share.unexpected_count, json.loads(share.observed_value)) == (False, 3, 0.3)
    # exactly at the bound is not over it
    documents, chunks, vectors = make_batch()
    for d in documents[:2]:
        d["n_chars"] = 0
    two = run(documents, chunks, vectors)
    assert len(two.quarantined) == 2 and two.batch_failures == []


def test_vectors_not_aligned_with_chunks_fail_the_batch():
    documents, chunks, vectors = make_batch()
    gate = run(documents, chunks, vectors[:-1])
    assert gate.batch_failures == ["embeddings: vectors of shape (29, 384) do not match the 30 chunk(s) (expected one row per chunk)"]


def test_enforce_raises_a_non_retryable_error_listing_every_failure():
    documents, chunks, _ = make_batch()
    for c in chunks[:20]:
        c["text"] = "same"
    vectors = unit_vectors(len(chunks), 768)
    gate = run(documents, chunks, vectors)
    assert len(gate.batch_failures) == 2
    with pytest.raises(QualityGateError) as info:
        enforce(gate)
    err = info.value
    assert isinstance(err, RagopsError) and err.retryable is False and QualityGateError.retryable is False
    for message in gate.batch_failures:
        assert message in str(err)
    assert "expect_column_mean_to_be_between(text_repeats) failed: observed 0.633333" in str(err)
    assert "expect_column_values_to_be_in_set(dim) failed: observed 768, expected 384" in str(err)


# ---------------------------------------------------------------------------- empty inputs
def test_empty_inputs_pass(tmp_path):
    for documents, chunks, vectors in [
        ([], [], np.zeros((0, 0), dtype=np.float32)),  # what pipeline.embed_batch stages for no chunks
        ([], [], np.zeros((0, DIM), dtype=np.float32)),
        (make_batch()[0], [], np.zeros((0, 0), dtype=np.float32)),  # documents, none produced chunks
    ]:
        gate = run(documents, chunks, vectors)
        assert gate.quarantined == {} and gate.batch_failures == []
    gate = run([], [], np.zeros((0, 0)), docs_dir=tmp_path / "docs")
    assert gate.quarantined == {} and gate.batch_failures == []
    assert Path(gate.data_docs).is_file()


def test_documents_without_chunks_are_still_checked():
    documents = make_batch()[0]
    documents[0]["utf8_ok"] = False
    gate = run(documents, [], np.zeros((0, 0), dtype=np.float32))
    assert list(gate.quarantined) == ["doc0000"]


# ---------------------------------------------------------------------------- data docs
def test_data_docs_written_under_docs_dir(tmp_path):
    docs_dir = tmp_path / "quality-docs"
    documents, chunks, vectors = make_batch()
    documents[1]["size"] = 0
    gate = run(documents, chunks, vectors, run_id="run_one", docs_dir=docs_dir)
    assert gate.data_docs == str(docs_dir / "index.html")
    index = Path(gate.data_docs)
    assert index.is_file()
    pages = sorted(p.relative_to(docs_dir).parts[:3] for p in (docs_dir / "validations").rglob("*.html"))
    assert pages == [
        ("validations", "ragops_chunks", "run_one"),
        ("validations", "ragops_documents", "run_one"),
        ("validations", "ragops_embeddings", "run_one"),
    ]
    html = index.read_text()
    assert "run_one" in html and "ragops_documents" in html
    # a second run keeps the first run's pages and lists both
    run(*make_batch(), run_id="run_two", docs_dir=docs_dir)
    html = index.read_text()
    assert "run_one" in html and "run_two" in html
    assert len(list((docs_dir / "validations").rglob("*.html"))) == 6
    # GX got lengths, ids and flags, never the text
    for path in docs_dir.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".json"):
            assert SECRET not in path.read_text(errors="replace"), path
    # the process's context has no site but the docs dirs it was given (GX's default is a temp folder)
    sites = quality.context._gx().context.list_data_docs_sites()
    assert "local_site" not in sites
    for cfg in sites.values():
        assert (Path(cfg["store_backend"]["base_directory"]) / "index.html").is_file()


def test_no_text_in_logs(caplog):
    documents, chunks, vectors = make_batch()
    chunks[0]["text"] = ""
    for c in chunks[1:25]:
        c["text"] = f"{SECRET} repeated"
    with caplog.at_level(logging.DEBUG):
        gate = run(documents, chunks, vectors)
    assert gate.quarantined and gate.batch_failures
    assert SECRET not in caplog.text
    assert all(SECRET not in r for r in gate.quarantined.values())


# ---------------------------------------------------------------------------- near duplicates
def test_near_duplicates_matches_brute_force_across_blocks(monkeypatch):
    monkeypatch.setattr(quality.frames, "_NEAR_DUP_BLOCK", 7)
    rng = np.random.default_rng(3)
    x = unit_vectors(50, 16, seed=3)
    x[10] = x[3] + 1e-4 * rng.normal(size=16)  # near-duplicates across blocks
    x[45] = x[3] * 3.0  # same direction, different length: cosine 1
    x[20] = x[21]  # within a block, identical
    x[30] = 0.0  # zero vector: never a duplicate
    x[31] = np.nan  # not finite: never a duplicate
    got = quality.near_duplicates(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.nan_to_num(x / np.linalg.norm(x, axis=1, keepdims=True))
    sims = unit @ unit.T
    np.fill_diagonal(sims, 0)
    expected = (sims >= quality.NEAR_DUPLICATE_COSINE).any(axis=1)
    assert got.tolist() == expected.tolist()
    assert sorted(np.flatnonzero(got)) == [3, 10, 20, 21, 45]


# ---------------------------------------------------------------------------- timing
def test_timing_2000_documents_5000_chunks(tmp_path):
    documents = make_batch(n_docs=2000, chunks_per_doc=0)[0]
    chunks = [
        {"chunk_id": f"c{j}", "doc_id": f"doc{j % 2000:04d}", "source_uri": f"/corpus/d{j % 2000}.txt",
         "seq": j // 2000, "text": f"chunk {j} of the benchmark", "tokens": 120}
        for j in range(5000)
    ]
    vectors = unit_vectors(5000, DIM, seed=5)
    run(documents[:5], chunks[:5], vectors[:5])  # the context exists (first call pays GX's import)
    t0 = time.perf_counter()
    gate = run(documents, chunks, vectors, run_id="timing")
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    gate_docs = run(documents, chunks, vectors, run_id="timing", docs_dir=tmp_path / "docs")
    with_docs = time.perf_counter() - t0
    t0 = time.perf_counter()
    near = quality.near_duplicates(vectors)
    near_s = time.perf_counter() - t0
    assert gate.batch_failures == [] and gate.quarantined == {} and not near.any()
    assert gate_docs.batch_failures == []
    print(
        f"\nquality timing, 2000 documents / 5000 chunks / 5000x{DIM}: check {plain:.2f}s, "
        f"with Data Docs {with_docs:.2f}s (near-duplicate scan {near_s:.2f}s)"
    )


# ---------------------------------------------------------------------------- a fresh process
COLD_SCRIPT = NO_NETWORK + textwrap.dedent(
    """
    import json, os, sys, tempfile, time
    import jinja2
    compiled = []  # Data Docs templates compiled from their source (not loaded compiled)
    real_compile = jinja2.Environment.compile
    def counting_compile(self, source, name=None, *a, **k):
        if name is not None:
            compiled.append(name)
        return real_compile(self, source, name, *a, **k)
    jinja2.Environment.compile = counting_compile
    t0 = time.perf_counter()
    from rag_ops import quality
    import numpy as np
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from test_quality import make_batch, unit_vectors
    documents, chunks, _ = make_batch(n_docs=2000, chunks_per_doc=0)
    chunks = [{"chunk_id": f"c{j}", "doc_id": f"doc{j % 2000:04d}", "source_uri": "s", "seq": j,
               "text": f"chunk {j}", "tokens": 100} for j in range(5000)]
    vectors = unit_vectors(5000)
    t1 = time.perf_counter()
    first = quality.check_quality(documents, chunks, vectors, quality.Thresholds(), run_id="cold",
                                  docs_dir=__import__("pathlib").Path(sys.argv[1]))
    t2 = time.perf_counter()
    second = quality.check_quality(documents, chunks, vectors, quality.Thresholds(), run_id="warm")
    t3 = time.perf_counter()
    state = quality.context._gx()
    stats_loaded = "scipy.stats._stats_py" in sys.modules
    altair_loaded = "altair.vegalite" in sys.modules
    sqlalchemy_loaded = "sqlalchemy" in sys.modules
    from scipy import stats  # deferred, not gone: the first use loads it
    import altair
    import sqlalchemy  # hidden from GX only: anything else in the process can still import it
    print(json.dumps({
        "compiled": len(compiled),
        "scipy_stats_loaded": stats_loaded,
        "scipy_stats_works": float(stats.norm.cdf(0.0)) == 0.5,
        "altair_loaded": altair_loaded,
        "altair_works": altair.Chart.__name__ == "Chart",
        "sqlalchemy_loaded": sqlalchemy_loaded,
        "sqlalchemy_works": sqlalchemy.select.__name__ == "select",
        "attempts": attempts,
        "analytics_modules": sorted(m for m in sys.modules if "posthog" in m or "analytics" in m or "segment" in m),
        "env": os.environ.get("GX_ANALYTICS_ENABLED"),
        "analytics_enabled": state.context.config.analytics_enabled,
        "sites": list(state.context.list_data_docs_sites()),
        "ok": first.batch_failures == [] and second.batch_failures == [],
        "data_docs": first.data_docs,
        "import_s": round(state.import_seconds, 2), "context_s": round(state.setup_seconds, 2),
        "first_call_s": round(t2 - t1, 2), "second_call_s": round(t3 - t2, 2),
        "tempdir": tempfile.gettempdir(),
    }))
    """
)


def test_a_process_that_imported_sqlalchemy_first_keeps_gx_sql_support():
    """SQLAlchemy is hidden from GX only where nothing imported it before (the CLI's gate helper):
    in an Airflow task or a process with the catalog open, GX keeps its SQL data sources."""
    code = (
        "import sys, sqlalchemy\n"
        "from rag_ops.quality.context import _gx\n"
        "_gx()\n"
        "from great_expectations.compatibility import sqlalchemy as compat\n"
        "print(compat.sqlalchemy is sys.modules['sqlalchemy'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_fresh_process_no_network_no_analytics_no_temp_docs(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    docs_dir = tmp_path / "docs"
    env = {k: v for k, v in os.environ.items() if k != "GX_ANALYTICS_ENABLED"}
    env.update(TMPDIR=str(tmp), TESTS_DIR=str(Path(__file__).parent))
    out = {}
    compiled: list[int] = []
    for _ in range(2):  # two processes writing one docs_dir
        proc = subprocess.run(
            [sys.executable, "-c", COLD_SCRIPT, str(docs_dir)], capture_output=True, text=True, env=env,
            cwd=REPO, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["ok"]
        assert out["attempts"] == []  # GX opened no connection (no analytics, no version check)
        assert out["analytics_modules"] == []
        assert out["env"] == "False"  # rag_ops.config set it before GX was imported
        assert out["analytics_enabled"] is False
        assert out["tempdir"] == str(tmp)
        assert list(tmp.iterdir()) == []  # nothing in GX's default (temp) Data Docs location
        assert out["data_docs"] == str(docs_dir / "index.html")
        assert len(out["sites"]) == 1
        # GX imports scipy.stats and altair for expectations the suites do not use: loaded on first
        # use only; SQLAlchemy (GX's optional SQL support) is not imported where nothing else had
        assert out["scipy_stats_loaded"] is False and out["scipy_stats_works"] is True
        assert out["altair_loaded"] is False and out["altair_works"] is True
        assert out["sqlalchemy_loaded"] is False and out["sqlalchemy_works"] is True
        compiled.append(out["compiled"])
    # the second process kept the first one's page in the shared docs_dir
    assert len(list((docs_dir / "validations").rglob("*.html"))) == 6
    # the first process compiled Data Docs' templates; the second loaded them compiled, from a
    # cache beside the site (not in it: the site is served as it is)
    assert compiled[0] > 10 and compiled[1] == 0, compiled
    cache = tmp_path / ".data_docs_templates"
    assert any(cache.iterdir()) and (cache.stat().st_mode & 0o777) == 0o700
    assert not list(docs_dir.rglob("__jinja2_*")) and any(cache.glob("__jinja2_*"))
    print(
        f"\nquality cold process: GX import {out['import_s']}s, context+suites {out['context_s']}s, "
        f"first call (2000/5000, Data Docs) {out['first_call_s']}s, second call {out['second_call_s']}s"
    )


def test_near_duplicate_rate_is_sampled_on_large_batches(monkeypatch):
    monkeypatch.setattr(quality.frames, "NEAR_DUP_EXACT_MAX", 100)
    monkeypatch.setattr(quality.frames, "NEAR_DUP_SAMPLE", 120)
    documents, chunks, vectors = make_batch(n_docs=100, chunks_per_doc=3)  # 300 vectors
    rng = np.random.default_rng(2)
    for row in range(1, 180):  # 60% within cosine 0.999 of row 0
        v = vectors[0] + rng.normal(scale=1e-3, size=DIM).astype(np.float32)
        vectors[row] = v / np.linalg.norm(v)
    column = quality.near_duplicate_column(vectors)
    assert np.isnan(column).sum() == 300 - 120
    assert abs(np.nanmean(column) - 0.6) < 0.12
    gate = run(documents, chunks, vectors)
    assert len(gate.batch_failures) == 1
    assert gate.batch_failures[0].startswith("embeddings: expect_column_mean_to_be_between(near_duplicate) failed: observed 0.")


def test_one_document_under_two_names_passes_with_default_thresholds():
    """Same bytes under two names: identical texts share vectors, which is neither a near-duplicate
    model failure nor a duplicate rate over the default bound (0.5 observed, 0.8 allowed)."""
    documents, chunks, vectors = make_batch(n_docs=1, chunks_per_doc=2)
    documents.append({**documents[0], "doc_id": "copy", "uri": "/corpus/copy.txt"})
    chunks += [{**c, "chunk_id": f"copy-{c['seq']}", "doc_id": "copy", "source_uri": "/corpus/copy.txt"} for c in chunks]
    vectors = np.concatenate([vectors, vectors])
    gate = run(documents, chunks, vectors, Thresholds(max_duplicate_chunk_rate=0.8))
    assert gate.batch_failures == [] and gate.quarantined == {}
    near = next(o for o in gate.outcomes if o.column == "near_duplicate")
    assert near.success
