"""The ragops page in a running Airflow (``make airflow``'s script): listed as a plugin, and every
route answers only a logged-in user, through Airflow's own auth (API token or the UI's cookie)."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.slow

ROUTES = ("/ragops/", "/ragops/status")


def test_plugin_is_loaded_and_every_route_requires_login(standalone):
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
    status = http.get(f"{api}/ragops/status", timeout=30)
    assert status.status_code == 200 and "counts" in status.json()
    assert http.get(f"{api}/ragops/", timeout=30).status_code == 200
    token = http.headers["Authorization"].split(" ", 1)[1]
    browser = requests.Session()
    browser.cookies.set("_token", token)
    html = browser.get(f"{api}/ragops/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert html.status_code == 200 and "<h1>ragops" in html.text
