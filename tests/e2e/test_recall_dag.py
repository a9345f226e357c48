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

    # degrade the live collection in Milvus: a document the synthetic set asks about loses its
    # chunks (the BEIR sets' collections would be repaired by prepare_golden_sets: their
    # ingest restores lost chunks; the live index is what the nightly run must catch)
    golden = ev.load_golden(ev.synthetic_dir(settings))
    victim = sorted(next(iter(golden.qrels.values())))[0]
    with open_store("milvus", settings) as store:
        assert store.delete_docs([victim]) > 0
    proc = airflow_cli.dags_test({}, dag_id="rag_recall", check=False)
    out = proc.stdout + proc.stderr
    assert "RecallRegression" in out and "retrieval recall regressed" in out, out[-3000:]
    assert f"on golden set '{synthetic}' (milvus" in out and "below its baseline" in out
    assert f"golden set '{synthetic}' (chroma" not in out  # the healthy store passes
    after = _scores(settings)
    assert after[("milvus", synthetic)]["recall@100"] < 1.0  # the bad scores are recorded all the same
    assert after[("chroma", synthetic)]["recall@100"] == 1.0
    assert after[("milvus", SET_NAME)]["recall@5"] == 1.0
    for store in ("chroma", "milvus"):  # plotted although the check failed
        assert (settings.data_dir / "recall" / f"trend_{store}.png").stat().st_size > 0


def store_vector(settings: Settings, text: str):
    from rag_ops.embed import make_embedder

    return make_embedder(settings).encode([text])[0]
