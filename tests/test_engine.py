from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch

import neuronmap as nm
from neuronmap.analyses.base import (
    Analysis,
    AnalysisResult,
    MetricSet,
    available_analyses,
    get_analysis,
)
from neuronmap.errors import AnalysisError, AnalysisFailedWarning, InvalidParameterError
from neuronmap.reporters import LocalReporter
from neuronmap.results import History, split_key
from neuronmap.testing import tiny_mlp, tiny_probe


class _Raises(Analysis):
    name = "raises"

    def run(self, ctx):
        raise ValueError("deliberate failure")


class _Counts(Analysis):
    name = "counts"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def run(self, ctx):
        self.calls += 1
        m = MetricSet()
        for layer, x in self.layer_items(ctx):
            m.add(layer, "n", len(x), ci=(0, len(x)), p=0.5, p_adj=1.0)
        return AnalysisResult(self.name, metrics=m)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_run_produces_stable_keys_and_statistic_siblings() -> None:
    monitor = nm.NeuronMap(tiny_probe(n=16), layers=["net.0", "net.2"], analyses=[_Counts()], reporters=[])
    report = monitor.run(tiny_mlp(), step=7, epoch=1, event="validation_end")
    assert report.metrics["neuronmap/counts/net.0/n"] == 16
    assert report.metrics["neuronmap/counts/net.0/n_ci_high"] == 16
    assert {"neuronmap/counts/net.2/n_p", "neuronmap/counts/net.2/n_p_adj"} <= set(report.metrics)
    assert split_key("neuronmap/counts/net.0/n") == ("counts", "net.0", "n")
    frame = monitor.history.frame
    assert set(frame.columns) == {"step", "epoch", "event", "analysis", "layer", "metric", "value", "key"}
    assert set(frame["step"]) == {7}
    assert json.loads(report.to_json())["step"] == 7
    assert "counts" in report._repr_html_()


def test_activation_stats_known_answers() -> None:
    # A probe whose first layer is all-zero after ReLU on half its units: a planted dead unit.
    model = tiny_mlp()
    with torch.no_grad():
        model.net[0].weight[:8] = 0.0
        model.net[0].bias[:8] = -1.0
    monitor = nm.NeuronMap(tiny_probe(n=40), layers=["net.1"], analyses=[nm.ActivationStats()], reporters=[])
    m = monitor.run(model, step=0).metrics
    assert m["neuronmap/activation_stats/net.1/dead_fraction"] == pytest.approx(0.5, abs=0.13)
    assert m["neuronmap/activation_stats/net.1/dead_fraction"] >= 0.5
    assert m["neuronmap/activation_stats/net.1/nonfinite_fraction"] == 0.0
    assert 1.0 <= m["neuronmap/activation_stats/net.1/effective_rank"] <= 8.0


def test_participation_ratio_known_values() -> None:
    from neuronmap.metrics.neurons import participation_ratio

    rng = np.random.default_rng(0)
    iso = rng.standard_normal((20000, 5))
    assert participation_ratio(iso) == pytest.approx(5.0, rel=0.02)
    rank_one = np.outer(rng.standard_normal(100), rng.standard_normal(7))
    assert participation_ratio(rank_one) == pytest.approx(1.0, abs=1e-9)


def test_failing_analysis_is_recorded_and_training_goes_on() -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers="net.0", analyses=[_Raises(), nm.ActivationStats()], reporters=[])
    with pytest.warns(AnalysisFailedWarning, match="analysis 'raises' failed at step 3"):
        report = monitor.run(tiny_mlp(), step=3)
    assert report.results["raises"].status == "failed"
    assert "deliberate failure" in report.failed["raises"]
    assert report.results["activation_stats"].status == "ok"


def test_strict_raises_with_the_cause_chained() -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers="net.0", analyses=[_Raises()], reporters=[], strict=True)
    with pytest.raises(AnalysisError, match="Analysis 'raises' failed at step 0: deliberate failure") as info:
        monitor.run(tiny_mlp(), step=0)
    assert isinstance(info.value.__cause__, ValueError)


def test_maybe_run_is_free_when_idle() -> None:
    model = tiny_mlp()
    monitor = nm.NeuronMap(tiny_probe(), layers="net.*", analyses=[_Counts()], reporters=[],
                           schedule=nm.Schedule(every_n_steps=5, on=()))
    reports = [monitor.maybe_run(model, step=s) for s in range(11)]
    assert [i for i, r in enumerate(reports) if r is not None] == [0, 5, 10]
    assert all(not m._forward_hooks for m in model.modules())


def test_state_dict_round_trip_keeps_history_schedule_and_analysis_state() -> None:
    counts = _Counts()
    monitor = nm.NeuronMap(tiny_probe(), layers="net.0", analyses=[counts], reporters=[],
                           schedule=nm.Schedule(every_n_steps=2, on=()))
    for s in range(5):
        monitor.maybe_run(tiny_mlp(), step=s)
    state = json.loads(json.dumps(monitor.state_dict()))  # must be JSON-able
    fresh = nm.NeuronMap(tiny_probe(), layers="net.0", analyses=[_Counts()], reporters=[],
                         schedule=nm.Schedule(every_n_steps=2, on=()))
    fresh.load_state_dict(state)
    assert fresh.history.steps == [0, 2, 4]
    assert fresh.analyses[0].calls == 3
    assert not fresh.should_run(step=4)
    assert fresh.schedule.state.runs == 3


