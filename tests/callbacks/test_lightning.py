"""NeuronMapCallback in real Lightning Trainers with a tiny model, a few steps each."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as L

sys.path.insert(0, str(Path(__file__).parent))  # the helpers shared with _ddp_script.py
from _lit import lit_mlp, loader, trainer_kwargs

import neuronmap as nm
from neuronmap.analyses.base import Analysis, AnalysisContext, AnalysisResult
from neuronmap.callbacks import NeuronMapCallback
from neuronmap.errors import AnalysisFailedWarning, InvalidParameterError
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_probe

pytestmark = pytest.mark.integration


class _Raises(Analysis):
    name = "raises"

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        raise RuntimeError("deliberate analysis failure")


def _callback(**kwargs: object) -> tuple[NeuronMapCallback, list[tuple[str | None, int, int | None]]]:
    kwargs.setdefault("analyses", [nm.ActivationStats()])
    callback = NeuronMapCallback(probe=tiny_probe(), layers=["net.*"], **kwargs)  # type: ignore[arg-type]
    runs: list[tuple[str | None, int, int | None]] = []
    callback.monitor.add_listener(lambda report, model: runs.append((report.event, report.step, report.epoch)))
    return callback, runs


def _fit(callback: NeuronMapCallback, root: Path, **overrides: object) -> L.LightningModule:
    model = lit_mlp()
    trainer = L.Trainer(callbacks=[callback], **trainer_kwargs(root, **overrides))
    trainer.fit(model, loader(), loader(16))
    return model


def test_runs_follow_the_schedule_and_no_hook_survives_between_runs(tmp_path: Path) -> None:
    schedule = nm.Schedule(every_n_steps=3, on=("train_start", "validation_end", "train_end"))
    callback, runs = _callback(schedule=schedule, reporters=[])
    model = _fit(callback, tmp_path)
    # 4 optimizer steps per epoch, 2 epochs; the sanity-check validation is skipped, and the
    # train end at step 8 is not run again after the validation at step 8.
    assert runs == [
        ("train_start", 0, 0),
        ("step", 3, 0),
        ("validation_end", 4, 0),
        ("step", 6, 1),
        ("validation_end", 8, 1),
    ]
    assert model.hooks_seen_in_training == [0] * 8
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert callback.monitor.history.steps == [0, 3, 4, 6, 8]


class _HookRecorder(L.profilers.PassThroughProfiler):
    """Lightning names every callback hook it dispatches to the profiler: ``[Callback]<key>.<hook>``."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[str] = []

    def start(self, action_name: str) -> None:
        self.actions.append(action_name)


def _dispatched(recorder: _HookRecorder, callback: NeuronMapCallback) -> list[str]:
    prefix = f"[Callback]{callback.state_key}."
    return [a[len(prefix) :] for a in recorder.actions if a.startswith(prefix)]


_BATCH_HOOKS = {"on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
                "on_before_zero_grad", "on_validation_batch_start", "on_validation_batch_end"}


@pytest.mark.parametrize("every_n_steps", [None, 3])
def test_between_runs_lightning_dispatches_at_most_one_hook_per_step(tmp_path: Path, every_n_steps: int | None) -> None:
    on = ("validation_end", "train_end")
    callback, runs = _callback(schedule=nm.Schedule(every_n_steps=every_n_steps, on=on), reporters=[])
    recorder = _HookRecorder()
    _fit(callback, tmp_path, profiler=recorder)
    hooks = _dispatched(recorder, callback)
    assert not _BATCH_HOOKS & set(hooks)  # shadowed: Lightning skips a hook that is not callable
    assert hooks.count("on_train_batch_end") == (8 if every_n_steps else 0)
    assert {"setup", "on_train_start", "on_validation_end", "on_train_end", "teardown"} <= set(hooks)
    expected = [("validation_end", 4, 0), ("validation_end", 8, 1)]
    assert runs == ([("step", 3, 0), *expected[:1], ("step", 6, 1), *expected[1:]] if every_n_steps else expected)


