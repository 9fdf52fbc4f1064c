"""NeuronMap(executor="background"): a spawned worker runs the analyses, results equal the
synchronous mode's, reports complete in step order, and a crashing worker never stops training."""

from __future__ import annotations

import os
import signal
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap._executor import PendingReport
from neuronmap.analyses.base import Analysis, AnalysisContext, AnalysisResult, MetricSet
from neuronmap.errors import AnalysisFailedWarning, InvalidParameterError
from neuronmap.results import Report
from neuronmap.testing import tiny_mlp, tiny_probe

TOL = 1e-12


def _model() -> nn.Module:
    model = tiny_mlp(seed=3)
    model.net[1] = nn.Tanh()  # a bounded activation: NeuronStats reads the module in the worker
    return model


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(16, 8, generator=gen)
    loss = nn.functional.cross_entropy(model(x), (x[:, 0] > 0).long())
    opt.zero_grad()
    loss.backward()
    opt.step()


def _assert_same(sync: Report, background: Report) -> None:
    assert sync.step == background.step
    assert list(sync.results) == list(background.results)
    for name, a in sync.results.items():
        b = background.results[name]
        assert (a.status, a.error, a.notes) == (b.status, b.error, b.notes), name
        assert sorted(a.metrics) == sorted(b.metrics), name
        keys = sorted(a.metrics)
        np.testing.assert_allclose([b.metrics[k] for k in keys], [a.metrics[k] for k in keys],
                                   rtol=TOL, atol=TOL, equal_nan=True, err_msg=name)
        assert sorted(a.tables) == sorted(b.tables), name
        for table in a.tables:
            pd.testing.assert_frame_equal(b.tables[table], a.tables[table], check_exact=False, rtol=TOL, atol=TOL)
        assert sorted(a.figures) == sorted(b.figures), name
    assert [f.to_dict() for f in sync.findings] == [f.to_dict() for f in background.findings]


def test_background_results_equal_synchronous_results() -> None:
    probe = tiny_probe(n=96)

    def analyses() -> list[Analysis]:
        return [nm.ActivationStats(), nm.Probing(n_permutations=49), nm.CKA(), nm.Fairness(sensitive="group"),
                nm.NeuronStats()]

    sync = nm.NeuronMap(probe, layers=["net.*"], analyses=analyses(), reporters=[])
    background = nm.NeuronMap(probe, layers=["net.*"], analyses=analyses(), reporters=[], executor="background")
    model = _model()
    background.preflight(model)  # starts the worker
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    pending: list[Report] = []
    expected: list[Report] = []
    for step in range(2):  # two runs: CKA's drift compares with the previous one
        expected.append(sync.run(model, step=step))
        report = background.run(model, step=step)
        assert isinstance(report, PendingReport)
        pending.append(report)
        _train_step(model, opt, step)  # training goes on while the worker computes
    complete = [r.wait(timeout=120) for r in pending]
    assert all(r.done() for r in pending)
    for a, b in zip(expected, complete, strict=True):
        _assert_same(a, b)
    # the history, and the state a checkpoint would hold, are the synchronous mode's
    pd.testing.assert_frame_equal(background.history.frame, sync.history.frame, check_exact=False, rtol=TOL, atol=TOL)
    assert background.state_dict()["analyses"] == sync.state_dict()["analyses"]
    assert background.last_report is complete[-1]
    # the bounded activation was recognised in the worker, from the module alone
    assert "net.1/saturated_fraction" in complete[0].results["neuron_stats"].metrics
    background.close()
    assert background._background is not None and background._background.worker_pid is None


class _Where(Analysis):
    """Records the process it ran in and the worker's thread cap."""

    name = "where"

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        m = MetricSet()
        m.add("process", "pid", float(os.getpid()))
        m.add("process", "torch_threads", float(torch.get_num_threads()))
        m.add("process", "omp_threads", float(os.environ.get("OMP_NUM_THREADS", "0")))
        return AnalysisResult(self.name, metrics=m)


class _WhereWithModel(_Where):
    name = "where_with_model"
    needs_model = True

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        with torch.no_grad():
            ctx.model(torch.zeros(1, 8))
        return super().run(ctx)


class _CallsModelUndeclared(Analysis):
    name = "calls_model"

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        ctx.model(torch.zeros(1, 8))
        return AnalysisResult(self.name)


class _Crash(Analysis):
    """Ends its process at step 1 (like a segfault in native code) and sleeps at step 2."""

    name = "crash"

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        if ctx.step == 1:
            os._exit(3)
        if ctx.step == 2:
            time.sleep(30)  # the test kills the worker meanwhile
        return AnalysisResult(self.name, metrics={"all/step": float(ctx.step)})