def test_local_reporter_run_folder(tmp_path) -> None:
    reporter = LocalReporter(tmp_path, run_name="r1")
    monitor = nm.NeuronMap(tiny_probe(), layers="net.*", analyses=[nm.ActivationStats(), _Raises()],
                           reporters=[reporter])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisFailedWarning)
        for step in (0, 10):
            monitor.run(tiny_mlp(seed=step), step=step, epoch=step // 10, event="validation_end")
    monitor.close()
    run = tmp_path / "r1"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 10]
    assert (run / "figures" / "10" / "activation_stats" / "health.png").stat().st_size > 1000
    assert (run / "tables" / "0" / "activation_stats" / "summary.csv").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["probe"]["fingerprint"] == tiny_probe().fingerprint()
    assert json.loads((run / "run.json").read_text())["status"] == "FINISHED"
    history = History.from_csv(run / "history.csv")
    assert len(history.frame) == len(monitor.history.frame)
    np.testing.assert_allclose(
        history.series("neuronmap/activation_stats/net.0/std").to_numpy(),
        monitor.history.series("neuronmap/activation_stats/net.0/std").to_numpy(),
    )
    page = (run / "report.html").read_text()
    assert "data:image/png;base64," in page and "raises" in page and "deliberate failure" in page
    # self-contained, offline: nothing is fetched (plotly.js inlined; its code names SVG namespaces)
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", markup) and "<script src" not in page


def test_default_reporter_is_a_local_run_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monitor = nm.NeuronMap(tiny_probe(), layers="net.0", analyses=[nm.ActivationStats()])
    assert not (tmp_path / "neuronmap-runs").exists()  # nothing is created until a run
    monitor.run(tiny_mlp(), step=0)
    monitor.flush()  # published on background threads
    assert list((tmp_path / "neuronmap-runs").glob("*/metrics.jsonl"))


def test_registry_and_bad_engine_arguments() -> None:
    assert "activation_stats" in available_analyses()
    assert isinstance(get_analysis("activation_stats"), nm.ActivationStats)
    with pytest.raises(InvalidParameterError, match=r"Unknown analysis 'nope'; known analyses: \["):
        get_analysis("nope")
    with pytest.raises(InvalidParameterError, match="analyses must be Analysis instances; got str"):
        nm.NeuronMap(tiny_probe(), layers="net.0", analyses=["activation_stats"])  # type: ignore[list-item]
    with pytest.raises(InvalidParameterError, match=r"probe must be a neuronmap\.ProbeSet; got Tensor"):
        nm.NeuronMap(torch.zeros(3), layers="net.0")  # type: ignore[arg-type]


def test_two_instances_of_one_analysis_get_distinct_names() -> None:
    probe = tiny_probe(n=60)
    monitor = nm.NeuronMap(
        probe, layers="net.1", reporters=[],
        analyses=[nm.Probing(cv=3, n_permutations=0),
                  nm.Probing("group", cv=3, n_permutations=0, name="probing_group")],
    )
    metrics = monitor.run(tiny_mlp(), step=0).metrics
    assert "neuronmap/probing/net.1/accuracy" in metrics
    assert "neuronmap/probing_group/net.1/accuracy" in metrics
    with pytest.raises(InvalidParameterError,
                       match=r"Probing: name must be None or a non-empty str without '/'; got 'a/b'"):
        nm.Probing(name="a/b")


def test_report_html_is_rendered_at_close_and_throttled_on_flush(tmp_path) -> None:
    reporter = LocalReporter(tmp_path, run_name="t", render_interval_s=3600)
    monitor = nm.NeuronMap(tiny_probe(), layers="net.0", analyses=[nm.ActivationStats()], reporters=[reporter])
    monitor.run(tiny_mlp(), step=0)
    monitor.flush()  # results are published on background threads
    first = (tmp_path / "t" / "report.html").stat().st_mtime_ns
    monitor.run(tiny_mlp(), step=1)
    monitor.flush()
    assert (tmp_path / "t" / "report.html").stat().st_mtime_ns == first  # throttled
    monitor.close()
    assert "2 analysed step(s)" in (tmp_path / "t" / "report.html").read_text()


def test_history_reads_are_consistent_while_another_thread_appends() -> None:
    """The background executor appends from its completion thread while gates read: no append is lost."""
    import copy
    import threading

    from neuronmap.results import History

    history = History()
    done = threading.Event()

    def writer() -> None:
        for step in range(300):
            history.add_metrics({"neuronmap/x/net.0/m": float(step)}, step=step)
        done.set()

    seen = []
    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        seen.append(len(history.frame))
    thread.join()
    assert seen == sorted(seen)  # never a stale, shorter cache after a longer read
    assert len(history.frame) == 300 and history.steps == list(range(300))
    assert len(copy.deepcopy(history).frame) == 300  # the lock does not travel, the data does
