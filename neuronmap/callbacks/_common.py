"""What the Lightning and Hugging Face callbacks share: building the monitor, choosing reporters.

Both callbacks accept a ready :class:`~neuronmap.NeuronMap` or its keyword arguments, and both
send results to the trackers the training run already has, so NeuronMap's metrics sit beside
the user's own; without any, they fall back to a local run folder next to the trainer's output.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from torch import nn

from neuronmap.distributed import is_rank_zero
from neuronmap.engine import NeuronMap
from neuronmap.errors import InvalidParameterError, MissingDependencyError, ReporterWarning
from neuronmap.reporters.base import Reporter, RunStatus
from neuronmap.reporters.local import LocalReporter

__all__ = [
    "LOCAL_SUBDIR",
    "CardSpec",
    "Tracker",
    "build_monitor",
    "choose_reporters",
    "close_monitor",
    "local_reporter",
    "local_run_dir",
    "log_card",
    "tracker_reporters",
    "uses_default_reporters",
]

Tracker = Literal["mlflow", "wandb", "tensorboard"]
#: A callback's ``model_card`` argument: off, an automatic card, or card data (mapping or YAML path).
CardSpec = bool | Mapping[str, Any] | str | Path | None
TRACKERS: tuple[str, ...] = ("mlflow", "wandb", "tensorboard")
#: Tracker name -> the reporter class that accepts that tracker's run, logger or writer.
_REPORTER_CLASSES: dict[str, str] = {
    "mlflow": "MLflowReporter",
    "wandb": "WandbReporter",
    "tensorboard": "TensorBoardReporter",
}
#: Folder, under the trainer's output folder, of the fallback local run.
LOCAL_SUBDIR = "neuronmap-runs"


def build_monitor(monitor: NeuronMap | None, kwargs: Mapping[str, Any], *, owner: str) -> NeuronMap:
    """The monitor a callback drives: the one given, or one built from ``NeuronMap`` keywords.

    Args:
        monitor: A ready monitor, or ``None``.
        kwargs: Keyword arguments of :class:`~neuronmap.NeuronMap` (``probe``, ``layers``, ...).
        owner: The callback's class name, for messages.

    Raises:
        InvalidParameterError: Both or neither were given, or the keywords do not fit.
    """
    if monitor is not None:
        if kwargs:
            raise InvalidParameterError(
                f"{owner} takes either a NeuronMap or NeuronMap's keyword arguments, not both; "
                f"got a NeuronMap and {sorted(kwargs)}."
            )
        if not isinstance(monitor, NeuronMap):
            raise InvalidParameterError(
                f"{owner}'s first argument must be a neuronmap.NeuronMap; got {type(monitor).__name__}. "
                "Pass probe=..., layers=... as keywords to build one."
            )
        return monitor
    missing = [k for k in ("probe", "layers") if k not in kwargs]
    if missing:
        raise InvalidParameterError(
            f"{owner} needs a NeuronMap or at least the keywords probe= and layers=; missing {missing}."
        )
    kw = dict(kwargs)
    try:
        return NeuronMap(kw.pop("probe"), **kw)
    except TypeError as err:
        raise InvalidParameterError(f"{owner} got a keyword NeuronMap does not take: {err}.") from err


def uses_default_reporters(monitor: NeuronMap) -> bool:
    """Whether the user left ``reporters`` unset, so the callback may choose them."""
    return not monitor.publisher.user_chose


def tracker_reporters(trackers: Iterable[tuple[str, Any]]) -> list[Reporter]:
    """One reporter per ``(tracker, handle)``: the handle is a logger, run, writer or log folder.

    A tracker whose client is not installed is skipped with a :class:`ReporterWarning` (training
    goes on); the same handle is never bound twice.
    """
    import neuronmap.reporters as reporters

    out: list[Reporter] = []
    seen: set[int] = set()
    for tracker, handle in trackers:
        if tracker not in _REPORTER_CLASSES:
            raise InvalidParameterError(f"Unknown tracker {tracker!r}; allowed: {list(TRACKERS)}.")
        if id(handle) in seen:
            continue
        seen.add(id(handle))
        try:
            out.append(getattr(reporters, _REPORTER_CLASSES[tracker])(handle))
        except (MissingDependencyError, ImportError, AttributeError) as err:
            if is_rank_zero():
                warnings.warn(
                    f"NeuronMap cannot report to {tracker} ({type(err).__name__}: {err}); its results go "
                    "to the other reporters and the local run folder.",
                    ReporterWarning,
                    stacklevel=3,
                )
    return out


def local_reporter(root: str | Path, *, run_dir: str | Path | None = None) -> LocalReporter:
    """The fallback run folder under ``root/neuronmap-runs`` (or the exact ``run_dir`` of a resumed run).

    Its ``report.html`` is rendered once, by :func:`close_monitor`: re-rendering every metric
    plot at each scheduled run would pause training for seconds.
    """
    if run_dir is not None and Path(run_dir).is_dir():
        return LocalReporter(run_dir=run_dir, render_html=False)
    return LocalReporter(Path(root) / LOCAL_SUBDIR, render_html=False)


def close_monitor(monitor: NeuronMap, status: RunStatus = "FINISHED") -> None:
    """Close the monitor's reporters, rendering the local run's ``report.html`` on the way."""
    # only reporters that exist already: closing must not create the default folder
    for reporter in monitor.publisher.reporters if monitor.publisher.resolved else ():
        if isinstance(reporter, LocalReporter):
            reporter.render_html = True
    monitor.close(status)


def choose_reporters(
    monitor: NeuronMap,
    trackers: Iterable[tuple[str, Any]],
    *,
    root: str | Path,
    resume_dir: str | Path | None = None,
    local_run: bool = False,
) -> None:
    """Give ``monitor`` the trackers' reporters, and a local run folder when there are none.

    Args:
        monitor: The monitor; left alone when the user chose reporters (``[]`` included).
        trackers: ``(tracker, handle)`` pairs found in the training run.
        root: Parent of the local run folder (``root/neuronmap-runs/<run>``).
        resume_dir: The local run folder of the run being resumed, appended to if it exists.
        local_run: Keep the local run folder (its ``report.html``) beside the trackers too.
    """
    if not uses_default_reporters(monitor):
        return
    found = tracker_reporters(trackers)
    local = [local_reporter(root, run_dir=resume_dir)] if local_run or not found else []
    monitor.reporters = [*found, *local]


def log_card(monitor: NeuronMap, model: nn.Module | None, card: CardSpec) -> None:
    """Render the monitor's model card and send it to its reporters (``card`` as in the callbacks).

    A card that cannot be built or rendered warns and never stops training.
    """
    if card is None or card is False:
        return
    monitor.wait(monitor.close_timeout)  # background mode: the card describes every run
    if not monitor.history.steps:
        return
    try:
        from neuronmap.compliance.cards import log_model_card

        log_model_card(monitor, model=model, data=None if card is True else card)
    except Exception as err:
        warnings.warn(
            f"NeuronMap could not write the model card ({type(err).__name__}: {err}); training is unaffected.",
            ReporterWarning,
            stacklevel=3,
        )


def local_run_dir(monitor: NeuronMap) -> str | None:
    """The folder of the monitor's local reporter, if it has one (kept in callback state)."""
    run_dir = monitor.publisher.run_dir
    return None if run_dir is None else str(run_dir)


