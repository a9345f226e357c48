"""The operator's page inside the Airflow UI: what each chart shows, as JSON and as inline SVG.

:func:`~rag_ops.dashboard.data.collect` reads the catalog (never a vector store, so the page
cannot block an embedded store an ingest task is writing) and returns one JSON-safe dict per
chart; :func:`~rag_ops.dashboard.page.render` turns them into one HTML page whose charts are
inline SVG drawn here (no script, no style sheet and no font from anywhere else). The Airflow
plugin (``plugins/ragops_plugin.py``) serves both behind Airflow's login.
"""

from rag_ops.dashboard.data import CHARTS, collect
from rag_ops.dashboard.page import render

__all__ = ["CHARTS", "collect", "render"]