def test_a_crashing_worker_is_recorded_and_training_goes_on() -> None:
    monitor = nm.NeuronMap(
        tiny_probe(), layers=["net.*"], reporters=[], executor="background", worker_threads=2,
        analyses=[nm.ActivationStats(), _Where(), _WhereWithModel(), _CallsModelUndeclared(), _Crash()],
    )
    completed: list[int] = []
    monitor.add_listener(lambda report, model: completed.append(report.step))
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reports = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(4):
            t0 = time.perf_counter()
            reports.append(monitor.run(model, step=step))
            assert time.perf_counter() - t0 < 10  # the hand-off does not wait for the worker
            _train_step(model, opt, step)
            if step == 2:
                deadline = time.monotonic() + 60
                while monitor._background._running != 3 and time.monotonic() < deadline:  # step 2 is seq 3
                    time.sleep(0.05)
                os.kill(monitor._background.worker_pid, signal.SIGKILL)
        full = [r.wait(timeout=120) for r in reports]
    monitor.close()

    assert completed == [0, 1, 2, 3]  # listeners in step order, once each
    assert monitor.history.steps == [0, 1, 2, 3]
    worker_side = ["activation_stats", "where", "calls_model", "crash"]
    for report, how in ((full[1], "exit code 3"), (full[2], "killed by signal SIGKILL")):
        for name in worker_side:
            result = report.results[name]
            assert result.status == "failed"
            assert "analysis worker process crashed" in result.error and how in result.error, result.error
        assert report.results["where_with_model"].status == "ok"  # ran on the training thread
    for report in (full[0], full[3]):  # before the crashes, and on the fresh worker after them
        assert report.results["activation_stats"].status == "ok"
        assert report.results["crash"].metrics == {"all/step": float(report.step)}
        where = report.results["where"].metrics
        assert where["process/pid"] != os.getpid()
        assert where["process/torch_threads"] == 2 and where["process/omp_threads"] == 2
        assert report.results["where_with_model"].metrics["process/pid"] == os.getpid()
        # an analysis that calls the model without declaring it fails with a message saying so
        assert report.results["calls_model"].status == "failed"
        assert "needs_model = True" in report.results["calls_model"].error
    assert monitor._background.starts == 3
    messages = [str(w.message) for w in caught if issubclass(w.category, AnalysisFailedWarning)]
    assert any("'crash' failed at step 1" in m and "exit code 3" in m for m in messages)


def test_strict_and_invalid_settings() -> None:
    strict = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[],
                          executor="background", strict=True)
    report = strict.run(tiny_mlp(), step=0)
    assert not isinstance(report, PendingReport) and report.wait() is report and report.done()
    assert strict._background is None  # strict=True stays synchronous: no worker
    with pytest.raises(InvalidParameterError, match=r"'executor' parameter .* \['sync', 'background'\]. Got 'thread'"):
        nm.NeuronMap(tiny_probe(), layers=["net.*"], executor="thread")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"'worker_threads' .* int >= 1. Got 0 instead"):
        nm.NeuronMap(tiny_probe(), layers=["net.*"], worker_threads=0)


def test_only_model_analyses_need_no_worker() -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[_WhereWithModel()], reporters=[],
                           executor="background")
    report: Any = monitor.run(tiny_mlp(), step=0)
    assert not isinstance(report, PendingReport)
    assert report.results["where_with_model"].status == "ok"
    assert monitor._background is not None and monitor._background.starts == 0


def test_audit_trail_hashes_the_model_as_captured_not_as_trained_later(tmp_path) -> None:
    """A background report completes steps after its capture: the trail's model_hash is the captured weights'."""
    import json

    from neuronmap.audit import AuditTrail, hash_model
    from neuronmap.reporters import LocalReporter

    local = LocalReporter(tmp_path, run_name="audited")
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[local],
                           executor="background")
    trail = AuditTrail(local.run_dir).attach(monitor)
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    captured, pending = {}, []
    for step in range(3):
        captured[step] = hash_model(model)
        pending.append(monitor.run(model, step=step))
        _train_step(model, opt, step)  # the weights change before the worker's results come back
    for report in pending:
        report.wait(timeout=120)
    monitor.close()
    entries = [json.loads(line) for line in trail.path.read_text().splitlines()]
    runs = {e["step"]: e["model_hash"] for e in entries if e.get("kind", e.get("event")) == "engine_run"}
    assert runs == captured
