"""What people open in a browser renders there: report.html, the HTML model card, and
NeuronMap's metrics in TensorBoard's and MLflow's own UIs (real servers on 127.0.0.1).

Uses Debian's headless Chromium when it is installed (skipped otherwise); the pages must be
self-contained, so the browser runs with networking features off.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _servers import MLflowServer, free_port

import neuronmap as nm
from neuronmap.cli import main
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp, tiny_probe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium")]


def _render(url: str, tmp_path: Path, *, wait_ms: int | None = None) -> tuple[str, Path]:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,1600",
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
    dom, shot = _render((run_dir / "report.html").as_uri(), tmp_path)
    assert "NeuronMap report: run" in dom and "FINISHED" in dom
    assert dom.count("data:image/png;base64,") >= 3
    assert shot.stat().st_size > 20_000


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
        dom, shot = _render(f"http://127.0.0.1:{port}/#timeseries", tmp_path, wait_ms=20000)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "neuronmap/activation_stats/net.0/dead_fraction" in dom
    cards = [int(n) for n in re.findall(r"(\d+) cards", dom)]
    assert cards and max(cards) >= len(tags)  # the neuronmap group: a card per scalar (and per figure)
    assert shot.stat().st_size > 50_000


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
    finally:
        server.stop()
    assert "neuronmap/activation_stats/net.0/dead_fraction" in dom
    listed = re.search(r"Metrics \((\d+)\)", dom)  # the run page's metrics table: 5 layers x 6 statistics
    assert listed is not None and int(listed.group(1)) == 30
    assert shot.stat().st_size > 50_000
