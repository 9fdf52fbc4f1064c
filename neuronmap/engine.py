"""The NeuronMap engine: schedule check -> capture -> analyses -> Report -> reporters.

The engine knows nothing about Lightning or transformers: callbacks translate their events
into :meth:`NeuronMap.maybe_run` calls. Between scheduled runs it attaches no hook and copies
nothing, so idle costs one integer comparison.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import torch
from torch import nn

from neuronmap._console import announce_run
from neuronmap._executor import (
    BackgroundRuns,
    Executor,
    PendingReport,
    check_executor,
    check_worker_threads,
    new_run,
    worker_message,
)
from neuronmap._executor_worker import structure_modules
from neuronmap._failures import guarded, run_analysis
from neuronmap._preflight import Preflight
from neuronmap.analyses.base import Analysis, AnalysisContext, AnalysisResult
from neuronmap.capture.checks import check_device, check_max_bytes
from neuronmap.capture.hooks import Activations, model_device
from neuronmap.capture.monitored import NoModel, capture_probe
from neuronmap.capture.reduce import Reduction, check_reduction
from neuronmap.distributed import (
    DistributedMode,
    current_world,
    is_sharded,
    unwrap_model,
)
from neuronmap.errors import (
    AnalysisFailedWarning,
    InvalidParameterError,
    ReporterWarning,
    RunSkippedWarning,
)
from neuronmap.findings import attach_findings
from neuronmap.probe import ProbeSet
from neuronmap.reporters.base import Reporter, RunStatus
from neuronmap.results import History, Report
from neuronmap.schedule import Schedule, ScheduleState

__all__ = ["NeuronMap"]


class NeuronMap:
    """Run analyses on a fixed probe set, on a schedule, and send the results to reporters.

    Args:
        probe: The fixed probe set.
        layers: Layer selectors (dotted names, globs with ``*``/``**``, ``re:``, ``type:``).
        reduce: Token reduction for captured activations (``mean``, ``first``, ``last``,
            ``max``, ``none``).
        analyses: Analyses to run at every scheduled run.
        schedule: When :meth:`maybe_run` runs (default: validation end and train end).
        reporters: Where results go. ``None`` (default) writes a local run folder under
            ``neuronmap-runs/``; ``[]`` reports nowhere. Strings are looked up in the reporter
            registry (``"local"``, ``"mlflow"``, ...).
        strict: Raise when an analysis or reporter fails instead of recording it and warning.
        batch_size: Probe examples per forward pass.
        device: Where to run the probe set (default: the model's device).
        capture: Capture each module's ``"output"`` or ``"input"``.
        output_index: Which element/key of tuple/dict outputs holds the hidden state.
        max_bytes: Memory budget for ``reduce="none"``.
        random_state: Seed for every random procedure of the analyses.
        name: A name for this monitor (run tags, model cards).
        distributed: ``"auto"`` (default): under ``torch.distributed`` every rank must call
            :meth:`run` at the same point; the probe set is sharded across ranks, activations
            are gathered, and analyses and reporting happen once, on rank zero (see
            :mod:`neuronmap.distributed`). ``"off"``: run the whole probe set in this process
            alone (for code that calls the monitor on one rank only).
        close_timeout: Seconds :meth:`close` waits for the trackers to take what is still
            queued; the rest stays in the run folder's ``spool/`` for ``neuronmap replay``.
            In background mode it first waits as long again for the analyses in flight.
        executor: ``"sync"`` (default): :meth:`run` captures, analyses and reports while the
            caller waits. ``"background"``: the training thread captures and runs only the
            analyses that need the live model (``Analysis.needs_model``: attribution,
            patching, circuits, causal tracing, attention, counterfactual bias, TCAV, activation
            maximisation, adversarial robustness, concept algebra); the others run in a worker
            process (:mod:`neuronmap._executor`) while training goes on, and their reports
            complete in step order. ``strict=True`` and ``torch.distributed`` runs stay
            synchronous.
        worker_threads: Thread cap of the background worker (torch, OpenMP, BLAS), so that it
            does not starve the data loader.

    Results are published on background threads (:class:`~neuronmap.reporters.publisher.Publisher`):
    :meth:`run` returns once the analyses are done, and a slow or hung tracker never holds up
    the caller. :meth:`flush` waits for the reporters; :meth:`close` ends their runs.

    With ``executor="background"`` :meth:`run` returns as soon as the capture (and the analyses
    that need the model) are done, with a :class:`~neuronmap._executor.PendingReport`:
    ``report.wait()`` gives the complete report. :attr:`history`, :attr:`last_report`, the
    reporters and the listeners (gates, audit trail) receive each report when it is complete,
    in step order, from a completion thread. An analysis failure, or a crash of the worker
    process, is recorded in the report as ``failed`` and never stops training. :meth:`wait`
    waits for the runs in flight; :meth:`flush`, :meth:`state_dict` and :meth:`close` wait
    for them too (:meth:`close` at most ``close_timeout``). Results equal the synchronous
    mode's (same seeds). A script needs the ``if __name__ == "__main__":`` guard, as for any
    ``spawn`` worker.
    :meth:`preflight` checks the set-up before training starts (the callbacks call it).

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"],
        ...                        analyses=[nm.ActivationStats()], reporters=[])
        >>> report = monitor.run(tiny_mlp(), step=0)
        >>> sorted(report.results)
        ['activation_stats']
    """

    def __init__(
        self,
        probe: ProbeSet,
        *,
        layers: str | Sequence[str],
        reduce: Reduction = "mean",
        analyses: Sequence[Analysis] = (),
        schedule: Schedule | None = None,
        reporters: Sequence[Reporter | str] | None = None,
        strict: bool = False,
        batch_size: int = 32,
        device: torch.device | str | None = None,
        capture: str = "output",
        output_index: int | str | None = None,
        max_bytes: int = 2**30,
        random_state: int = 0,
        name: str = "neuronmap",
        distributed: DistributedMode = "auto",
        close_timeout: float = 30.0,
        executor: Executor = "sync",
        worker_threads: int = 1,
    ) -> None:
        if not isinstance(probe, ProbeSet):
            raise InvalidParameterError(f"probe must be a neuronmap.ProbeSet; got {type(probe).__name__}.")
        self.probe = probe
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers:
            raise InvalidParameterError("layers must name at least one module; got an empty list.")
        self.reduce = check_reduction(reduce)
        self.analyses = list(analyses)
        for analysis in self.analyses:
            if not isinstance(analysis, Analysis):
                raise InvalidParameterError(
                    f"analyses must be Analysis instances; got {type(analysis).__name__}. "
                    "Pass e.g. nm.ActivationStats(), or nm.analyses.get_analysis(name)."
                )
        names = [a.name for a in self.analyses]
        if len(set(names)) != len(names):
            raise InvalidParameterError(f"Two analyses share a name (metric keys would collide): {names}.")
        self.schedule = schedule or Schedule()
        self.strict = strict
        from neuronmap.reporters.publisher import Publisher

        self.publisher = Publisher(reporters, strict=strict, close_timeout=close_timeout)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidParameterError(f"batch_size must be a positive int; got {batch_size!r}.")
        self.batch_size = batch_size
        check_device(device)  # a CUDA device on a CPU-only machine fails here, not hours into training
        self.device = device
        self.capture = capture
        self.output_index = output_index
        self.max_bytes = check_max_bytes(max_bytes)
        self.random_state = random_state
        self.name = name
        current_world(distributed)  # validates the mode
        self.distributed: DistributedMode = distributed
        self.history = History()
        self.executor: Executor = check_executor(executor)
        self.worker_threads = check_worker_threads(worker_threads)
        self.close_timeout = float(close_timeout)
        self._background: BackgroundRuns | None = None
        self._listeners: list[Callable[[Report, nn.Module], None]] = []
        #: Set once :meth:`preflight` passed: from then on a capture failure skips the run.
        self.preflight_passed = False
        #: The last scheduled run's report (``None`` before the first run).
        self.last_report: Report | None = None

    def __repr__(self) -> str:
        return (
            f"NeuronMap(probe={self.probe.name!r} n={len(self.probe)}, layers={self.layers}, reduce={self.reduce!r}, "
            f"analyses={[a.name for a in self.analyses]}, schedule={self.schedule})"
        )

    def _repr_html_(self) -> str:
        from neuronmap._notebook import monitor_html

        return monitor_html(self)

    # ------------------------------------------------------------------ reporters
    @property
    def reporters(self) -> list[Reporter]:
        """The reporters, created on first use (the default local folder appears only when used)."""
        return self.publisher.reporters

    @reporters.setter
    def reporters(self, value: Sequence[Reporter]) -> None:
        self.publisher.reporters = value

    def add_listener(self, listener: Callable[[Report, nn.Module], None]) -> None:
        """Call ``listener(report, model)`` after every run (audit trail, gates)."""
        self._listeners.append(listener)

    def config(self) -> dict[str, Any]:
        """JSON-able configuration of this monitor (logged as params and kept for audits)."""
        return {
            "name": self.name,
            "layers": self.layers,
            "reduce": self.reduce,
            "batch_size": self.batch_size,
            "random_state": self.random_state,
            "schedule": {
                "every_n_steps": self.schedule.every_n_steps,
                "every_n_epochs": self.schedule.every_n_epochs,
                "on": list(self.schedule.on),
                "max_runs": self.schedule.max_runs,
            },
            "probe": {"name": self.probe.name, "n": len(self.probe), "fingerprint": self.probe.fingerprint(),
                      "description": self.probe.description, "groups": list(self.probe.group_columns)},
            "analyses": {a.name: {"class": type(a).__name__, **a.config()} for a in self.analyses},
        }

    # ------------------------------------------------------------------ schedule
    def should_run(self, *, step: int, epoch: int | None = None, event: str | None = "step") -> bool:
        """Whether the schedule calls for a run now (cheap: no hook, no copy)."""
        return self.schedule.should_run(step=step, epoch=epoch, event=event)

    def maybe_run(
        self, model: nn.Module, *, step: int, epoch: int | None = None, event: str | None = "step"
    ) -> Report | None:
        """Run if the schedule says so; the two-line integration for a plain PyTorch loop.

        Example:
            >>> # for step, batch in enumerate(loader):
            >>> #     ...train...
            >>> #     monitor.maybe_run(model, step=step)
        """
        if not self.should_run(step=step, epoch=epoch, event=event):
            return None
        return self.run(model, step=step, epoch=epoch, event=event)

    # ------------------------------------------------------------------ preflight
    def preflight(self, model: nn.Module) -> Preflight:
        """Check the set-up against ``model`` before training starts; list every problem at once.

        Resolves every layer selector, runs one probe batch through the real capture path
        (eval mode, no gradients, the training mode restored), fingerprints the probe set and
        checks each analysis' requirements (columns, model outputs). The callbacks call it
        when training starts; a plain loop calls it before its first step. Once it passed, a
        capture failure in a scheduled run warns and skips that run instead of raising (unless
        ``strict=True``): training that has started is never stopped by NeuronMap.

        Returns:
            A :class:`~neuronmap._preflight.Preflight` with the resolved layers and shapes.

        Raises:
            PreflightError: Something in the set-up cannot work; the message lists each problem.

        Example:
            >>> import neuronmap as nm
            >>> from neuronmap.testing import tiny_mlp, tiny_probe
            >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], reporters=[])
            >>> monitor.preflight(tiny_mlp()).layers[:2]
            ('net.0', 'net.1')
        """
        from neuronmap._preflight import preflight

        result = preflight(self, model)
        self.preflight_passed = True
        background = self._background_runs()
        if background is not None:
            background.start()  # the worker's start-up (seconds) overlaps the first training steps
        return result

    # ------------------------------------------------------------------ the run
    def capture_activations(self, model: nn.Module) -> Activations:
        """Capture the monitored layers (and the model output if an analysis needs it).

        See :func:`neuronmap.capture.monitored.capture_probe` (wrappers, ``torch.distributed``, errors).
        """
        return capture_probe(self, model)

    def run(self, model: nn.Module, *, step: int, epoch: int | None = None, event: str | None = None) -> Report:
        """Capture, analyse and report now, whatever the schedule says.

        Args:
            model: The model (left in the training mode it had).
            step: Global step (the x-axis in trackers).
            epoch: Epoch, when known.
            event: What triggered the run (``validation_end``, ``train_end``, ...).

        Returns:
            The :class:`Report` (also appended to :attr:`history` and sent to the reporters).
            With ``executor="background"``, a :class:`~neuronmap._executor.PendingReport` holding
            the analyses that ran on the training thread; ``.wait()`` returns the complete one.

        Raises:
            LayerNotFoundError, ForwardError, MemoryBudgetError: capture failed (these are errors
                in the set-up, not in an analysis, so they always raise).

        Under ``torch.distributed`` every rank must call this at the same point. Rank zero
        returns the full report; the other ranks return a report without results (they run the
        analyses too, without reporting, when the model is FSDP-sharded, since an analysis'
        extra forward passes need every rank).
        """
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        try:
            activations = self.capture_activations(model)
        except Exception as err:
            if self.strict or not self.preflight_passed:
                raise  # a set-up error: no preflight vouched for this set-up
            return self._skip_run(err, model, step=step, epoch=epoch, event=event, started=started)
        timings = {"capture": time.perf_counter() - t0}
        background = self._background_runs()
        if background is not None:
            return self._hand_off(background, activations, model, step=step, epoch=epoch, event=event,
                                  started=started, timings=timings, t_run=t0)
        return self._analyse_and_report(
            activations, model, step=step, epoch=epoch, event=event, started=started, timings=timings,
        )

    # ------------------------------------------------------------------ background mode
    def _background_runs(self) -> BackgroundRuns | None:
        """The background executor when this run goes off the training thread, else ``None``."""
        if self.executor != "background" or self.strict or current_world(self.distributed) is not None:
            return None  # strict must raise in the caller; distributed runs need every rank in step
        if self._background is None:
            self._background = BackgroundRuns(
                self.analyses, self.probe, finish=self._complete_background, history=lambda: self.history,
                threads=self.worker_threads, batch_size=self.batch_size, random_state=self.random_state,
            )
        return self._background if self._background.remote else None

    def _hand_off(
        self, background: BackgroundRuns, activations: Activations, model: nn.Module, *, step: int,
        epoch: int | None, event: str | None, started: str, timings: dict[str, float], t_run: float,
    ) -> PendingReport:
        """Run the analyses that need the model here, hand the rest to the worker, return at once."""
        target = unwrap_model(model)
        ctx = AnalysisContext(
            model=target, probe=self.probe, activations=activations, step=int(step), epoch=epoch, event=event,
            history=self.history, batch_size=self.batch_size, random_state=self.random_state,
            device=torch.device(self.device) if self.device is not None else model_device(target),
        )
        local: dict[str, AnalysisResult] = {}
        for analysis in background.local:
            local[analysis.name] = self._run_analysis(analysis, ctx)
            timings[analysis.name] = local[analysis.name].duration_s
        seq = background.next_seq()
        message = worker_message(seq, step=int(step), epoch=epoch, event=event, started=started,
                                 arrays={k: activations[k] for k in activations.layers}, reduce=activations.reduce,
                                 outputs=activations.outputs, modules=structure_modules(target, activations.layers))
        run = new_run(seq, step=int(step), epoch=epoch, event=event, started=started, timings=timings, local=local,
                      message=message, model=model, t_run=t_run)
        for listener in self._listeners:  # what a listener takes from the live model now (the audit trail's hash)
            self._guarded("on_capture", getattr(listener, "on_capture", lambda *_: None), model, int(step))
        self.schedule.record(step=int(step), epoch=epoch)
        background.hand_off(run)
        return PendingReport(step=int(step), epoch=epoch, event=event, timestamp=started, results=dict(local),
                             probe_fingerprint=self.probe.fingerprint(), timings=dict(timings), _run=run)

    def _complete_background(self, run: Any, remote: Mapping[str, AnalysisResult]) -> Report:
        """A background run's report, complete: findings, history, reporters, listeners (step order)."""
        for name, result in remote.items():
            if result.status == "failed":
                warnings.warn(f"NeuronMap analysis {name!r} failed at step {run.step} and was skipped "
                              f"({result.error}); training goes on.", AnalysisFailedWarning, stacklevel=2)
        results = {a.name: run.local[a.name] if a.name in run.local else remote[a.name] for a in self.analyses}
        timings = {**run.timings, **{name: r.duration_s for name, r in remote.items()}}
        report = Report(step=run.step, epoch=run.epoch, event=run.event, timestamp=run.started, results=results,
                        probe_fingerprint=self.probe.fingerprint(), timings=timings)
        report = self.last_report = self._guarded("findings", attach_findings, report, self.analyses,
                                                  self.history, default=report)
        self.history.append(report)
        self._publish(report)
        announce_run(report, self.reporters, started=run.t_run)
        self._notify(report, run.model)
        return report

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the analyses of every run so far finished and their reports are complete.

        Returns at once in synchronous mode. In background mode it waits for the worker; the
        reporters may still be writing (:meth:`flush` waits for them too).

        Returns:
            ``False`` if ``timeout`` seconds passed first.
        """
        return True if self._background is None else self._background.wait(timeout)

    def run_on_activations(
        self,
        activations: Activations,
        *,
        model: nn.Module | None = None,
        step: int = 0,
        epoch: int | None = None,
        event: str | None = "manual",
    ) -> Report:
        """Analyse activations captured earlier (e.g. ``neuronmap extract``), then report.

        Analyses that need the model (attribution, patching ...) fail and are recorded as such
        when ``model`` is ``None``; those that read only activations and the probe set run.

        Raises:
            ProbeSetError: The activations hold a different number of examples than the probe set.
        """
        from neuronmap.errors import ProbeSetError

        for layer, array in activations.items():
            if len(array) != len(self.probe):
                raise ProbeSetError(
                    f"Activations of {layer!r} hold {len(array)} examples but the probe set has "
                    f"{len(self.probe)}; they must come from the same probe set."
                )
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return self._analyse_and_report(
            activations, model if model is not None else NoModel(), step=step, epoch=epoch, event=event,
            started=started, timings={"capture": 0.0},
        )

    def _analyse_and_report(
        self,
        activations: Activations,
        model: nn.Module,
        *,
        step: int,
        epoch: int | None,
        event: str | None,
        started: str,
        timings: dict[str, float],
    ) -> Report:
        target = unwrap_model(model)
        world = current_world(self.distributed)
        reporting = world is None or world.is_zero
        if not reporting and not is_sharded(target):
            self.schedule.record(step=int(step), epoch=epoch)
            return Report(step=int(step), epoch=epoch, event=event, timestamp=started,
                          probe_fingerprint=self.probe.fingerprint(), timings=timings)
        ctx = AnalysisContext(
            model=target,
            probe=self.probe,
            activations=activations,
            step=int(step),
            epoch=epoch,
            event=event,
            history=self.history,
            device=torch.device(self.device) if self.device is not None else model_device(target),
            batch_size=self.batch_size,
            random_state=self.random_state,
        )
        t_run = time.perf_counter() - sum(timings.values())
        results: dict[str, AnalysisResult] = {}
        for analysis in self.analyses:
            results[analysis.name] = self._run_analysis(analysis, ctx)
            timings[analysis.name] = results[analysis.name].duration_s
        report = Report(
            step=int(step),
            epoch=epoch,
            event=event,
            timestamp=started,
            results=results,
            probe_fingerprint=self.probe.fingerprint(),
            timings=timings,
        )
        report = self.last_report = self._guarded("findings", attach_findings, report, self.analyses,
                                                  self.history, default=report)
        self.schedule.record(step=int(step), epoch=epoch)
        self.history.append(report)
        if reporting:
            self._publish(report)
            announce_run(report, self.reporters, started=t_run)
            self._notify(report, model)
        return report

    def _notify(self, report: Report, model: nn.Module) -> None:
        """Call the listeners (audit trail, gates); one that fails warns, training goes on."""
        for listener in self._listeners:
            self._guarded(getattr(listener, "__qualname__", type(listener).__name__), listener, report, model)

    def _guarded(self, what: str, fn: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        return guarded(what, fn, *args, strict=self.strict, default=default)

    def _skip_run(
        self, err: Exception, model: nn.Module, *, step: int, epoch: int | None, event: str | None, started: str
    ) -> Report:
        """A capture that failed after the preflight passed: warn, record, publish, go on."""
        warnings.warn(
            f"NeuronMap could not capture activations at step {step} and skipped this run "
            f"({type(err).__name__}: {err}); training goes on. Pass strict=True to raise.",
            RunSkippedWarning,
            stacklevel=3,
        )
        error = f"capture failed: {type(err).__name__}: {err}"
        results = {a.name: AnalysisResult(a.name, status="failed", error=error) for a in self.analyses}
        report = Report(step=int(step), epoch=epoch, event=event, timestamp=started, results=results,
                        probe_fingerprint=self.probe.fingerprint(), timings={"capture": 0.0})
        self.schedule.record(step=int(step), epoch=epoch)
        world = current_world(self.distributed)
        if world is None or world.is_zero:
            self._publish(report)
            self._notify(report, model)
        return report

    def _run_analysis(self, analysis: Analysis, ctx: AnalysisContext) -> AnalysisResult:
        return run_analysis(analysis, ctx, strict=self.strict)

    def _publish(self, report: Report) -> None:
        # Queued for the reporters' own threads; each reporter is spooled, so a failing
        # tracker keeps its payload and warns once per outage (strict=True publishes here).
        self.publisher.publish(report, params=self.config())

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every result so far reached its reporters (or their spools).

        Returns:
            ``False`` if ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.wait(timeout):
            return False
        return self.publisher.flush(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close(self, status: RunStatus = "FINISHED", *, timeout: float | None = None) -> None:
        """Close every reporter with ``status`` (``FAILED`` when training raised).

        Waits at most ``timeout`` seconds (default: ``close_timeout``) for the trackers;
        spooled payloads are replayed first, and what a tracker still cannot take stays in
        the run folder's ``spool/`` with one warning naming ``neuronmap replay``. Listeners with an
        ``on_close(status)`` method (the audit trail) are called after the reporters closed.
        """
        if self._background is not None:
            # the last reports must exist before the reporters close
            self._background.close(self.close_timeout if timeout is None else timeout)
        self.publisher.close(status, timeout=timeout)
        for listener in self._listeners:
            # After the reporters, so that a listener sees the closed run folder (the audit
            # trail records run.json's end time and the final files).
            on_close = getattr(listener, "on_close", None)
            if on_close is not None:
                on_close(status)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for resumed runs: schedule progress, history, analysis state.

        In background mode it first waits (at most ``close_timeout``) for the runs in flight,
        so that a checkpoint holds every run its schedule state counts.
        """
        self.wait(self.close_timeout)
        return {
            "schedule": self.schedule.state.to_dict(),
            "history": self.history.to_records(),
            "analyses": {a.name: a.state_dict() if self._background is None else self._background.state_dict(a)
                         for a in self.analyses},
            "probe_fingerprint": self.probe.fingerprint(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (warns if the probe set changed)."""
        fingerprint = state.get("probe_fingerprint")
        if fingerprint and fingerprint != self.probe.fingerprint():
            warnings.warn(
                "The probe set differs from the one in the restored state; metrics before and after "
                "the resume are not comparable.",
                ReporterWarning,
                stacklevel=2,
            )
        restored = ScheduleState.from_dict(state.get("schedule", {}))
        self.schedule.state.runs = restored.runs
        self.schedule.state.last_step = restored.last_step
        self.schedule.state.last_epoch = restored.last_epoch
        self.history = History.from_records(state.get("history", []))
        for analysis in self.analyses:
            if analysis.name in state.get("analyses", {}):
                analysis.load_state_dict(state["analyses"][analysis.name])
        if self._background is not None:
            self._background.restart()  # the next worker starts from the restored state
