"""The dashboard in headless Chromium: runs list, a run page with findings and a plotly chart, offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _dom(url: str, tmp_path: Path, wait_ms: int = 15000) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,1600",
             f"--virtual-time-budget={wait_ms}", "--dump-dom", url]
    return subprocess.run([CHROMIUM, *flags], capture_output=True, text=True, timeout=120, check=True).stdout


def test_pages_need_a_token_and_serve_plotly_from_the_package(server, world) -> None:
    r = httpx.get(f"{server.url}/ui/runs/alpha", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
    assert httpx.get(f"{server.url}/ui/static/plotly.min.js").status_code == 401
    auth = {"Authorization": f"Bearer {world['read']}"}
    js = httpx.get(f"{server.url}/ui/static/plotly.min.js", headers=auth)
    assert js.status_code == 200 and len(js.content) > 1_000_000
    page = httpx.get(f"{server.url}/ui/runs/alpha", headers=auth)
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "cdn" not in page.text.lower() and "https://" not in page.text.split("<main>")[0]


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (/usr/bin/chromium)")
def test_runs_list_and_run_page_render_findings_and_an_interactive_chart(server, world, tmp_path) -> None:
    token = world["read"]
    runs = _dom(f"{server.url}/ui/login?next=%2Fui%2F#{token}", tmp_path)
    assert 'data-run="alpha"' in runs and 'data-run="beta"' in runs
    assert 'class="findings-count"' in runs
    page = _dom(f"{server.url}/ui/login?next=%2Fui%2Fruns%2Falpha#{token}", tmp_path)
    assert 'id="findings"' in page and 'class="finding severity-' in page
    assert "js-plotly-plot" in page and "main-svg" in page  # plotly drew an interactive chart
    assert 'data-metric="activation_stats/dead_fraction"' in page
    assert "heatmap" in page
