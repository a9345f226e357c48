"""The ragops page in a running Airflow (``make airflow``'s script): listed as a plugin, and every
route answers only a logged-in user, through Airflow's own auth (API token or the UI's cookie)."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.slow

ROUTES = ("/ragops/", "/ragops/status", "/ragops/api", "/ragops/api/runs", "/ragops/api/recall",
          "/ragops/data-docs/index.html")


def test_plugin_is_loaded_and_every_route_requires_login(standalone, request):
    from tests.servers import terminal_line

    api, http, _ = standalone
    plugins = http.get(f"{api}/api/v2/plugins", timeout=10).json()
    ragops = [p for p in plugins["plugins"] if p["name"] == "ragops"]
    assert ragops, plugins
    assert ragops[0]["fastapi_apps"][0]["url_prefix"] == "/ragops"
    assert any(v["href"] == "/ragops/" for v in ragops[0]["external_views"])

    anonymous = requests.Session()
    assert anonymous.get(f"{api}/api/v2/dags", timeout=10).status_code == 401  # Airflow's own API
    for route in ROUTES:
        r = anonymous.get(f"{api}{route}", headers={"Accept": "application/json"}, allow_redirects=False, timeout=10)
        assert r.status_code == 401, (route, r.status_code, r.text[:200])
        assert "documents" not in r.text
        forged = anonymous.get(f"{api}{route}", headers={"Authorization": "Bearer forged.jwt.token"},
                               allow_redirects=False, timeout=10)
        assert forged.status_code in (401, 403), (route, forged.status_code)
    # a browser without a session is sent to Airflow's login page, and back afterwards
    page = anonymous.get(f"{api}/ragops/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=10)
    assert page.status_code == 303 and "/auth/login" in page.headers["location"]
    assert "next=" in page.headers["location"] and "ragops" in page.headers["location"]

    # logged in: the API token, and the cookie the UI keeps after its login
    codes = {}
    for route in ROUTES:
        anon = anonymous.get(f"{api}{route}", headers={"Accept": "application/json"}, allow_redirects=False, timeout=10)
        user = http.get(f"{api}{route}", allow_redirects=False, timeout=30)
        codes[route] = (anon.status_code, user.status_code)
    # nothing ingested in this Airflow: the Data Docs site does not exist yet
    assert codes == {**{r: (401, 200) for r in ROUTES}, "/ragops/data-docs/index.html": (401, 404)}, codes
    assert http.get(f"{api}/ragops/api/nope", timeout=30).status_code == 404
    escape = http.get(f"{api}/ragops/data-docs/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", timeout=30)
    assert escape.status_code == 404 and "root:" not in escape.text  # no path out of the Data Docs folder
    terminal_line(request.config, "ragops routes (anonymous, logged in): "
                  + ", ".join(f"{r} {a}/{u}" for r, (a, u) in codes.items()) + "; /ragops/ as a browser page: 303 to login")
    status = http.get(f"{api}/ragops/status", timeout=30)
    assert status.status_code == 200 and "counts" in status.json()
    assert http.get(f"{api}/ragops/", timeout=30).status_code == 200
    token = http.headers["Authorization"].split(" ", 1)[1]
    browser = requests.Session()
    browser.cookies.set("_token", token)
    html = browser.get(f"{api}/ragops/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert html.status_code == 200 and "<h1>ragops" in html.text
