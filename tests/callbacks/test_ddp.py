"""Two-process Lightning DDP (CPU, gloo): one tracker run, each metric once per step, single-process values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

import torch

sys.path.insert(0, str(Path(__file__).parent))  # _ddp_script.py runs as a script too
from _ddp_script import N_PROBE, SCHEDULE, analyses

import neuronmap as nm
from neuronmap._headline import tracker_metrics
from neuronmap.testing import tiny_mlp, tiny_probe

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SCRIPT = Path(__file__).with_name("_ddp_script.py")
# 48 examples, 2 ranks, batch 8: 3 optimizer steps per epoch; every_n_steps=2 plus validation end.
# Step 6 is both a step run and the last validation end: it runs once.
EXPECTED_RUNS = [("step", 2, 0), ("validation_end", 3, 0), ("step", 4, 1), ("step", 6, 1)]


def _launch(out: Path, tracker: str, timeout: float = 300) -> tuple[dict[str, Any], dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), tracker], capture_output=True, text=True, timeout=timeout, cwd=out
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "rank0.json").read_text()), json.loads((out / "rank1.json").read_text())


def _single_process_metrics(out: Path, step: int) -> dict[str, float]:
    """The metrics one process computes on the whole probe set with rank 0's weights at ``step``."""
    model = tiny_mlp()
    model.load_state_dict(torch.load(out / f"weights-{step}.pt", weights_only=True))
    monitor = nm.NeuronMap(
        tiny_probe(n=N_PROBE), layers=["net.*"], analyses=analyses(), schedule=nm.Schedule(**SCHEDULE), reporters=[]
    )
    with pytest.warns(nm.errors.AnalysisFailedWarning):
        report = monitor.run(model, step=step)
    return tracker_metrics(report)  # as trackers get them: a section per metric, a line per layer


def test_ddp_two_ranks_log_once_to_one_mlflow_run_with_single_process_values(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    rank0, rank1 = _launch(tmp_path, "mlflow")

    # The callback's runs, in order, on rank 0; a failing analysis did not stop training.
    assert [(r["event"], r["step"], r["epoch"]) for r in rank0["runs"]] == EXPECTED_RUNS
    assert all(set(r["failed"]) == {"raises"} for r in rank0["runs"])
    assert rank0["global_step"] == rank1["global_step"] == 6
    # Rank 1 ran every capture (its schedule advanced in step) but analysed and reported nothing.
    assert rank1["runs"] == [] and rank1["history_steps"] == [] and rank1["reporters"] == []
    assert rank0["schedule_runs"] == rank1["schedule_runs"] == len(EXPECTED_RUNS)
    assert rank0["reporters"] == ["MLflowReporter"]

    # One tracker run, Lightning's and NeuronMap's metrics together; each metric once per scheduled step.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert "val_loss" in run.data.metrics
    keys = sorted(k for k in run.data.metrics if k.startswith("neuronmap/"))
    steps = [s for _, s, _ in EXPECTED_RUNS]
    logged = {key: client.get_metric_history(run.info.run_id, key) for key in keys}
    assert all(sorted(m.step for m in history) == steps for history in logged.values())
    assert not (tmp_path / "root" / "neuronmap-runs").exists()

    for step in steps:
        expected = _single_process_metrics(tmp_path, step)
        assert sorted(expected) == keys
        assert expected["neuronmap/order_checksum/rows/model"] == N_PROBE
        for key, value in expected.items():
            (got,) = [m.value for m in logged[key] if m.step == step]
            assert got == pytest.approx(value, rel=1e-6, abs=1e-6), (step, key)


def test_a_failing_gate_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    # Rank 0 alone evaluates the gate; the stop decision is reduced across ranks, so rank 1
    # stops too (without it, rank 1 would wait forever in the next all-reduce: the timeout).
    rank0, rank1 = _launch(tmp_path, "gate", timeout=240)
    assert [(r["event"], r["step"]) for r in rank0["runs"]] == [("step", 2)]
    assert rank0["global_step"] == rank1["global_step"] == 2
    assert rank0["schedule_runs"] == rank1["schedule_runs"] == 1
