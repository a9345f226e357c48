"""The ragops page in a real browser (Debian's chromium, driven through its chromedriver by
Selenium; nothing downloaded): Airflow started by ``make airflow``'s script, data made with the
``ragops`` CLI in the same data dir (an ingest with a quarantined file, drift checks, a recall
scoring), then an anonymous browser is sent to the login page, and a browser that logs in
through Airflow's login form opens the ragops entry of the navigation and finds every chart
drawn with data points. Screenshots go to the test's folder; their paths are printed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.cluster import document, wait_for
from tests.servers import terminal_line

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHARTS = ("versions", "runs", "encoding", "speed", "recall-0", "drift-auc", "drift-p", "drift-centroid", "quarantine")


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def ragops(args: list[str], root: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPS_") or k == "RAGOPS_MODEL_CACHE_DIR"}
    env.update(RAGOPS_DATA_DIR=str(root / "data"), RAGOPS_SOURCE=str(root / "src"), RAGOPS_DRIFT_MIN_SAMPLE="10",
               RAGOPS_DRIFT_REFERENCE_SIZE="40", **extra)
    out = subprocess.run([str(Path(sys.executable).parent / "ragops"), *args, "--json"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
def test_ragops_page_in_the_airflow_ui_in_a_browser(standalone, tmp_path, request):
    from selenium.webdriver.common.by import By

    api, _, root = standalone
    src = root / "src"
    src.mkdir(exist_ok=True)
    for i in range(40):
        (src / f"proc-{i:03d}.txt").write_text(document(i))
    (src / "scan.pdf").write_bytes(b"%PDF-1.4 truncated")
    first = ragops(["ingest"], root)
    ragops(["drift"], root)  # takes the reference sample
    for i in range(40, 80):
        (src / f"proc-{i:03d}.txt").write_text(document(i, topic_seed=1))
    ragops(["ingest"], root)
    drift = ragops(["drift"], root)
    ragops(["eval", "--synthetic", "-n", "20"], root)
    assert first["failed"] == 1 and drift  # the PDF is quarantined; the second check has a sample

    shots = []

    def shot(driver, name: str) -> None:
        path = tmp_path / f"{name}.png"
        driver.save_screenshot(str(path))
        shots.append(path)

    anonymous = browser(tmp_path / "profile-anonymous")
    try:
        anonymous.get(f"{api}/ragops/")
        wait_for(lambda: "/auth/login" in anonymous.current_url, "the login page", 30)
        shot(anonymous, "anonymous-redirected-to-login")
        for route in ("/ragops/api/runs", "/ragops/status", "/ragops/data-docs/index.html"):
            status = anonymous.execute_script(
                "return fetch(arguments[0], {headers: {Accept: 'application/json'}}).then(r => r.status)", route)
            assert status == 401, (route, status)
        assert "proc-000" not in anonymous.page_source and "scan.pdf" not in anonymous.page_source
    finally:
        anonymous.quit()

    user = browser(tmp_path / "profile-user")
    try:
        user.get(f"{api}/auth/login")
        wait_for(lambda: user.find_elements(By.NAME, "username"), "the login form", 60)
        user.find_element(By.NAME, "username").send_keys("admin")
        user.find_element(By.NAME, "password").send_keys("test-pw")
        user.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(lambda: "/auth/login" not in user.current_url, "the login to finish", 60)
        entry = wait_for(lambda: user.find_elements(By.XPATH, "//a[.//*[normalize-space(text())='ragops']]"),
                         "the ragops entry in the navigation", 60)[0]
        entry.click()
        frame = wait_for(lambda: user.find_elements(By.CSS_SELECTOR, "iframe[src*='/ragops/']"), "the ragops page", 60)[0]
        user.switch_to.frame(frame)
        wait_for(lambda: user.find_elements(By.CSS_SELECTOR, "svg.chart"), "the charts", 60)
        assert not user.find_elements(By.CSS_SELECTOR, ".empty"), [e.text for e in user.find_elements(By.CSS_SELECTOR, ".empty")]
        drawn = {}
        for chart in CHARTS:
            svg = user.find_element(By.CSS_SELECTOR, f"svg.chart[data-chart='{chart}']")
            drawn[chart] = len(svg.find_elements(By.CSS_SELECTOR, ".pt, .bar"))
            path = tmp_path / f"chart-{chart}.png"
            user.execute_script("arguments[0].scrollIntoView({block: 'center'})", svg)
            svg.screenshot(str(path))
            shots.append(path)
        assert all(n > 0 for n in drawn.values()), drawn
        # the JSON behind the charts, with the browser's own login (the cookie)
        runs = user.execute_script("return fetch('/ragops/api/runs').then(r => r.json())")
        assert [r["new"] for r in runs["runs"]] == [40, 40]
        docs = user.execute_script("return fetch('/ragops/data-docs/index.html').then(r => r.status)")
        assert docs == 200
        user.switch_to.default_content()
        shot(user, "ragops-page-in-airflow")
        terminal_line(request.config, "ragops page charts (points or bars each): "
                      + ", ".join(f"{k} {v}" for k, v in drawn.items()))
    finally:
        user.quit()
    for path in shots:
        terminal_line(request.config, f"screenshot: {path}")
