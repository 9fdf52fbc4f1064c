"""Shared fixtures: seeded RNGs, offline trackers and a non-interactive matplotlib."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _isolate_mlflow_globals():
    """Undo process-wide MLflow state a test leaves behind.

    Lightning's ``MLFlowLogger`` calls ``mlflow.set_tracking_uri``, which also sets the
    ``MLFLOW_TRACKING_URI`` environment variable; without this, a later test that relies on the
    default (or on its own server) would log into an earlier test's store.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(before)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline W&B with every folder it writes (runs, cache, artifacts, config) in ``tmp_path``.

    W&B reads these variables once per process, so tests also pass the returned folder as
    ``dir=`` to each run.
    """
    pytest.importorskip("wandb")
    for var, sub in (("WANDB_DIR", "runs"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                     ("WANDB_CONFIG_DIR", "config"), ("WANDB_ARTIFACT_DIR", "artifacts")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path / "runs"
