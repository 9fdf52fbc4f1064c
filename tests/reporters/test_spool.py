"""Outage tolerance: guard, spool, back off, replay in order, exactly once.

The mechanics are tested on :class:`Outage`, a small reporter that records what it receives
and refuses connections while it is "down" (a test reporter, not a mock: it implements the
protocol). The end-to-end test kills a real ``mlflow server`` mid-run.
"""

from __future__ import annotations

import json
import math
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import neuronmap as nm
from neuronmap.errors import InvalidParameterError, ReporterError, ReporterWarning
from neuronmap.reporters import BaseReporter, LocalReporter, SpooledReporter
from neuronmap.reporters._spool import guard_reporters, is_retryable
from neuronmap.testing import tiny_mlp, tiny_probe


class Outage(BaseReporter):
    """Records every call; raises ``ConnectionRefusedError`` while ``down``."""

    name = "outage"

    def __init__(self) -> None:
        self.down = False
        self.calls: list[tuple[str, Any]] = []
        self.attempts = 0

    def _take(self, method: str, payload: Any) -> None:
        self.attempts += 1
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        self.calls.append((method, payload))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._take("log_metrics", (dict(metrics), step))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._take("log_params", dict(params))

    def log_figure(self, name: str, figure: Figure, step: int) -> None:
        self._take("log_figure", (name, figure.get_size_inches() * figure.dpi, step))

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None:
        self._take("log_table", (name, dataframe.copy(), step))

    def log_text(self, name: str, text: str) -> None:
        if "<reject>" in text:
            raise ValueError("text refused by the tracker")
        self._take("log_text", (name, text))

    def log_artifact(self, path: str | Path) -> None:
        self._take("log_artifact", Path(path).read_text())

    def close(self, status: str = "FINISHED") -> None:
        self._take("close", status)


def _steps(rep: Outage) -> list[int]:
    return [payload[1] for method, payload in rep.calls if method == "log_metrics"]


def _spooled(outage: Outage, tmp_path: Path, **kwargs: Any) -> SpooledReporter:
    return SpooledReporter(outage, spool_dir=tmp_path / "spool", **kwargs)


def test_outage_spools_then_replays_in_order_with_one_warning(tmp_path: Path) -> None:
    inner = Outage()
    rep = _spooled(inner, tmp_path, retry_after=0.05)
    rep.log_metrics({"neuronmap/a/l/m": 0.0}, step=0)
    inner.down = True
    with pytest.warns(ReporterWarning, match=r"'outage' failed in log_metrics\(\).*spooled") as record:
        for step in range(1, 6):
            rep.log_metrics({"neuronmap/a/l/m": float(step)}, step=step)
            time.sleep(0.02)
    (warning,) = [w for w in record if issubclass(w.category, ReporterWarning)]
    assert warning.filename == __file__  # points at the caller, not at NeuronMap's internals
    assert rep.in_outage and rep.pending == 5
    lines = (tmp_path / "spool" / "spool.jsonl").read_text().splitlines()
    assert [json.loads(line)["args"][1] for line in lines] == [1, 2, 3, 4, 5]
    inner.down = False
    time.sleep(0.2)  # past the back-off
    rep.log_metrics({"neuronmap/a/l/m": 6.0}, step=6)
    assert _steps(inner) == [0, 1, 2, 3, 4, 5, 6]
    assert rep.pending == 0 and not rep.in_outage
    assert not (tmp_path / "spool" / "spool.jsonl").exists()


def test_each_outage_warns_once(tmp_path: Path) -> None:
    inner = Outage()
    rep = _spooled(inner, tmp_path, retry_after=0.01)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            inner.down = True
            for step in range(3):
                rep.log_metrics({"m": 1.0}, step=step)
            inner.down = False
            time.sleep(0.05)
            rep.flush()
    assert len([w for w in record if issubclass(w.category, ReporterWarning)]) == 2
    assert _steps(inner) == [0, 1, 2, 0, 1, 2]


