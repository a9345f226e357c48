"""Airflow plugin: a "ragops" entry in the UI's navigation with the index's state and trends.

Every route requires a logged-in Airflow user allowed to read the ragops DAGs, through Airflow's
own auth manager: the UI's cookie or an API token (``Authorization: Bearer``), as the REST API
takes them. Airflow mounts a plugin's FastAPI app without the API's authentication, so the app
declares it itself (an app-wide dependency). An anonymous request gets 401 (the HTML page: a
redirect to Airflow's login page, back here afterwards).

Routes, under ``/ragops``: ``/`` the page (charts as inline SVG drawn by ``rag_ops.dashboard``),
``/api`` and ``/api/<chart>`` the JSON behind each chart, ``/status`` catalog counts, versions,
failed documents and runs, ``/data-docs/…`` the Great Expectations Data Docs site. A Content
Security Policy keeps the browser from loading anything that is not served here (Data Docs pages
name CDN style sheets: they are not fetched). The plugin reads the catalog only; it never opens a
vector store, so it cannot block an embedded store that an ingest task is writing.
"""

from __future__ import annotations

from pathlib import Path

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

READ_DAG = "rag_ingest"  # reading the ragops page needs read access to this DAG
CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'self'")


def require_reader():
    """The app-wide dependency: an authenticated user who may read the ragops DAGs (401/403 otherwise)."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag("GET", param_dag_id=READ_DAG)


_reader = require_reader()
app = FastAPI(title="ragops", description="ragops index state and trends", dependencies=[Depends(_reader)])


@app.middleware("http")
async def _nothing_from_elsewhere(request: Request, call_next):
    response = await call_next(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@app.exception_handler(HTTPException)
async def _login_redirect(request: Request, exc: HTTPException):
    """An anonymous browser asking for a page goes to Airflow's login, and back here after it."""
    wants_html = "text/html" in request.headers.get("accept", "")
    if exc.status_code == 401 and wants_html and request.method == "GET":
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


def _settings():
    from rag_ops.config import load_settings

    return load_settings()


def _status(limit: int = 20) -> dict:
    import sqlalchemy as sa

    from rag_ops.catalog import Catalog, documents
    from rag_ops.versions import describe

    settings = _settings()
    catalog = Catalog(settings.catalog_db_url)
    try:
        catalog.migrate()
        counts = catalog.counts()
        runs = catalog.last_runs(limit)
        versions = describe(catalog.versions(settings.collection))
        with catalog.read() as conn:
            failed = conn.execute(
                sa.select(documents.c.uri, documents.c.error_stage, documents.c.error)
                .where(documents.c.status == "failed")
                .order_by(documents.c.uri)
                .limit(200)
            ).all()
    finally:
        catalog.close()
    keys = ("run_id", "status", "started_at", "finished_at", "seen", "new", "changed", "unchanged", "deleted",
            "failed", "chunks", "encoded", "cache_hits")
    return {
        "collection": settings.collection,
        "stores": list(settings.stores),
        "counts": counts,
        "failed_documents": [{"uri": u, "stage": s, "reason": e} for u, s, e in failed],
        "versions": [{k: v[k] for k in ("store", "version", "status", "collection", "model_id", "chunks", "created_at", "swapped_at")} for v in versions],
        "runs": [{k: r.get(k) for k in keys} for r in runs],
    }


@app.get("/status")
def status(limit: int = 20) -> dict:
    """Catalog counts, index versions, failed documents and the last ``limit`` runs, as JSON."""
    return _status(limit)


@app.get("/api")
def charts() -> dict:
    """The data behind every chart of the page."""
    from rag_ops.dashboard import collect

    return collect(_settings())


@app.get("/api/{chart}")
def chart(chart: str) -> dict:
    """The data behind one chart (versions, runs, encoding, recall, drift, quarantine, quality)."""
    from rag_ops.dashboard import CHARTS, collect

    if chart not in CHARTS:
        raise HTTPException(status_code=404, detail=f"no chart {chart!r}; charts: {', '.join(CHARTS)}")
    return collect(_settings(), chart)[chart]


@app.get("/data-docs/{path:path}")
def data_docs(path: str):
    """A file of the Great Expectations Data Docs site (``<data_dir>/quality/data_docs``)."""
    root = (Path(_settings().data_dir) / "quality" / "data_docs").resolve()
    target = (root / (path or "index.html")).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise HTTPException(status_code=404, detail="no such Data Docs page (an ingest run builds them)")
    return FileResponse(target)


@app.get("/", response_class=HTMLResponse)
def page() -> str:
    from rag_ops.dashboard import collect, render

    settings = _settings()
    return render(collect(settings), settings.collection)


class RagopsPlugin(AirflowPlugin):
    name = "ragops"
    fastapi_apps = [{"app": app, "url_prefix": "/ragops", "name": "ragops"}]
    external_views = [{"name": "ragops", "href": "/ragops/", "destination": "nav", "url_route": "ragops"}]


__all__ = ["RagopsPlugin", "app"]
