"""Two-process HF Trainer DDP (CPU, gloo): one TensorBoard run, each metric once per step, single-process values."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("tensorboard")

import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

sys.path.insert(0, str(Path(__file__).parent))  # _hf_ddp_script.py runs as a script too
from _hf_ddp_script import LAYERS, N_PROBE, SCHEDULE, analyses

import neuronmap as nm
from neuronmap._headline import tracker_metrics
from neuronmap.testing import tiny_bert, tiny_text_probe

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SCRIPT = Path(__file__).with_name("_hf_ddp_script.py")
# 32 examples, 2 ranks, batch 4: 4 optimizer steps per epoch; every_n_steps=3 plus each epoch's
# evaluation. Step 8 is the last evaluation and train end: it runs once.
EXPECTED_RUNS = [("step", 3, 0), ("validation_end", 4, 0), ("step", 6, 1), ("validation_end", 8, 1)]


def _launch(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TENSORBOARD_LOGGING_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(out)],
        capture_output=True, text=True, timeout=300, cwd=out, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "rank0.json").read_text()), json.loads((out / "rank1.json").read_text())


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar write in the log folder's event files, raw (duplicates kept), by tag."""
    written: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:  # the loader migrates simple_value to a scalar tensor
                if value.metadata.plugin_data.plugin_name == "scalars":
                    written[value.tag].append((event.step, float(tensor_util.make_ndarray(value.tensor))))
    return dict(written)


def _single_process_metrics(out: Path) -> dict[int, dict[str, float]]:
    """One process, the whole probe set, rank 0's weights at each run, in order (CKA drift is stateful)."""
    monitor = nm.NeuronMap(
        tiny_text_probe(n=N_PROBE), layers=LAYERS, analyses=analyses(), schedule=nm.Schedule(**SCHEDULE), reporters=[]
    )
    model = tiny_bert(num_labels=2)
    metrics = {}
    for _, step, epoch in EXPECTED_RUNS:
        model.load_state_dict(torch.load(out / f"weights-{step}.pt", weights_only=True))
        report = monitor.run(model, step=step, epoch=epoch)
        assert not report.failed
        metrics[step] = tracker_metrics(report)  # as trackers get them: a section per metric, a line per layer
    return metrics


def test_hf_ddp_two_ranks_log_once_to_one_tensorboard_run_with_single_process_values(tmp_path: Path) -> None:
    rank0, rank1 = _launch(tmp_path)

    # Both ranks trained the same model in step; the callback ran on the schedule on every rank.
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["global_step"] == rank1["global_step"] == 8
    assert rank0["param_checksum"] == rank1["param_checksum"]
    assert [(r["event"], r["step"], r["epoch"]) for r in rank0["runs"]] == EXPECTED_RUNS
    assert all(r["failed"] == {} for r in rank0["runs"])
    assert rank0["schedule_runs"] == rank1["schedule_runs"] == len(EXPECTED_RUNS)
    # Only the world process zero analysed and reported, into HF's own TensorBoard writer.
    assert rank0["history_steps"] == [s for _, s, _ in EXPECTED_RUNS]
    assert rank1["runs"] == [] and rank1["history_steps"] == [] and rank1["reporters"] == []
    assert rank0["reporters"] == ["TensorBoardReporter"]

    # One tracker run: HF's log folder, written by one process, holding HF's metrics and ours.
    log_dir = tmp_path / "tb"
    writers = {path.name.split(".")[-2] for path in log_dir.glob("events.out.tfevents.*")}
    assert len(writers) == 1, writers  # the pid in each event file name
    assert [p for p in tmp_path.rglob("events.out.tfevents.*") if p.parent != log_dir] == []
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("neuronmap-runs")] == [Path("eval/neuronmap-runs")]
    written = _scalars(log_dir)
    assert "train/loss" in written and "eval/loss" in written
    ours = {tag: values for tag, values in written.items() if tag.startswith("neuronmap/")}

    # Each metric once per scheduled step, equal to one process's run on the whole probe set.
    expected = _single_process_metrics(tmp_path)
    assert sorted(ours) == sorted(expected[8])
    assert {tag.split("/")[1] for tag in ours} == {"activation_stats", "cka", "row_order"}
    assert expected[3]["neuronmap/row_order/rows/bert.encoder.layer.1"] == N_PROBE
    for tag, values in ours.items():
        assert [step for step, _ in values] == [s for _, s, _ in EXPECTED_RUNS if tag in expected[s]], tag
        for step, value in values:
            want = expected[step][tag]
            # TensorBoard stores scalars as float32: 1e-6 relative is within its precision.
            assert value == pytest.approx(want, rel=1e-6, abs=1e-6, nan_ok=True), (step, tag)
            assert math.isnan(value) == math.isnan(want)

    # The bare evaluate() of the trained model: one local run folder, each metric once, at step 0.
    eval0, eval1 = rank0["evaluate_only"], rank1["evaluate_only"]
    assert eval0["eval_loss"] == eval1["eval_loss"]  # HF gathered the evaluation across ranks
    assert eval0["history_steps"] == [0] and eval1["history_steps"] == []
    assert eval0["reporters"] == ["LocalReporter"] and eval1["reporters"] == []
    (run_dir,) = (tmp_path / "eval" / "neuronmap-runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "FINISHED"
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert record["step"] == 0
    fresh = nm.NeuronMap(tiny_text_probe(n=N_PROBE), layers=LAYERS, analyses=analyses(), reporters=[])
    model = tiny_bert(num_labels=2)
    model.load_state_dict(torch.load(tmp_path / "weights-8.pt", weights_only=True))  # the final weights
    want = fresh.run(model, step=0).metrics
    assert sorted(record["metrics"]) == sorted(want)
    for key, value in want.items():
        assert record["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-6, nan_ok=True), key