def test_back_off_doubles_and_spares_the_dead_tracker(tmp_path: Path) -> None:
    inner = Outage()
    inner.down = True
    rep = _spooled(inner, tmp_path, retry_after=10.0, max_retry_after=60.0)
    with pytest.warns(ReporterWarning, match=r"next try in 10 s"):
        for step in range(50):
            rep.log_metrics({"m": 1.0}, step=step)
    assert inner.attempts == 1  # the other 49 calls went straight to the spool
    assert rep.pending == 50


def test_close_forces_the_replay_and_ends_with_status(tmp_path: Path) -> None:
    inner = Outage()
    rep = _spooled(inner, tmp_path, retry_after=60.0)
    inner.down = True
    with pytest.warns(ReporterWarning):
        rep.log_params({"lr": 0.1, "nested": {"a": [1, 2]}})
        rep.log_metrics({"m": math.nan, "k": math.inf}, step=3)
    inner.down = False
    rep.close("FAILED")
    assert [m for m, _ in inner.calls] == ["log_params", "log_metrics", "close"]
    assert inner.calls[0][1] == {"lr": 0.1, "nested": {"a": [1, 2]}}
    metrics = inner.calls[1][1][0]
    assert math.isnan(metrics["m"]) and metrics["k"] == math.inf
    assert inner.calls[2][1] == "FAILED"


def test_figures_tables_and_artifacts_survive_the_spool(tmp_path: Path) -> None:
    inner = Outage()
    rep = _spooled(inner, tmp_path)
    figure = Figure(figsize=(3.2, 2.4), dpi=100)
    figure.add_subplot().plot([0, 1], [1, 0])
    table = pd.DataFrame({"cka": [0.9, math.nan], "note": ["a", "b,c"]}, index=pd.Index(["l1", "l2"], name="layer"))
    artifact = tmp_path / "gate.json"
    artifact.write_text('{"ok": true}')
    inner.down = True
    with pytest.warns(ReporterWarning):
        rep.log_figure("sim/heatmap", figure, 4)
        rep.log_table("sim/cka", table, 4)
        rep.log_artifact(artifact)
        rep.log_text("card", "# Card\n\né ✓")
    artifact.unlink()  # the spool keeps its own copy
    spool = tmp_path / "spool" / "files"
    assert sorted(p.suffix for p in spool.rglob("*") if p.is_file()) == [".csv", ".json", ".png"]
    inner.down = False
    rep.close()
    (_, (name, pixels, step)), (_, (tname, back, _)), (_, text), (_, card), _ = inner.calls
    assert (name, step) == ("sim/heatmap", 4)
    np.testing.assert_allclose(pixels, [320, 240])  # rebuilt at the original pixel size
    assert tname == "sim/cka"
    pd.testing.assert_frame_equal(back, table)
    assert text == '{"ok": true}'
    assert card == ("card", "# Card\n\né ✓")


class ReportOutage(Outage):
    """Takes whole reports, like ``LocalReporter`` (which keeps epoch and event)."""

    def log_report(self, report: Any) -> None:
        self._take("log_report", report)


def test_a_whole_report_survives_the_spool(tmp_path: Path) -> None:
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
    report = monitor.run(tiny_mlp(), step=7, epoch=1, event="validation_end")
    inner = ReportOutage()
    inner.down = True
    rep = _spooled(inner, tmp_path)
    with pytest.warns(ReporterWarning, match=r"failed in log_report\(\)"):
        rep.log_report(report)
    inner.down = False
    rep.close()
    (method, back), _ = inner.calls
    assert method == "log_report"
    assert (back.step, back.epoch, back.event, back.timestamp) == (7, 1, "validation_end", report.timestamp)
    assert back.metrics.keys() == report.metrics.keys()
    np.testing.assert_array_equal(list(back.metrics.values()), list(report.metrics.values()))  # NaN == NaN here
    for name, result in report.results.items():
        assert sorted(back.results[name].figures) == sorted(result.figures)
        assert back.results[name].notes == result.notes
        for table, frame in result.tables.items():
            pd.testing.assert_frame_equal(back.results[name].tables[table], frame, check_dtype=False)


