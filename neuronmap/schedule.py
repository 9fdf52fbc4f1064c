"""When the engine runs: every N steps, every N epochs, on named events, at most N times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from neuronmap.errors import InvalidParameterError

__all__ = ["EVENTS", "Event", "Schedule", "ScheduleState"]

Event = Literal["step", "train_start", "epoch_end", "validation_end", "evaluate", "train_end", "manual"]
EVENTS: tuple[str, ...] = get_args(Event)


@dataclass
class ScheduleState:
    """What has run so far; round-trips through JSON for resumed runs."""

    runs: int = 0
    last_step: int | None = None
    last_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleState:
        return cls(runs=int(data.get("runs", 0)), last_step=data.get("last_step"), last_epoch=data.get("last_epoch"))


@dataclass(frozen=True)
class Schedule:
    """When scheduled runs happen.

    Args:
        every_n_steps: Run on ``step`` events whose step is a multiple of this.
        every_n_epochs: Gate epoch-level events (``validation_end``, ``epoch_end``) to every
            N-th epoch (epochs counted from 0, so ``(epoch + 1) % N == 0``, as Lightning's
            ``check_val_every_n_epoch``).
        on: Events that trigger a run (``train_end`` always runs when listed).
        max_runs: Stop after this many runs (``None``: no limit).

    A step that already ran is not run again (a validation and a train end at the same global
    step give one run). ``NeuronMap.run`` ignores the schedule; ``maybe_run`` honours it.

    Example:
        >>> s = Schedule(every_n_steps=100, on=())
        >>> [s.should_run(step=k, event="step") for k in (0, 50, 100)]
        [True, False, True]
    """

    every_n_steps: int | None = None
    every_n_epochs: int | None = None
    on: Sequence[str] = ("validation_end", "train_end")
    max_runs: int | None = None
    state: ScheduleState = field(default_factory=ScheduleState, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("every_n_steps", "every_n_epochs", "max_runs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidParameterError(f"Schedule {name} must be a positive int or None; got {value!r}.")
        on = (self.on,) if isinstance(self.on, str) else tuple(self.on)
        unknown = [e for e in on if e not in EVENTS]
        if unknown:
            raise InvalidParameterError(f"Unknown schedule event(s) {unknown}; allowed: {list(EVENTS)}.")
        object.__setattr__(self, "on", on)

    def should_run(self, *, step: int, epoch: int | None = None, event: str | None = "step") -> bool:
        """Whether a run is due at this step/epoch/event (does not record anything)."""
        event = event or "step"
        if event not in EVENTS:
            raise InvalidParameterError(f"Unknown event {event!r}; allowed: {list(EVENTS)}.")
        if self.max_runs is not None and self.state.runs >= self.max_runs:
            return False
        if self.state.last_step is not None and step == self.state.last_step:
            return False
        if event == "manual":
            return True
        if event == "step":
            return self.every_n_steps is not None and step % self.every_n_steps == 0
        if event not in self.on:
            return False
        if event in ("validation_end", "epoch_end", "evaluate") and self.every_n_epochs and epoch is not None:
            return (epoch + 1) % self.every_n_epochs == 0
        return True

    def record(self, *, step: int, epoch: int | None = None) -> None:
        """Note that a run happened at ``step``."""
        self.state.runs += 1
        self.state.last_step = step
        self.state.last_epoch = epoch
