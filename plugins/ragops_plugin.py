"""Airflow plugin: a "ragops" page in the UI's navigation with the catalog's state.

Every route requires a logged-in Airflow user allowed to read the ragops DAGs, through Airflow's
own auth manager: the UI's cookie or an API token (``Authorization: Bearer``), as the REST API
takes them. Airflow mounts a plugin's FastAPI app without the API's authentication, so the app
declares it itself (an app-wide dependency). An anonymous request gets 401 (the HTML page: a
redirect to Airflow's login page, back here afterwards).

Serves ``/ragops/`` (an HTML page) and ``/ragops/status`` (JSON) from the Airflow API server:
live documents and chunks, the index versions (live, retired, failed), failed documents with
their reasons, and the last runs with their counts. It reads the catalog only; it never opens a vector store, so it cannot block an
embedded store that an ingest task is writing.
"""

from __future__ import annotations

import html

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

READ_DAG = "rag_ingest"  # reading the ragops page needs read access to this DAG


def require_reader():
    """The app-wide dependency: an authenticated user who may read the ragops DAGs (401/403 otherwise)."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag("GET", param_dag_id=READ_DAG)


_reader = require_reader()
app = FastAPI(title="ragops", description="ragops catalog status", dependencies=[Depends(_reader)])


@app.exception_handler(HTTPException)
async def _login_redirect(request: Request, exc: HTTPException):
    """An anonymous browser asking for a page goes to Airflow's login, and back here after it."""
    wants_html = "text/html" in request.headers.get("accept", "")
    if exc.status_code == 401 and wants_html and request.method == "GET":
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


def _status(limit: int = 20) -> dict:
    import sqlalchemy as sa

    from rag_ops.catalog import Catalog, documents
    from rag_ops.config import load_settings

    settings = load_settings()
    catalog = Catalog(settings.catalog_db_url)
    try:
        catalog.migrate()
        counts = catalog.counts()
        runs = catalog.last_runs(limit)
        from rag_ops.versions import describe

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
    """Catalog counts, failed documents and the last ``limit`` runs, as JSON."""
    return _status(limit)


@app.get("/", response_class=HTMLResponse)
def page() -> str:
    s = _status()
    esc = html.escape
    runs = "".join(
        "<tr>" + "".join(f"<td>{esc(str(r[k] if r[k] is not None else ''))}</td>" for k in r) + "</tr>" for r in s["runs"]
    )
    head = "".join(f"<th>{esc(k)}</th>" for k in (s["runs"][0] if s["runs"] else {}))
    failed = "".join(
        f"<tr><td>{esc(f['uri'])}</td><td>{esc(f['stage'] or '')}</td><td>{esc(f['reason'] or '')}</td></tr>"
        for f in s["failed_documents"]
    )
    versions = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v[k] if v[k] is not None else ''))}</td>" for k in v) + "</tr>" for v in s["versions"]
    )
    vhead = "".join(f"<th>{esc(k)}</th>" for k in (s["versions"][0] if s["versions"] else {}))
    c = s["counts"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>ragops</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}</style>
</head><body><h1>ragops — collection {esc(s['collection'])}</h1>
<p>{c['documents']} documents, {c['chunks']} chunks live; {c['failed']} failed; {c['deleted']} deleted.
Stores: {esc(', '.join(s['stores']))}. JSON: <a href="status">status</a>.</p>
<h2>Index versions</h2><table><tr>{vhead}</tr>{versions}</table>
<h2>Last runs</h2><table><tr>{head}</tr>{runs}</table>
<h2>Failed documents</h2><table><tr><th>uri</th><th>stage</th><th>reason</th></tr>{failed}</table>
<script>/* no external resources */</script></body></html>"""


class RagopsPlugin(AirflowPlugin):
    name = "ragops"
    fastapi_apps = [{"app": app, "url_prefix": "/ragops", "name": "ragops"}]
    external_views = [{"name": "ragops", "href": "/ragops/", "destination": "nav", "url_route": "ragops"}]


__all__ = ["RagopsPlugin", "app"]