def test_rejected_payload_is_kept_aside_and_does_not_block(tmp_path: Path) -> None:
    inner = Outage()
    rep = _spooled(inner, tmp_path)
    with pytest.warns(ReporterWarning, match=r"rejected log_text\(\).*not retried"):
        rep.log_text("card", "<reject>")
    rep.log_metrics({"m": 1.0}, step=1)
    assert _steps(inner) == [1] and rep.pending == 0
    rejected = [json.loads(x) for x in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["method"], r["args"], r["error"]) for r in rejected] == [
        ("log_text", ["card", "<reject>"], "ValueError: text refused by the tracker")
    ]


def test_a_missing_artifact_is_rejected_not_raised(tmp_path: Path) -> None:
    rep = _spooled(Outage(), tmp_path)
    with pytest.warns(ReporterWarning, match=r"rejected log_artifact\(\)"):
        rep.log_artifact(tmp_path / "gone.json")  # Outage.log_artifact reads it: FileNotFoundError
    (entry,) = [json.loads(x) for x in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert entry["args"] == [{"$missing": str(tmp_path / "gone.json")}]


def test_a_damaged_entry_is_set_aside_and_the_rest_delivered(tmp_path: Path) -> None:
    inner = Outage()
    inner.down = True
    rep = _spooled(inner, tmp_path)
    figure = Figure()
    figure.add_subplot()
    with pytest.warns(ReporterWarning):
        rep.log_figure("a/f", figure, 1)
        rep.log_metrics({"m": 1.0}, step=2)
    for png in (tmp_path / "spool" / "files").rglob("*.png"):
        png.unlink()
    inner.down = False
    with pytest.warns(ReporterWarning, match="set aside spooled call 1"):
        rep.close()
    assert [m for m, _ in inner.calls] == ["log_metrics", "close"]
    assert "unreadable" in (tmp_path / "spool" / "rejected.jsonl").read_text()


def test_a_spool_that_cannot_be_written_warns_and_goes_on(tmp_path: Path) -> None:
    inner = Outage()
    inner.down = True
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the spool folder should be")
    rep = SpooledReporter(inner, spool_dir=blocker)
    with pytest.warns(ReporterWarning, match=r"could not deliver or spool log_metrics\(\).*this call is lost"):
        rep.log_metrics({"m": 1.0}, step=1)


def test_strict_raises_but_keeps_the_payload(tmp_path: Path) -> None:
    inner = Outage()
    inner.down = True
    rep = _spooled(inner, tmp_path, strict=True)
    with pytest.warns(ReporterWarning), pytest.raises(ReporterError, match=r"failed in log_metrics\(\)"):
        rep.log_metrics({"m": 1.0}, step=1)
    with pytest.raises(ReporterError, match=r"still unreachable; 2 call\(s\) wait in"):
        rep.log_metrics({"m": 2.0}, step=2)
    inner.down = False
    rep.close()
    assert _steps(inner) == [1, 2]


def test_a_new_process_delivers_what_an_old_one_left(tmp_path: Path) -> None:
    first = Outage()
    first.down = True
    with pytest.warns(ReporterWarning) as record:
        old = _spooled(first, tmp_path)
        old.log_metrics({"m": 1.0}, step=1)
        old.close()
    assert "still unreachable at close; 2 call(s) stay in" in str(record[-1].message)
    second = Outage()
    new = _spooled(second, tmp_path)
    assert new.pending == 2
    new.flush()
    assert [m for m, _ in second.calls] == ["log_metrics", "close"]
    assert _spooled(Outage(), tmp_path).pending == 0


def test_is_retryable_separates_outages_from_bad_payloads() -> None:
    assert is_retryable(ConnectionRefusedError()) and is_retryable(TimeoutError()) and is_retryable(RuntimeError())
    assert not is_retryable(ValueError()) and not is_retryable(TypeError()) and not is_retryable(KeyError())
    assert not is_retryable(InvalidParameterError("bad")) and not is_retryable(FileNotFoundError())


def test_bad_back_off_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match=r"retry_after must be > 0.*got retry_after=0"):
        SpooledReporter(Outage(), spool_dir=tmp_path, retry_after=0)


