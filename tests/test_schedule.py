import pytest

from neuronmap import Schedule
from neuronmap.errors import InvalidParameterError


def test_every_n_steps() -> None:
    s = Schedule(every_n_steps=10, on=())
    assert [k for k in range(35) if s.should_run(step=k)] == [0, 10, 20, 30]


def test_events_and_every_n_epochs_follow_lightning_counting() -> None:
    s = Schedule(every_n_epochs=2)
    assert not s.should_run(step=5, epoch=0, event="validation_end")
    assert s.should_run(step=9, epoch=1, event="validation_end")
    assert s.should_run(step=9, epoch=0, event="train_end")
    assert not s.should_run(step=9, epoch=1, event="step")  # no every_n_steps


def test_a_step_runs_once_and_max_runs_is_honoured() -> None:
    s = Schedule(on=("validation_end", "train_end"), max_runs=2)
    assert s.should_run(step=3, event="validation_end")
    s.record(step=3)
    assert not s.should_run(step=3, event="train_end")
    assert s.should_run(step=4, event="train_end")
    s.record(step=4)
    assert not s.should_run(step=5, event="validation_end")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every_n_steps": 0}, "every_n_steps must be a positive int or None; got 0"),
        ({"on": ("validation_ends",)}, r"Unknown schedule event\(s\) \['validation_ends'\]; allowed: \['step'"),
    ],
)
def test_invalid_schedules(kwargs, message) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        Schedule(**kwargs)
