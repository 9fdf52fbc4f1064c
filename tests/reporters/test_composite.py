"""CompositeReporter fan-out, the registry, and each child guarded on its own."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import neuronmap as nm
from neuronmap.errors import InvalidParameterError, ReporterError, ReporterWarning
from neuronmap.reporters import (
    BaseReporter,
    CompositeReporter,
    LocalReporter,
    SpooledReporter,
    available_reporters,
    get_reporter,
)
from neuronmap.reporters.base import log_metrics_at
from neuronmap.runs import read_history
from neuronmap.testing import check_reporter, tiny_mlp, tiny_probe


class Unreachable(BaseReporter):
    """A tracker that is down: every call fails with a refused connection."""

    name = "unreachable"

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        raise ConnectionRefusedError(111, "Connection refused")


def test_every_child_gets_every_call(tmp_path: Path) -> None:
    a, b = LocalReporter(tmp_path, "a"), LocalReporter(tmp_path, "b")
    both = CompositeReporter([a, b])
    figure = Figure()
    figure.add_subplot().plot([0, 1])
    both.log_metrics({"neuronmap/x/l/m": 1.0}, step=3)
    both.log_figure("x/f", figure, step=3)
    both.log_text("model_card", "# Card")
    both.close()
    for child in (a, b):
        assert list(read_history(child.run_dir)["step"]) == [3]
        assert (child.run_dir / "figures/3/x/f.png").is_file()
        assert (child.run_dir / "texts/model_card.md").read_text() == "# Card"
        assert json.loads((child.run_dir / "run.json").read_text())["status"] == "FINISHED"
    assert list(both) == [a, b] and len(both) == 2


def test_a_child_that_is_down_spools_alone(tmp_path: Path) -> None:
    local = LocalReporter(tmp_path, "run")
    both = CompositeReporter([Unreachable(), local])
    with pytest.warns(ReporterWarning, match="'unreachable' failed in log_metrics"):
        for step in range(3):
            both.log_metrics({"neuronmap/x/l/m": float(step)}, step=step)
    assert list(read_history(local.run_dir)["step"]) == [0, 1, 2]  # once each, nothing re-sent
    spool = local.run_dir / "spool" / "0-unreachable" / "spool.jsonl"
    assert len(spool.read_text().splitlines()) == 3


def test_strict_raises_after_every_child_had_the_call(tmp_path: Path) -> None:
    local = LocalReporter(tmp_path, "run")
    both = CompositeReporter([Unreachable(), local], strict=True)
    with pytest.warns(ReporterWarning), pytest.raises(ReporterError, match="failed in log_metrics"):
        both.log_metrics({"neuronmap/x/l/m": 1.0}, step=1)
    assert list(read_history(local.run_dir)["step"]) == [1]


class Stamped(BaseReporter):
    """Records the timestamp each log_metrics call carries."""

    name = "stamped"

    def __init__(self) -> None:
        self.stamps: list[float | None] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        self.stamps.append(timestamp)


def test_the_publisher_timestamp_reaches_every_child() -> None:
    # the composite used to drop it (its log_metrics took no timestamp), so each child stamped its own time
    a, b = Stamped(), Stamped()
    both = CompositeReporter([a, b])
    log_metrics_at(both, {"neuronmap/x/l/m": 1.0}, 2, timestamp=1234.5)
    both.close()
    assert a.stamps == b.stamps == [1234.5]


def test_the_engine_does_not_wrap_a_composite_twice(tmp_path: Path) -> None:
    local = LocalReporter(tmp_path, "run")
    both = CompositeReporter([local])
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[both])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = monitor.run(tiny_mlp(), step=5, epoch=0, event="validation_end")
        monitor.close()
    assert monitor.publisher.guarded == [both]
    assert isinstance(both.reporters[0], SpooledReporter)
    lines = [json.loads(x) for x in (local.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"], r["event"]) for r in lines] == [(5, 0, "validation_end")]  # log_report kept
    assert set(lines[0]["metrics"]) == set(report.metrics)


def test_registry_builds_each_builtin_and_lists_names_on_a_typo(tmp_path: Path) -> None:
    assert {"composite", "local", "mlflow", "tensorboard", "wandb"} <= set(available_reporters())
    composite = get_reporter("composite", reporters=[LocalReporter(tmp_path, "r")])
    assert isinstance(composite, CompositeReporter)
    pytest.importorskip("tensorboard")
    assert type(get_reporter("tensorboard", writer=tmp_path / "tb")).__name__ == "TensorBoardReporter"
    with pytest.raises(InvalidParameterError, match=r"Unknown reporter 'mlfow'; known reporters: \['composite', "):
        get_reporter("mlfow")


def test_composite_by_name_needs_children_and_takes_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry table's `composite` alone has nothing to fan out to: a clear error, not a TypeError.
    with pytest.raises(InvalidParameterError,
                       match=r"CompositeReporter needs the reporters to send each call to.*got None\. "
                             r"In NeuronMap\(reporters=\[\.\.\.\]\) list them directly"):
        get_reporter("composite")
    with pytest.raises(InvalidParameterError, match=r"got \[\]"):
        CompositeReporter([])
    monkeypatch.chdir(tmp_path)
    both = get_reporter("composite", reporters=["local", LocalReporter(tmp_path, "named")])
    assert [type(child).__name__ for child in both] == ["LocalReporter", "LocalReporter"]
    both.log_metrics({"neuronmap/x/layer/m": 1.0}, step=0)
    both.close()
    assert (tmp_path / "named" / "metrics.jsonl").exists()
    assert len(list((tmp_path / "neuronmap-runs").glob("*/metrics.jsonl"))) == 1


def test_rejects_children_that_are_not_reporters() -> None:
    with pytest.raises(InvalidParameterError,
                       match=r"CompositeReporter needs Reporter objects; dict lacks \['log_metrics'"):
        CompositeReporter([{}])  # type: ignore[list-item]


@pytest.mark.filterwarnings("error::neuronmap.errors.ReporterWarning")  # a spooled child failure must show
def test_conformance(tmp_path: Path) -> None:
    check_reporter(CompositeReporter([LocalReporter(tmp_path, "a"), LocalReporter(tmp_path, "b")]))


def test_local_reporter_passes_the_conformance_check(tmp_path) -> None:
    check_reporter(LocalReporter(tmp_path, "conformance"))
    assert (tmp_path / "conformance" / "report.html").exists()
