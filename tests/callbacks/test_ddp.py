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
from _ddp_script import N_PROBE, SCHEDULE, analyses

import neuronmap as nm
from neuronmap.testing import tiny_mlp, tiny_probe

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SCRIPT = Path(__file__).with_name("_ddp_script.py")
# 48 examples, 2 ranks, batch 8: 3 optimizer steps per epoch; every_n_steps=2 plus validation end.
# Step 6 is both a step run and the last validation end: it runs once.
EXPECTED_RUNS = [("step", 2, 0), ("validation_end", 3, 0), ("step", 4, 1), ("step", 6, 1)]


def _launch(out: Path, tracker: str) -> tuple[dict[str, Any], dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), tracker], capture_output=True, text=True, timeout=300, cwd=out
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
        return monitor.run(model, step=step).metrics


def test_ddp_two_ranks_log_once_on_rank_zero_with_single_process_values(tmp_path: Path) -> None:
    rank0, rank1 = _launch(tmp_path, "local")

    # The callback's runs, in order, on rank 0; a failing analysis did not stop training.
    assert [(r["event"], r["step"], r["epoch"]) for r in rank0["runs"]] == EXPECTED_RUNS
    assert all(set(r["failed"]) == {"raises"} for r in rank0["runs"])
    assert rank0["global_step"] == rank1["global_step"] == 6
    # Rank 1 ran every capture (its schedule advanced in step) but analysed and reported nothing.
    assert rank1["runs"] == [] and rank1["history_steps"] == [] and rank1["reporters"] == []
    assert rank0["schedule_runs"] == rank1["schedule_runs"] == len(EXPECTED_RUNS)

    # One tracker run; each scheduled step logged exactly once.
    (run_dir,) = (tmp_path / "root" / "neuronmap-runs").iterdir()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(line["event"], line["step"]) for line in lines] == [(e, s) for e, s, _ in EXPECTED_RUNS]

    for line in lines:
        expected = _single_process_metrics(tmp_path, line["step"])
        assert set(line["metrics"]) == set(expected)
        assert line["metrics"]["neuronmap/order_checksum/model/rows"] == N_PROBE
        for key, value in expected.items():
            assert line["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-6), (line["step"], key)
