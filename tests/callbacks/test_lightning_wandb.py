"""NeuronMapCallback in a real Lightning Trainer with an offline WandbLogger: one W&B run, read back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("wandb")

import lightning.pytorch as L
import wandb
from lightning.pytorch.loggers import WandbLogger

sys.path.insert(0, str(Path(__file__).parents[1] / "reporters"))  # the W&B transaction-log reader
from _lit import lit_mlp, loader, trainer_kwargs
from test_wandb import _exit_code, _history, _records, _run_dir

import neuronmap as nm
from neuronmap._headline import history_key_of, tracker_metrics
from neuronmap.callbacks import NeuronMapCallback
from neuronmap.reporters import WandbReporter

pytestmark = pytest.mark.integration

# 32 examples, batch 8: 4 optimizer steps per epoch, 8 in 2 epochs; every_n_steps=3 plus each
# validation end. Step 8 is the last validation end and train end: it runs once.
EXPECTED_RUNS = [("step", 3, 0), ("validation_end", 4, 0), ("step", 6, 1), ("validation_end", 8, 1)]


def test_metrics_land_in_the_wandb_loggers_run_beside_lightnings_own(wandb_dir: Path, tmp_path: Path) -> None:
    callback = NeuronMapCallback(
        probe=nm.testing.tiny_probe(n=40), layers=["net.*"], analyses=[nm.ActivationStats(), nm.CKA()],
        schedule=nm.Schedule(every_n_steps=3),
    )
    runs: list[tuple[str | None, int, int | None]] = []
    callback.monitor.add_listener(lambda report, model: runs.append((report.event, report.step, report.epoch)))
    logger = WandbLogger(project="neuronmap-test", save_dir=str(wandb_dir), offline=True)
    trainer = L.Trainer(**trainer_kwargs(tmp_path / "root", logger=logger, callbacks=[callback], log_every_n_steps=1))
    try:
        trainer.fit(lit_mlp(seed=3), loader(32), loader(16))
        # bound to the logger's run; the local folder beside it keeps the default audit trail
        reporter, local = callback.monitor.reporters
        assert (local.run_dir / "audit.jsonl").is_file()  # type: ignore[attr-defined]
        assert isinstance(reporter, WandbReporter) and reporter.run is logger.experiment
        assert wandb.run is not None and wandb.run is logger.experiment  # the borrowed run is still open
        run_id = wandb.run.id
    finally:
        wandb.finish()
    assert trainer.global_step == 8
    assert runs == EXPECTED_RUNS
    (folder,) = (tmp_path / "root" / "neuronmap-runs").iterdir()  # only the default audit trail's evidence
    assert (folder / "audit.jsonl").is_file()

    # Exactly one W&B run, finished cleanly, holding Lightning's metrics and NeuronMap's.
    assert len(list((wandb_dir / "wandb").glob("*run-*"))) == 1
    run_dir = _run_dir(wandb_dir)
    assert run_dir.name.endswith(f"-{run_id}")
    (log,) = run_dir.glob("run-*.wandb")
    assert sum(r.WhichOneof("record_type") == "run" for r in _records(log)) == 1
    assert _exit_code(run_dir) == 0
    rows = _history(run_dir)
    # Lightning's own metrics, on its own axis (its count of batches stepped when it logs).
    assert len([r for r in rows if "train_loss" in r]) == 8  # log_every_n_steps=1
    assert len([r for r in rows if "val_loss" in r]) == 2
    assert all("trainer/global_step" in r for r in rows if "train_loss" in r or "val_loss" in r)

    # Each headline metric once per scheduled run, at trainer.global_step, with the monitor's values
    # (trackers chart a section per metric with a line per layer; the history keeps the full record).
    history = callback.monitor.history
    assert callback.monitor.last_report is not None
    tracker_keys = sorted(tracker_metrics(callback.monitor.last_report))
    assert any("/cka/" in k for k in tracker_keys) and any("/activation_stats/" in k for k in tracker_keys)
    for tracker_key in tracker_keys:
        key = history_key_of(tracker_key)
        logged = [(r["neuronmap/step"], r[tracker_key]) for r in rows if tracker_key in r]
        series = history.series(key)
        assert [step for step, _ in logged] == series.index.to_list(), key
        assert [value for _, value in logged] == pytest.approx(series.to_list(), rel=1e-12, nan_ok=True), key
    assert sorted({r["neuronmap/step"] for r in rows if "neuronmap/step" in r}) == [s for _, s, _ in EXPECTED_RUNS]
