"""What people open in a browser renders there: report.html and the HTML model card.

Uses Debian's headless Chromium when it is installed (skipped otherwise); the pages must be
self-contained, so the browser runs with networking features off.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import neuronmap as nm
from neuronmap.cli import main
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp, tiny_probe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium")]


def _render(url: str, tmp_path: Path) -> tuple[str, Path]:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,1600",
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
