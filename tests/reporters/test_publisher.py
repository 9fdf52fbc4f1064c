"""The publisher: tracker I/O off the training thread, bounded waits, idempotent retries, replay.

The mechanics run on :class:`Hung`, a reporter that blocks until the test lets it go (a
tracker that accepted the connection and never answers). The promises users rely on run on a
real ``mlflow server`` process, paused with SIGSTOP and resumed with SIGCONT, and killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import neuronmap as nm
from neuronmap.errors import InvalidParameterError, ReporterWarning
from neuronmap.reporters import LocalReporter
from neuronmap.reporters.base import BaseReporter
from neuronmap.reporters.publisher import Publisher
from neuronmap.reporters.replay import replay_run
from neuronmap.testing import tiny_mlp, tiny_probe

KEY = "neuronmap/activation_stats/net.1/std"
#: The same metric as the trackers chart it (one section per metric, a line per layer).
TRACKER_KEY = "neuronmap/activation_stats/std/net.1"


class Hung(BaseReporter):
    """Blocks in every call until ``release`` is set; records what it finally receives."""

    name = "hung"

    def __init__(self, log: Path | None = None) -> None:
        self.release = threading.Event()
        self.received: list[tuple[str, Any]] = []
        self.log = log

    def _take(self, method: str, value: Any) -> None:
        self.release.wait()
        self.received.append((method, value))
        if self.log is not None:
            with self.log.open("a") as fh:
                fh.write(json.dumps([method, value]) + "\n")

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        self._take("log_metrics", [step, timestamp])

    def close(self, status: str = "FINISHED") -> None:
        self._take("close", status)

    # neuronmap replay rebuilds it from the spool's reporter.json
    def replay_spec(self) -> dict[str, Any]:
        return {"log": str(self.log)}

    @classmethod
    def from_replay_spec(cls, spec: Mapping[str, Any]) -> Hung:
        reporter = cls(Path(spec["log"]))
        reporter.release.set()
        return reporter


def _monitor(reporters: list[Any], **kwargs: Any) -> nm.NeuronMap:
    return nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=reporters,
                        **kwargs)


def test_a_hung_tracker_costs_the_training_thread_nothing(tmp_path: Path) -> None:
    local, hung = LocalReporter(tmp_path, "run", render_html=False), Hung(tmp_path / "hung.jsonl")
    monitor = _monitor([local, hung])
    model = tiny_mlp()
    durations = []
    for step in range(5):
        t0 = time.perf_counter()
        report = monitor.run(model, step=step)
        durations.append(time.perf_counter() - t0 - sum(report.timings.values()))
    assert max(durations) < 0.5  # beyond capture and analyses, nothing waits on the hung tracker
    assert monitor.publisher.flush(timeout=0.2) is False  # the hung lane still holds its calls ...
    assert monitor.publisher.flush(timeout=10, only_local=True)  # ... while the local folder is written
    assert sorted(set(nm.reporters.local.read_history(local.run_dir)["step"])) == [0, 1, 2, 3, 4]

    t0 = time.perf_counter()
    with pytest.warns(ReporterWarning, match=r"did not finish within 0.5 s.*neuronmap replay .*run"):
        monitor.close("FAILED", timeout=0.5)
    assert time.perf_counter() - t0 < 5  # bounded by close_timeout
    assert hung.received == []

    # A later process delivers it all, in order, and closes with the recorded status.
    (outcome,) = [o for o in replay_run(local.run_dir) if o.status != "empty"]
    assert outcome.status == "delivered" and outcome.closed_with == "FAILED"  # the status recorded at close
    lines = [json.loads(x) for x in (tmp_path / "hung.jsonl").read_text().splitlines()]
    assert [m for m, _ in lines] == [*["log_metrics"] * 5, "close"]
    assert lines[-1][1] == "FAILED"
    assert [v[0] for m, v in lines if m == "log_metrics"] == [0, 1, 2, 3, 4]
    assert all(v[1] is not None for m, v in lines if m == "log_metrics")  # stamped when made
    assert replay_run(local.run_dir)[-1].status == "empty"  # delivered once


def test_a_full_queue_spills_to_the_spool_and_loses_nothing(tmp_path: Path) -> None:
    local, hung = LocalReporter(tmp_path, "run", render_html=False), Hung(tmp_path / "hung.jsonl")
    publisher = Publisher([local, hung], max_queue=2)
    for step in range(6):
        publisher.log_metrics({KEY: float(step)}, step=step, timestamp=1000.0 + step)
    spool = local.run_dir / "spool" / "1-hung" / "spool.jsonl"
    assert spool.exists()  # the overflow was written at once, not held in memory
    hung.release.set()
    publisher.close(timeout=30)
    steps = sorted(v[0] for m, v in hung.received if m == "log_metrics")
    assert steps == [0, 1, 2, 3, 4, 5]
    assert sorted(v[1] for m, v in hung.received if m == "log_metrics") == [1000.0 + s for s in range(6)]


def test_strict_publishes_on_the_calling_thread(tmp_path: Path) -> None:
    local = LocalReporter(tmp_path, "run", render_html=False)
    monitor = _monitor([local], strict=True)
    monitor.run(tiny_mlp(), step=0)
    assert monitor.publisher.pending == 0
    assert (local.run_dir / "metrics.jsonl").exists()  # written before run() returned


def test_bad_publisher_settings_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match="max_queue must be an int >= 1; got 0"):
        Publisher([], max_queue=0)
    with pytest.raises(InvalidParameterError, match="close_timeout must be a number of seconds >= 0; got -1"):
        nm.NeuronMap(tiny_probe(), layers="net.0", reporters=[], close_timeout=-1)


def test_publishing_after_close_reopens_and_close_ends_the_lane_threads(tmp_path: Path) -> None:
    local = LocalReporter(tmp_path, "run", render_html=False)
    publisher = Publisher([local])
    publisher.log_metrics({KEY: 1.0}, step=0)
    publisher.close()
    publisher.log_metrics({KEY: 2.0}, step=1)  # e.g. trainer.evaluate() after trainer.train()
    publisher.close()
    assert list(nm.reporters.local.read_history(local.run_dir)["step"]) == [0, 1]
    lanes = publisher._lanes or []
    for lane in lanes:
        assert lane._thread is not None
        lane._thread.join(timeout=5)
        assert not lane._thread.is_alive()  # closed lanes leave no thread behind


# ---------------------------------------------------------------------- a real MLflow server
def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_paused_for_60_s_blocks_no_training_step_and_loses_and_duplicates_nothing(
    tmp_path: Path, make_mlflow_server: Any
) -> None:
    from mlflow import MlflowClient

    from neuronmap.reporters import MLflowReporter

    server = make_mlflow_server()
    server.start()
    mlflow_rep = MLflowReporter(tracking_uri=server.uri, experiment_name=f"pause-{uuid.uuid4().hex[:6]}")
    monitor = _monitor([LocalReporter(tmp_path, "run", render_html=False), mlflow_rep],
                       schedule=nm.Schedule(every_n_steps=25, on=("step",)))
    model = tiny_mlp()
    optimizer = __import__("torch").optim.SGD(model.parameters(), lr=0.01)
    probe = tiny_probe()

    def train_step() -> None:
        optimizer.zero_grad()
        model(probe.inputs["input"]).pow(2).mean().backward()
        optimizer.step()

    pause, blocked, scheduled_in_pause = 60.0, [], []
    paused_at = resumed_at = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReporterWarning)  # one outage warning, checked elsewhere
        step = 0
        while resumed_at is None or time.monotonic() < resumed_at + 3:
            train_step()
            t0 = time.perf_counter()
            ran = monitor.maybe_run(model, step=step)
            # what the step waited beyond the run's own work (capture, analyses): the tracker's share
            blocked.append(time.perf_counter() - t0 - (sum(ran.timings.values()) if ran is not None else 0.0))
            now = time.monotonic()
            if step == 25:  # the first run reached the server; now it stops answering
                assert monitor.flush(timeout=60)
                server.pause()
                paused_at = now
            elif paused_at is not None and resumed_at is None:
                if ran is not None:
                    scheduled_in_pause.append(step)
                if now - paused_at >= pause:
                    server.resume()
                    resumed_at = now
            time.sleep(0.1)  # the rest of a training step
            step += 1
        assert len(scheduled_in_pause) >= 2
        monitor.close(timeout=180)

    assert max(blocked) < 1.0, f"a training step waited {max(blocked):.2f} s on NeuronMap's publishing"
    client = MlflowClient(server.uri)
    run_id = mlflow_rep.run_id
    scheduled = [s for s in range(step) if s % 25 == 0]
    assert sorted(monitor.history.steps) == scheduled
    expected = monitor.history.series(KEY)
    assert _history(client, run_id, TRACKER_KEY) == [(s, pytest.approx(expected.loc[s])) for s in scheduled]
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.integration
def test_answers_that_arrive_after_the_client_timeout_leave_no_duplicate(
    tmp_path: Path, make_mlflow_server: Any
) -> None:
    from mlflow import MlflowClient

    from neuronmap.reporters import MLflowReporter

    server = make_mlflow_server()
    server.start()
    # the client gives up after 1 s; the server, paused 4 s, then stores the first attempt anyway
    mlflow_rep = MLflowReporter(tracking_uri=server.uri, experiment_name=f"slow-{uuid.uuid4().hex[:6]}",
                                request_timeout=1, request_retries=0)
    monitor = _monitor([LocalReporter(tmp_path, "run", render_html=False), mlflow_rep])
    model = tiny_mlp()
    monitor.run(model, step=0)
    assert monitor.flush(timeout=60)
    server.pause()
    with pytest.warns(ReporterWarning, match="'mlflow' failed"):
        monitor.run(model, step=1)
        time.sleep(4)
        server.resume()
        monitor.flush(timeout=60)
    monitor.close(timeout=60)
    client = MlflowClient(server.uri)
    rows = client.get_metric_history(mlflow_rep.run_id, TRACKER_KEY)
    assert sorted(m.step for m in rows) == [0, 1]  # the late answer and the replay: one row


@pytest.mark.integration
def test_replay_after_the_process_ended_finishes_the_mlflow_run(tmp_path: Path, make_mlflow_server: Any) -> None:
    from mlflow import MlflowClient

    from neuronmap.cli import main

    server = make_mlflow_server()
    server.start()
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys, warnings
        import neuronmap as nm
        from neuronmap.reporters import LocalReporter, MLflowReporter
        from neuronmap.testing import tiny_mlp, tiny_probe
        warnings.simplefilter("ignore")
        rep = MLflowReporter(tracking_uri={server.uri!r}, experiment_name="replay")
        monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()],
                               reporters=[LocalReporter({str(tmp_path)!r}, "run", render_html=False), rep])
        monitor.run(tiny_mlp(), step=0)
        assert monitor.flush(timeout=60)
        print(rep.run_id, flush=True)
        os.killpg({server.process.pid}, signal.SIGKILL)  # the tracker dies mid-training
        for step in (1, 2):
            monitor.run(tiny_mlp(), step=step)
        monitor.close(timeout=5)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = proc.stdout.split()[-1]
    server.process.wait(timeout=15)
    server.start()  # same store, same port
    client = MlflowClient(server.uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # what the spool fixes

    assert main(["replay", str(tmp_path / "run")]) == 0
    assert client.get_run(run_id).info.status == "FINISHED"  # the status the process recorded
    assert [s for s, _ in _history(client, run_id, TRACKER_KEY)] == [0, 1, 2]
    assert main(["replay", str(tmp_path / "run")]) == 0  # nothing left: delivered once
    assert [s for s, _ in _history(client, run_id, TRACKER_KEY)] == [0, 1, 2]


def test_replay_of_a_folder_without_spool_or_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from neuronmap.cli import main

    assert main(["replay", str(tmp_path)]) == 0
    assert "no spool, nothing to deliver" in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err