def attach_gates(monitor: NeuronMap, gates: Any, *, stop_on_failure: bool) -> Any:
    """A :class:`~neuronmap.gates.GateMonitor` evaluating ``gates`` after every run, or ``None``."""
    if gates is None:
        return None
    from neuronmap.compliance.gates import GateMonitor

    return GateMonitor(gates, stop_on_failure=stop_on_failure).attach(monitor)


def attach_audit(monitor: NeuronMap, audit: bool, *, root: str | Path | None = None) -> None:
    """Record every run in the hash-chained audit trail of the monitor's local run folder.

    The trail hashes the evidence files of a local run folder, so a monitor whose reporters
    have none (e.g. ``reporters=["mlflow"]``) gets one under ``root/neuronmap-runs`` beside them;
    its ``audit.jsonl`` is also sent to the other reporters after every run. A monitor with no
    reporters at all (``reporters=[]``) writes nothing, and gets no trail.
    """
    if not audit or not monitor.reporters:  # reporters=[]: nothing is written, so nothing to audit
        return
    from neuronmap.compliance.audit import AuditTrail

    if not any(isinstance(r, LocalReporter) for r in monitor.reporters):
        if root is None:
            raise InvalidParameterError(
                "audit=True keeps the audit trail in a local run folder, but this monitor has no "
                "LocalReporter; pass local_run=True (or add a LocalReporter to its reporters)."
            )
        monitor.reporters = [*monitor.reporters, local_reporter(root)]
    if not any(isinstance(listener, AuditTrail) for listener in monitor._listeners):
        AuditTrail().attach(monitor)