def test_engine_goes_on_and_spools_into_the_local_run_folder(tmp_path: Path) -> None:
    local, down = LocalReporter(tmp_path, "run"), Outage()
    down.down = True
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[local, down])
    with pytest.warns(ReporterWarning, match="'outage' failed"):
        for step in (0, 10):
            monitor.run(tiny_mlp(), step=step)
        monitor.flush()  # published on background threads
    assert [type(r) for r in monitor.publisher.guarded] == [SpooledReporter, SpooledReporter]
    spool = local.run_dir / "spool" / "1-outage" / "spool.jsonl"
    assert [json.loads(x)["method"] for x in spool.read_text().splitlines()][:2] == ["log_params", "log_metrics"]
    assert sorted(set(pd.read_json(local.run_dir / "metrics.jsonl", lines=True)["step"])) == [0, 10]
    down.down = False
    monitor.close()
    assert _steps(down) == [0, 10]


# ---------------------------------------------------------------------- a real outage
@pytest.mark.integration
def test_mlflow_outage_loses_nothing_and_duplicates_nothing(tmp_path: Path, make_mlflow_server) -> None:
    from mlflow import MlflowClient

    from neuronmap.reporters import MLflowReporter

    server = make_mlflow_server()
    server.start()
    rep = SpooledReporter(
        MLflowReporter(tracking_uri=server.uri, experiment_name=f"outage-{uuid.uuid4().hex[:6]}"),
        spool_dir=tmp_path / "spool", retry_after=0.2, max_retry_after=1.0,
    )
    key = "neuronmap/probing/encoder.layer.5/accuracy"
    table = pd.DataFrame({"layer": ["a", "b"], "cka": [0.5, 0.25]})

    def log(step: int) -> None:
        rep.log_metrics({key: step / 10, "neuronmap/stats/net.0/nan": math.nan}, step=step)
        figure = Figure(figsize=(2, 2))
        figure.add_subplot().plot([0, step])
        rep.log_figure("probing/curve", figure, step)
        rep.log_table("probing/summary", table, step)

    for step in range(3):
        log(step)
    server.kill()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in range(3, 7):
            log(step)  # no exception reaches the training loop
        rep.log_text("model_card", "# Card during the outage")
    assert len([w for w in record if issubclass(w.category, ReporterWarning)]) == 1
    assert rep.pending >= 13
    server.start()  # same store, same port
    log(7)
    rep.close()
    assert rep.pending == 0

    client = MlflowClient(server.uri)
    run_id = rep.reporter.run_id
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    assert history == [(s, s / 10) for s in range(8)]  # every step, exactly once
    assert len(client.get_metric_history(run_id, "neuronmap/stats/net.0/nan")) == 8
    for step in range(8):
        figures = [f.path for f in client.list_artifacts(run_id, f"neuronmap/figures/{step}/probing")]
        assert figures == [f"neuronmap/figures/{step}/probing/curve.png"]
        local = client.download_artifacts(run_id, f"neuronmap/tables/{step}/probing/summary.json", str(tmp_path))
        assert len(json.loads(Path(local).read_text())["data"]) == 2  # not appended twice
    text = client.download_artifacts(run_id, "neuronmap/texts/model_card.md", str(tmp_path))
    assert Path(text).read_text() == "# Card during the outage"
    assert client.get_run(run_id).info.status == "FINISHED"


def test_guard_reporters_names_spools_after_position_and_reporter(tmp_path: Path) -> None:
    local, down = LocalReporter(tmp_path, "run"), Outage()
    already = SpooledReporter(Outage(), spool_dir=tmp_path / "own")
    guarded = guard_reporters([local, down, already])
    assert [g.spool_dir for g in guarded] == [  # type: ignore[attr-defined]
        local.run_dir / "spool" / "0-local", local.run_dir / "spool" / "1-outage", tmp_path / "own"
    ]
    assert guarded[2] is already
    with pytest.raises(InvalidParameterError, match="is already spooled"):
        SpooledReporter(already, spool_dir=tmp_path)
