"""The container image's install, entrypoint and healthcheck steps, run in a fresh virtual environment."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_image_steps_install_and_serve_in_a_fresh_venv(tmp_path, request) -> None:
    site = sysconfig.get_paths()["purelib"]  # dependencies from this environment: no network in tests
    # the NeuronMap wheel of unchanged sources is reused between runs (pytest's cache folder)
    store = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    cache = store.mkdir("neuronmap-image-wheels") if store is not None else tmp_path / "wheels"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "image_smoke.py"), "--workdir", str(tmp_path),
                           "--offline-site", site, "--wheel-cache", str(cache)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["healthy"] and report["runs_with_token"] == 200 and report["runs_without_token"] == 401
    assert (tmp_path / "venv" / "bin" / "neuronmap").exists()
    assert len(list(cache.glob("*/neuronmap-*.whl"))) == 1
