"""NeuronMapTrainerCallback in a real HF Trainer with a tiny BERT, a few steps each."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

import torch
from transformers import Trainer, TrainingArguments

import neuronmap as nm
from neuronmap._headline import tracker_metrics
from neuronmap.analyses.base import Analysis, AnalysisContext, AnalysisResult
from neuronmap.callbacks import NeuronMapTrainerCallback
from neuronmap.callbacks.huggingface import STATE_FILE
from neuronmap.errors import AnalysisFailedWarning
from neuronmap.probe import ProbeSet
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_bert, tiny_text_probe

pytestmark = pytest.mark.integration
LAYERS = ["bert.encoder.layer.*"]
KEY = "neuronmap/activation_stats/bert.encoder.layer.1/mean"


class _Dataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The probe set's token ids and labels as an HF training set."""

    def __init__(self, probe: ProbeSet) -> None:
        self.probe = probe

    def __len__(self) -> int:
        return len(self.probe)

    def __getitem__(self, i: int) -> dict[str, Any]:
        inputs = self.probe.inputs
        labels = self.probe.labels
        assert labels is not None
        return {"input_ids": inputs["input_ids"][i], "attention_mask": inputs["attention_mask"][i],
                "labels": int(labels[i])}


class _Raises(Analysis):
    name = "raises"

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        raise RuntimeError("deliberate analysis failure")


def _callback(**kwargs: Any) -> tuple[NeuronMapTrainerCallback, list[tuple[str | None, int, int | None]]]:
    kwargs.setdefault("analyses", [nm.ActivationStats()])
    callback = NeuronMapTrainerCallback(probe=tiny_text_probe(), layers=LAYERS, **kwargs)
    runs: list[tuple[str | None, int, int | None]] = []
    callback.monitor.add_listener(lambda report, model: runs.append((report.event, report.step, report.epoch)))
    return callback, runs


def _trainer(out: Path, callback: NeuronMapTrainerCallback, **overrides: Any) -> Trainer:
    kwargs: dict[str, Any] = dict(
        num_train_epochs=2,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        eval_strategy="epoch",
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    kwargs.update(overrides)
    data = _Dataset(tiny_text_probe())
    return Trainer(
        tiny_bert(num_labels=2), TrainingArguments(str(out), **kwargs), train_dataset=data, eval_dataset=data,
        callbacks=[callback],
    )


def test_metrics_reach_tensorboard_beside_the_trainers_own(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback, runs = _callback()
    _trainer(tmp_path, callback, report_to=["tensorboard"]).train()
    # 32 examples, batch 8: 4 steps per epoch; evaluation at each epoch end, train end at step 8 already ran.
    assert runs == [("validation_end", 4, 0), ("validation_end", 8, 1)]

    (log_dir,) = (tmp_path / "runs").iterdir()  # the folder HF's TensorBoardCallback opened
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "train/loss" in tags  # HF's own, in the same run
    # trackers chart a section per metric with a line per layer (the history keeps the full record)
    tracker_key = "neuronmap/activation_stats/std/bert.encoder.layer.1"
    logged = {e.step: e.value for e in events.Scalars(tracker_key)}
    expected = callback.monitor.history.series(KEY.replace("/mean", "/std"))
    assert sorted(logged) == [4, 8]
    assert [logged[s] for s in (4, 8)] == pytest.approx(expected.loc[[4, 8]].to_list(), rel=1e-6)
    neuronmap_tags = {t for t in tags if t.startswith("neuronmap/")}
    assert callback.monitor.last_report is not None
    assert neuronmap_tags == set(tracker_metrics(callback.monitor.last_report))


def test_evaluate_alone_runs_once_and_closes_the_run(tmp_path: Path) -> None:
    callback, runs = _callback()
    metrics = _trainer(tmp_path, callback).evaluate()
    assert "eval_loss" in metrics
    assert runs == [("validation_end", 0, 0)]
    (reporter,) = callback.monitor.reporters
    assert isinstance(reporter, LocalReporter)
    assert reporter.run_dir.parent == tmp_path / "neuronmap-runs"
    assert json.loads((reporter.run_dir / "run.json").read_text())["status"] == "FINISHED"
    assert (reporter.run_dir / "report.html").is_file()


def test_step_schedule_runs_and_a_failing_analysis_does_not_stop_training(tmp_path: Path) -> None:
    callback, runs = _callback(analyses=[_Raises(), nm.ActivationStats()], schedule=nm.Schedule(every_n_steps=3),
                               reporters=[])
    trainer = _trainer(tmp_path, callback)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert trainer.state.global_step == 8
    assert runs == [("step", 3, 0), ("validation_end", 4, 0), ("step", 6, 1), ("validation_end", 8, 1)]
    assert sum(issubclass(w.category, AnalysisFailedWarning) for w in caught) == 4
    assert set(callback.monitor.history.frame["analysis"]) == {"activation_stats"}
    model = trainer.model
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_resume_from_checkpoint_keeps_history(tmp_path: Path) -> None:
    first, _ = _callback(reporters=[])
    _trainer(tmp_path, first, num_train_epochs=1, save_strategy="epoch").train()
    assert (tmp_path / "checkpoint-4" / STATE_FILE).is_file()

    second, runs = _callback(reporters=[])
    _trainer(tmp_path, second, num_train_epochs=2, save_strategy="epoch").train(resume_from_checkpoint=True)
    assert runs == [("validation_end", 8, 1)]
    assert second.monitor.history.steps == [4, 8]
    before = first.monitor.history.series(KEY)
    assert second.monitor.history.series(KEY).loc[4] == pytest.approx(before.loc[4], abs=0)


def test_a_failing_gate_stops_training(tmp_path: Path) -> None:
    failing = [{"name": "impossible", "metric": KEY.replace("/mean", "/dead_fraction"), "max": -1.0}]
    callback, runs = _callback(gates=failing, stop_on_failure=True, schedule=nm.Schedule(every_n_steps=2, on=()))
    trainer = _trainer(tmp_path, callback, num_train_epochs=3, eval_strategy="no")
    trainer.train()
    # 32 examples / batch 8 = 4 steps per epoch, 12 in all; the gate fails at step 2 and stops there.
    assert [step for _, step, _ in runs] == [2]
    assert trainer.state.global_step == 2