def test_a_subclass_keeps_the_per_batch_hooks_it_overrides(tmp_path: Path) -> None:
    class Counting(NeuronMapCallback):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)
            self.backwards = 0

        def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: object) -> None:
            self.backwards += 1

    callback = Counting(probe=tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
    _fit(callback, tmp_path)
    assert callback.backwards == 8
    assert callback.on_after_backward is None and callback.monitor.history.steps == [4, 8]


def test_without_loggers_results_and_model_card_go_to_a_local_run_under_default_root_dir(tmp_path: Path) -> None:
    callback, _ = _callback(model_card={"model_details": {"name": "lit-mlp"}})
    _fit(callback, tmp_path)
    (reporter,) = callback.monitor.reporters
    assert isinstance(reporter, LocalReporter)
    assert reporter.run_dir.parent == tmp_path / "neuronmap-runs"
    lines = [json.loads(line) for line in (reporter.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["event"]) for line in lines] == [(4, "validation_end"), (8, "validation_end")]
    assert json.loads((reporter.run_dir / "run.json").read_text())["status"] == "FINISHED"
    assert (reporter.run_dir / "report.html").is_file()  # rendered once, at close
    card = (reporter.run_dir / "texts" / "model_card.md").read_text()
    assert "lit-mlp" in card and "| activation_stats | net.0 | dead_fraction |" in card


def test_resume_from_checkpoint_keeps_history_schedule_and_run_folder(tmp_path: Path) -> None:
    full, _ = _callback()
    L.Trainer(callbacks=[full], **trainer_kwargs(tmp_path / "full")).fit(lit_mlp(), loader(), loader(16))

    ckpt = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first, _ = _callback()
    kwargs = trainer_kwargs(tmp_path / "resumed", max_epochs=1, enable_checkpointing=True)
    L.Trainer(callbacks=[first, ckpt], **kwargs).fit(lit_mlp(), loader(), loader(16))

    second, second_runs = _callback()
    kwargs = trainer_kwargs(tmp_path / "resumed", max_epochs=2, enable_checkpointing=True)
    trainer = L.Trainer(callbacks=[second, L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt")], **kwargs)
    trainer.fit(lit_mlp(), loader(), loader(16), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))

    assert second_runs == [("validation_end", 8, 1)]  # step 4 is not run again
    assert second.monitor.history.steps == [4, 8] == full.monitor.history.steps
    assert second.monitor.schedule.state.runs == 2
    resumed = second.monitor.history.frame.sort_values(["step", "key"])["value"].to_numpy()
    uninterrupted = full.monitor.history.frame.sort_values(["step", "key"])["value"].to_numpy()
    assert resumed == pytest.approx(uninterrupted, abs=1e-6, nan_ok=True)
    # The local run folder of the first part is appended to, not replaced.
    (reporter,) = second.monitor.reporters
    assert isinstance(reporter, LocalReporter)
    assert reporter.run_dir == first.monitor.reporters[0].run_dir  # type: ignore[attr-defined]
    steps = [json.loads(line)["step"] for line in (reporter.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8]


def test_a_failing_analysis_is_recorded_and_training_goes_on(tmp_path: Path) -> None:
    callback, runs = _callback(analyses=[_Raises(), nm.ActivationStats()], reporters=[])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = L.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path))
        trainer.fit(lit_mlp(), loader(), loader(16))
    assert trainer.current_epoch == 2 and trainer.global_step == 8
    assert [r[1] for r in runs] == [4, 8]
    failures = [w for w in caught if issubclass(w.category, AnalysisFailedWarning)]
    assert len(failures) == 2 and "deliberate analysis failure" in str(failures[0].message)
    frame = callback.monitor.history.frame
    assert set(frame["analysis"]) == {"activation_stats"}


def test_works_in_a_pytorch_lightning_trainer_too(tmp_path: Path) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    callback, runs = _callback(reporters=[])
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path))
    trainer.fit(lit_mlp("pytorch_lightning"), loader(), loader(16))
    assert runs == [("validation_end", 4, 0), ("validation_end", 8, 1)]


