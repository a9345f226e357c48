"""The rag_recall DAG through the real Airflow CLI: a BEIR golden set and the synthetic set are
scored on both stores, recorded, plotted; a degraded index fails the check with a clear message."""

from __future__ import annotations

import pytest

from rag_ops import evaluate as ev
from rag_ops import pipeline
from rag_ops.catalog import Catalog
from rag_ops.config import Settings
from rag_ops.stores import open_store
from tests.conftest import write_corpus
from tests.test_evaluate import SET_NAME, write_beir

pytestmark = pytest.mark.slow


def _scores(settings: Settings) -> dict[tuple[str, str], dict[str, float]]:
    """(store, golden set) -> metrics of the latest run."""
    cat = Catalog(settings.catalog_db_url)
    try:
        out = {}
        for row in cat.recall_rows():
            out.setdefault((row["store"], row["golden_set"]), {})[row["metric"]] = row["value"]
        return out
    finally:
        cat.close()


def test_rag_recall_scores_records_plots_and_fails_on_a_regression(airflow_cli, tmp_path):
    settings = Settings(data_dir=airflow_cli.data_dir, source=str(write_corpus(tmp_path / "src")))
    pipeline.ingest(settings)  # the live collection the synthetic set is drawn from
    beir_dir = write_beir(tmp_path / SET_NAME)
    airflow_cli.env["RAGOPS_RECALL_GOLDEN_DIRS"] = str(beir_dir)
    airflow_cli.env["RAGOPS_RECALL_SYNTHETIC_QUERIES"] = "5"

    airflow_cli.dags_test({}, dag_id="rag_recall")
    scores = _scores(settings)
    synthetic = next(g for (_, g) in scores if g.startswith("synthetic@"))
    assert set(scores) == {(s, g) for s in ("chroma", "milvus") for g in (SET_NAME, synthetic)}
    for (store, golden), metrics in scores.items():
        assert metrics["recall@5"] == 1.0, (store, golden, metrics)  # tiny sets: every answer found
        assert {"ndcg@10", "recall@100", "mrr@10", "hit@1", "queries"} <= set(metrics)
    for store in ("chroma", "milvus"):
        png = settings.data_dir / "recall" / f"trend_{store}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # degrade the BEIR set's Milvus collection: the documents of two judged queries lose their chunks
    target = ev.beir_settings(settings, beir_dir)
    with open_store("milvus", target) as store:
        hits = {h.source_uri: h.doc_id for h in store.query(store_vector(target, "robot battery latch"), k=20)}
        victims = [d for uri, d in hits.items() if uri.endswith(("doc%2F1.txt", "bike.txt"))]
        assert len(victims) == 2
        assert store.delete_docs(victims) > 0
    proc = airflow_cli.dags_test({}, dag_id="rag_recall", check=False)
    out = proc.stdout + proc.stderr
    assert "RecallRegression" in out and "retrieval recall regressed" in out
    assert f"golden set '{SET_NAME}' (milvus" in out and "below its baseline" in out
    assert f"golden set '{SET_NAME}' (chroma" not in out  # the healthy store passes
    after = _scores(settings)
    assert after[("milvus", SET_NAME)]["recall@5"] < 1.0  # the bad scores are recorded all the same
    assert after[("chroma", SET_NAME)]["recall@5"] == 1.0


def store_vector(settings: Settings, text: str):
    from rag_ops.embed import make_embedder

    return make_embedder(settings).encode([text])[0]
