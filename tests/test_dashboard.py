"""The ragops page's data and charts (rag_ops.dashboard) from a real catalog: an ingest with a
quarantined document, a recall score and a drift check; and the empty states of a new catalog.
The page in a running Airflow, in a browser, is tested in tests/e2e/test_ui_browser.py."""

from __future__ import annotations

import re

from rag_ops.catalog import Catalog
from rag_ops.config import Settings
from rag_ops.dashboard import CHARTS, collect, render
from rag_ops.dashboard.data import EMPTY


def test_a_new_catalog_shows_what_to_run_for_every_chart(tmp_path):
    s = Settings(data_dir=tmp_path)
    data = collect(s)
    assert set(data) == set(CHARTS)
    assert {k: v["empty"] for k, v in data.items()} == EMPTY
    page = render(data, s.collection)
    assert page.count('class="empty"') == len(CHARTS) and "<svg" not in page
    assert "rag_ingest" in page and "rag_recall" in page and "rag_reembed" in page


def test_charts_show_the_runs_versions_recall_drift_quarantine_and_quality(settings, corpus):
    from rag_ops.drift import check_index
    from rag_ops.pipeline import ingest

    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 not really <script>alert(1)</script>")
    first = ingest(settings)
    (corpus / "robots" / "battery.txt").write_text("R7 Battery Swap\n\nThe swap now takes three minutes.\n")
    ingest(settings)
    cat = Catalog(settings.catalog_db_url)
    try:
        for n, value in enumerate((0.61, 0.64)):
            cat.write_recall_scores(f"recall_{n}", settings.collection, "chroma", "synthetic@v1",
                                    settings.model_id, {"ndcg@10": value, "recall@10": value + 0.2})
    finally:
        cat.close()
    check_index(settings.replace(drift_min_sample=10, drift_reference_size=10), run_id="drift__one")
    s = settings.replace(recall_floors='{"ndcg@10": 0.5}')
    data = collect(s)
    assert all(data[c]["empty"] is None for c in CHARTS if c != "drift"), {c: data[c]["empty"] for c in CHARTS}
    assert data["versions"]["live"] == {"chroma": 1, "milvus": 1}
    assert [r["new"] for r in data["runs"]["runs"]] == [first["new"], 0]
    assert [r["changed"] for r in data["runs"]["runs"]] == [0, 1]
    enc = data["encoding"]["runs"]
    assert enc[0]["encoded"] == first["encoded"] and enc[0]["tokens_per_second"] > 0
    assert {(x["store"], x["metric"]) for x in data["recall"]["series"]} == {("chroma", "ndcg@10"), ("chroma", "recall@10")}
    assert data["recall"]["floors"] == {"ndcg@10": 0.5}
    assert data["quarantine"]["documents"] == 1 and data["quarantine"]["groups"][0]["stage"] == "parse"
    assert data["quality"]["results"] and data["quality"]["data_docs"] == "data-docs/index.html"
    assert data["drift"]["checks"]  # 3 documents: an insufficient sample, recorded but not plotted
    page = render(data, s.collection)
    for chart in ("versions", "runs", "encoding", "speed", "recall-0", "quarantine"):
        svg = re.search(rf'<svg class="chart" data-chart="{chart}".*?</svg>', page, re.S)
        assert svg, chart
        assert re.search(r'class="(pt|bar)"', svg.group(0)), chart
    assert 'floor ndcg@10' in page
    assert "<script>alert(1)</script>" not in page and "broken.pdf" in page  # text is escaped
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from elsewhere
