"""The analysis constructor contract itself: declarative validation, one message format,
renamed arguments, ``name=`` on every analysis (neuronmap.analyses.params)."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import pytest

import neuronmap as nm
from neuronmap.analyses import Analysis, AnalysisResult
from neuronmap.analyses.params import Interval, Options, Type, validate_parameters
from neuronmap.errors import InvalidParameterError


class Window(Analysis):
    name = "window"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "size": [Interval(int, 1, None)], "mode": [Options({"mean", "max"})], "scale": [None, Interval(float, 0, 1)],
    }
    _renamed_parameters: ClassVar[dict[str, str]] = {"width": "size"}
    calls = 0

    def __init__(self, size: int = 8, *, mode: str = "mean", scale: float | None = None,
                 n_resamples: int = 100) -> None:
        super().__init__()
        Window.calls += 1
        self.size, self.mode, self.scale, self.n_resamples = size, mode, scale, n_resamples

    def run(self, ctx: Any) -> AnalysisResult:
        return AnalysisResult(self.name)


class WiderWindow(Window):
    """A subclass without its own constructor is checked with the inherited constraints."""


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size": 0}, "Window: size must be an int in [1, inf); got 0."),
    ({"size": True}, "Window: size must be an int in [1, inf); got True."),
    ({"size": 2.0}, "Window: size must be an int in [1, inf); got 2.0."),
    ({"mode": "median"}, "Window: mode must be one of ['max', 'mean']; got 'median'."),
    ({"scale": 1.5}, "Window: scale must be None or a float in [0, 1]; got 1.5."),
    ({"scale": float("nan")}, "Window: scale must be None or a float in [0, 1]; got nan."),
    ({"n_resamples": 0}, "Window: n_resamples must be an int in [1, inf); got 0."),  # declared once, on the base
])
def test_one_message_format_names_class_parameter_allowed_and_received(kwargs, message) -> None:
    with pytest.raises(InvalidParameterError) as info:
        Window(**kwargs)
    assert str(info.value) == message


def test_validation_runs_before_the_constructor_body_and_once_per_instance() -> None:
    before = Window.calls
    with pytest.raises(InvalidParameterError):
        Window(size=-1)
    assert Window.calls == before
    WiderWindow(size=3)
    assert Window.calls == before + 1
    with pytest.raises(InvalidParameterError, match=r"^WiderWindow: size must be"):
        WiderWindow(size=0)


def test_renamed_argument_warns_and_still_works() -> None:
    with pytest.warns(FutureWarning, match=r"Window\(width=\.\.\.\) is deprecated .* use size= instead"):
        window = Window(width=4)
    assert window.size == 4
    with pytest.raises(InvalidParameterError, match="pass size= only"):
        Window(width=4, size=5)
    with pytest.raises(InvalidParameterError, match="Window: size must be"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Window(width=0)  # the old name is validated too


def test_name_is_accepted_by_every_analysis_and_validated() -> None:
    assert Window(name="window_b").name == "window_b"
    assert Window().name == "window"
    assert nm.Information(name="mi_label").name == "mi_label"  # its constructor has no name parameter
    assert nm.Information(name="mi_label").config()["name"] == "mi_label"
    with pytest.raises(InvalidParameterError, match="name must be None or a non-empty str without '/'; got 'a/b'"):
        nm.Information(name="a/b")
    with pytest.raises(InvalidParameterError, match="name must be None or a non-empty str"):
        nm.CKA(name="")


def test_unknown_argument_lists_the_allowed_ones() -> None:
    with pytest.raises(InvalidParameterError, match=r"Window: .*'sise'.*its parameters are \['size', 'mode'"):
        Window(sise=3)


def test_two_instances_under_two_names_run_in_one_monitor() -> None:
    from neuronmap.testing import tiny_mlp, tiny_probe

    monitor = nm.NeuronMap(tiny_probe(), layers=["net.0"], reporters=[],
                           analyses=[nm.ActivationStats(), nm.ActivationStats(name="stats_b", dead_threshold=0.1)])
    report = monitor.run(tiny_mlp(), step=0)
    assert set(report.results) == {"activation_stats", "stats_b"}
    assert any(k.startswith("neuronmap/stats_b/") for k in report.metrics)


def test_constraint_helpers_describe_themselves() -> None:
    assert str(Interval(float, 0, 1, closed="neither")) == "a float in (0, 1)"
    assert str(Interval(int, None, 10, closed="left")) == "an int in (-inf, 10)"
    assert str(Type(None, callable)) == "None or a callable"
    with pytest.raises(InvalidParameterError, match=r"^Thing: k must be a str or an int; got 1\.5\.$"):
        validate_parameters("Thing", {"k": 1.5}, {"k": [str, int]})
    validate_parameters("Thing", {"k": True}, {"k": [bool]})
