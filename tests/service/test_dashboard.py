"""The dashboard in headless Chromium: runs list, a run page, compare and jobs, offline.

One browser serves the module (tests/service/_browser.py drives it over the DevTools protocol),
and each test waits for what a user would see: rows, findings, plotly's rendered SVG, a job
that was submitted through the form finishing.
"""

from __future__ import annotations

import json

import httpx
import pytest
from _browser import CHROMIUM, Browser

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (/usr/bin/chromium)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


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


@needs_chromium
def test_runs_list_and_run_page_render_findings_and_an_interactive_chart(server, world, browser) -> None:
    browser.login(server.url, world["read"], "/ui/")
    browser.wait_for("document.querySelector('tr[data-run=\"beta\"]')")
    runs = browser.html()
    assert 'data-run="alpha"' in runs and 'class="findings-count"' in runs
    browser.goto(f"{server.url}/ui/runs/alpha")
    browser.wait_for("document.querySelector('#charts .js-plotly-plot .main-svg') "
                     "&& document.querySelector('#heatmaps .js-plotly-plot .main-svg')")
    page = browser.html()
    assert 'id="findings"' in page and 'class="finding severity-' in page
    assert 'data-metric="activation_stats/dead_fraction"' in page
    assert not browser.errors, browser.errors


@needs_chromium
def test_compare_page_shows_deltas_and_the_cka_heatmap(server, world, browser, reader) -> None:
    browser.login(server.url, world["read"], "/ui/compare?a=alpha&b=beta")
    browser.wait_for("document.querySelectorAll('#deltas tbody tr').length > 0 "
                     "&& document.querySelector('#cka .main-svg')")
    assert browser.evaluate("[document.querySelector('select[name=a]').value, "
                            "document.querySelector('select[name=b]').value]") == ["alpha", "beta"]
    rows = browser.evaluate("[...document.querySelectorAll('#deltas tbody tr')]"
                            ".map(tr => [...tr.children].map(td => td.textContent))")
    api = {m["key"]: m for m in reader.compare("alpha", "beta")["metrics"]}
    assert [r[0] for r in rows] == list(api)
    for key, a, b, delta in rows:
        for shown, value in ((a, api[key]["a"]), (b, api[key]["b"]), (delta, api[key]["delta"])):
            assert shown == "n/a" if value is None else float(shown) == pytest.approx(value, rel=1e-3, abs=1e-12)
    assert "linear CKA" in browser.html()


@needs_chromium
def test_jobs_page_submits_a_job_that_a_write_token_may_run(server, world, browser) -> None:
    spec = "activations: mlp-acts.npz\nprobe: {npz: mlp-probe.npz}\nanalyses: [activation_stats]\n"
    submit = (f"document.getElementById('job-spec').value = {json.dumps(spec)};"
              "document.getElementById('job-run-name').value = 'ui-job';"
              "document.querySelector('#job-form button[type=submit]').click(); true")
    browser.login(server.url, world["read"], "/ui/jobs")
    browser.evaluate(submit)
    refused = browser.wait_for("document.getElementById('job-message').textContent")
    assert "needs a token with scope 'write'" in refused
    browser.login(server.url, world["write"], "/ui/jobs")
    browser.evaluate(submit)
    queued = browser.wait_for("document.getElementById('job-message').textContent")
    assert queued.startswith("Job ") and queued.endswith(" queued."), queued
    job_id = queued.split()[1]
    # the page reloads itself while a job is pending
    browser.wait_for(f"document.querySelector('tr[data-job=\"{job_id}\"] .job-status')?.textContent === 'succeeded'",
                     timeout=120)
    assert browser.evaluate(f"document.querySelector('tr[data-job=\"{job_id}\"] progress').value") == 1
    assert browser.evaluate("document.querySelector('a[href=\"/ui/runs/ui-job\"]') !== null")