def test_validate_alone_runs_once(tmp_path: Path) -> None:
    callback, runs = _callback(reporters=[])
    L.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path)).validate(lit_mlp(), loader(16), verbose=False)
    assert runs == [("validation_end", 0, 0)]


def test_arguments_are_checked_with_helpful_messages() -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers="net.*", reporters=[])
    with pytest.raises(InvalidParameterError, match=r"either a NeuronMap or NeuronMap's keyword arguments, not both"):
        NeuronMapCallback(monitor, layers="net.*")
    with pytest.raises(InvalidParameterError,
                       match=r"needs a NeuronMap or at least the keywords probe= and layers=; missing \['layers'\]"):
        NeuronMapCallback(probe=tiny_probe())
    with pytest.raises(InvalidParameterError, match=r"first argument must be a neuronmap.NeuronMap; got str"):
        NeuronMapCallback("net.*")  # type: ignore[arg-type]
    named = NeuronMapCallback(nm.NeuronMap(tiny_probe(), layers="net.*", name="other"))
    assert NeuronMapCallback(monitor).state_key != named.state_key


def test_mlflow_logger_run_holds_neuronmap_metrics_beside_lightnings_own(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="lit", tracking_uri=uri, artifact_location=(tmp_path / "art").as_uri())
    callback, _ = _callback()
    L.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, logger=logger)).fit(lit_mlp(), loader(), loader(16))

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lit").experiment_id])
    assert run.info.run_id == logger.run_id
    assert "val_loss" in run.data.metrics  # Lightning's own
    key = "neuronmap/activation_stats/sparsity/net.1"  # tracker layout: <analysis>/<metric>/<layer>
    history = client.get_metric_history(run.info.run_id, key)
    assert [m.step for m in history] == [4, 8]
    expected = callback.monitor.history.series("neuronmap/activation_stats/net.1/sparsity")
    assert [m.value for m in history] == pytest.approx(expected.loc[[4, 8]].to_list(), abs=1e-12)
    # a tracker was found: the local folder beside it holds only what the default audit trail hashes
    (local,) = (tmp_path / "neuronmap-runs").iterdir()
    from neuronmap.compliance.audit import verify

    assert verify(local).verified


def test_gates_are_logged_and_a_failing_gate_stops_training_and_runs_are_audited(tmp_path: Path) -> None:
    from neuronmap.compliance.audit import verify

    failing = [{"name": "no-dead-units", "metric": "neuronmap/activation_stats/net.1/dead_fraction", "max": -1.0}]
    callback, runs = _callback(gates=failing, stop_on_failure=True, audit=True)
    _fit(callback, tmp_path, max_epochs=3)
    # The gate fails at the first validation (step 4): training stops there instead of after 3 epochs.
    assert [step for _, step, _ in runs] == [4]
    (reporter,) = callback.monitor.reporters
    lines = [json.loads(line) for line in (reporter.run_dir / "metrics.jsonl").read_text().splitlines()]
    gate_keys = [k for line in lines for k in line["metrics"] if k.startswith("neuronmap/gates/")]
    assert gate_keys and all(line["metrics"].get(k, 0.0) == 0.0 for line in lines for k in gate_keys)
    result = verify(reporter.run_dir / "audit.jsonl")
    assert result.ok and result.entries >= 1


def test_passing_gates_let_training_finish(tmp_path: Path) -> None:
    passing = [{"metric": "neuronmap/activation_stats/*/nonfinite_fraction", "max": 0.0}]
    callback, runs = _callback(gates=passing, stop_on_failure=True)
    _fit(callback, tmp_path)
    assert [step for _, step, _ in runs] == [4, 8]
