"""What people open in a browser renders there: report.html, the HTML model card, and
NeuronMap's metrics in TensorBoard's and MLflow's own UIs (real servers on 127.0.0.1).

Uses Debian's headless Chromium when it is installed (skipped otherwise); the pages must be
self-contained, so the browser runs with networking features off.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from _servers import MLflowServer, free_port

import neuronmap as nm
from neuronmap.cli import main
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp, tiny_probe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Screenshots for the docs (docs/reporters.md shows them). A test run refreshes them only when asked
#: (``NEURONMAP_UPDATE_SCREENSHOTS=1 make test``), so ``make test`` leaves the checkout clean.
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _keep(shot: Path, name: str) -> None:
    if os.environ.get("NEURONMAP_UPDATE_SCREENSHOTS") != "1":
        return
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, DOCS_IMG / name)
pytestmark = [pytest.mark.integration, pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium")]


def _render(url: str, tmp_path: Path, *, wait_ms: int | None = None) -> tuple[str, Path]:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1600",
        *([f"--virtual-time-budget={wait_ms}"] if wait_ms else []),  # let a JavaScript app render
    ]
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    return dom.stdout, shot


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    monitor = nm.NeuronMap(tiny_probe(n=60), layers="net.*", analyses=[nm.ActivationStats(), nm.Probing(cv=3)],
                           reporters=[LocalReporter(root, run_name="run")])
    for step in (0, 10):
        monitor.run(tiny_mlp(seed=step), step=step)
    monitor.close()
    return root / "run"


def test_report_html_renders_with_figures(run_dir, tmp_path) -> None:
    dom, shot = _render((run_dir / "report.html").as_uri(), tmp_path, wait_ms=5000)
    assert "NeuronMap report: run" in dom and "FINISHED" in dom
    assert dom.count("data:image/png;base64,") >= 3
    # findings lead the page, above the first chart and the first figure
    findings = dom.index('id="findings"')
    assert findings < dom.index('class="plot') and findings < dom.index("data:image/png;base64,")
    assert "probing:" not in dom or "<b>probing</b>" in dom
    assert dom.count('class="main-svg"') >= 2  # plotly drew the charts offline (inlined plotly.js)
    assert shot.stat().st_size > 20_000
    _keep(shot, "report-html.png")


def test_html_model_card_renders(run_dir, tmp_path) -> None:
    out = tmp_path / "card.html"
    assert main(["card", str(run_dir), "--format", "html", "--out", str(out)]) == 0
    dom, shot = _render(out.as_uri(), tmp_path)
    assert "<script" not in dom.lower()
    assert "activation_stats" in dom or "probing" in dom
    assert shot.stat().st_size > 10_000


def test_tensorboard_ui_shows_the_neuronmap_scalars(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from neuronmap.reporters import TensorBoardReporter

    logs = tmp_path / "tb"
    monitor = nm.NeuronMap(tiny_probe(n=60), layers="net.*", analyses=[nm.ActivationStats()],
                           reporters=[TensorBoardReporter(logs / "run")])
    for step in (0, 10):
        monitor.run(tiny_mlp(seed=step), step=step)
    monitor.close()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logs), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        tags: dict[str, object] = {}
        deadline = time.monotonic() + 60
        while not tags and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.load(r).get("run", {})
            except OSError:
                time.sleep(0.5)
        assert tags, "TensorBoard did not list the run's scalars within 60 s"
        assert "neuronmap/activation_stats/std/net.0" in tags  # tracker layout: <analysis>/<metric>/<layer>
        assert not any(t.endswith(("_p", "_p_adj", "_ci_low")) for t in tags)  # statistics stay in the record
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/custom_scalars/layout", timeout=10) as r:
            layout = json.load(r)
        charts = {c["title"]: c["multiline"]["tag"] for cat in layout["category"] for c in cat["chart"]}
        assert "std" in charts, sorted(charts)
        query = urllib.parse.urlencode({"run": "run", "tag": charts["std"][0]})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/custom_scalars/scalars?{query}",
                                    timeout=10) as r:
            lines = json.load(r)["tag_to_events"]
        assert sorted(lines) == [f"neuronmap/activation_stats/std/net.{i}" for i in range(5)]  # a line per layer
        dom, shot = _render(f"http://127.0.0.1:{port}/#custom_scalars", tmp_path, wait_ms=20000)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "vz-line-chart" in dom  # the dashboard drew its charts (their titles live in shadow DOM)
    assert shot.stat().st_size > 30_000
    _keep(shot, "tensorboard-custom-scalars.png")


def test_mlflow_ui_shows_the_neuronmap_metrics_of_a_run(tmp_path) -> None:
    pytest.importorskip("mlflow")
    from neuronmap.reporters import MLflowReporter

    server = MLflowServer(tmp_path / "mlflow")
    server.start()
    try:
        reporter = MLflowReporter(tracking_uri=server.uri, experiment_name="browser")
        monitor = nm.NeuronMap(tiny_probe(n=60), layers="net.*", analyses=[nm.ActivationStats()], reporters=[reporter])
        for step in (0, 10):
            monitor.run(tiny_mlp(seed=step), step=step)
        monitor.close()
        run = reporter.run_id
        experiment = reporter.client.get_run(run).info.experiment_id
        dom, shot = _render(f"{server.uri}/#/experiments/{experiment}/runs/{run}", tmp_path, wait_ms=20000)
        charts, _ = _render(f"{server.uri}/#/experiments/{experiment}/runs/{run}/model-metrics",
                            tmp_path / "charts", wait_ms=20000)
        tags = reporter.client.get_run(run).data.tags
    finally:
        server.stop()
    assert "NeuronMap findings" in tags["mlflow.note.content"] and "NeuronMap findings" in dom  # the description
    assert tags["neuronmap.key_layout"] == "analysis/metric/layer"
    assert "neuronmap/activation_stats/std/net.0" in dom
    listed = re.search(r"Metrics \((\d+)\)", dom)  # headline scalars: 5 layers x 4 health metrics
    assert listed is not None and int(listed.group(1)) == 20, listed
    # chart sections are named by metric (the prefix before the last '/'), not by layer
    assert "neuronmap/activation_stats/std" in charts and "neuronmap/activation_stats/net.0" not in charts
    assert shot.stat().st_size > 50_000
    _keep(shot, "mlflow-run.png")
