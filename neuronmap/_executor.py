"""Analyses off the training loop: what ``NeuronMap(executor="background")`` runs on.

A scheduled run in background mode is split where the live model stops being needed::

    training thread     capture ─▶ analyses with needs_model ─▶ hand-off ─▶ back to training
    sender thread                                                  └─▶ pipe ─▶ worker process
    worker process      (spawned, 1 thread)  the other analyses, in hand-off order ─▶ pipe
    completion thread   results ─▶ report complete, in step order ─▶ history, findings,
                        publisher (its own threads), listeners (gates, audit trail)

The worker is a *process* forked from multiprocessing's fork server (``spawn`` where there is
none): never ``fork`` the training process, which holds torch's OpenMP threads (the child can
deadlock on a lock a dead thread held); the fork server is a fresh single-threaded process
that has imported the analyses once, so a worker starts in milliseconds. It gets
the probe set and the analyses once, at start, and then one message per run: the activations
and model output as numpy arrays, the run's step/epoch/event and the parameter-free modules
of the monitored layers (activation functions: enough for structure checks such as
:class:`~neuronmap.NeuronStats`' bounded-activation test). Messages travel through
:func:`multiprocessing.Pipe`; nothing is written to disk.

Failure policy, as in the synchronous engine: an analysis that raises in the worker is
recorded as failed, with a warning when its report completes. A worker that dies (a crash in
native code, ``os._exit``, the OOM killer's ``SIGKILL``) fails the analyses of the run it was
running, with an error naming the exit code; runs handed off after it go to a fresh worker,
and training is never interrupted.

The worker caps its thread pools (``torch.set_num_threads``, and ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` in its environment) at ``worker_threads``
(default 1), so that it does not compete with the data loader for cores.

A script that uses ``executor="background"`` needs the ``if __name__ == "__main__":`` guard
that every ``spawn``/``forkserver`` user needs (PyTorch's ``DataLoader(num_workers>0)`` on macOS and Windows
too): the worker imports the main module to find the classes of user-defined analyses.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from torch import nn

from neuronmap._executor_worker import _THREAD_VARIABLES, _context, _worker_main
from neuronmap.analyses.base import Analysis, AnalysisResult
from neuronmap.errors import AnalysisFailedWarning, InvalidParameterError, NeuronMapWarning
from neuronmap.results import Report

if TYPE_CHECKING:
    from neuronmap.probe import ProbeSet
    from neuronmap.results import History

__all__ = ["EXECUTORS", "BackgroundRuns", "Executor", "PendingReport", "check_executor", "check_worker_threads"]

Executor = Literal["sync", "background"]
EXECUTORS: tuple[str, ...] = ("sync", "background")
#: Runs handed off and not yet complete before a new hand-off waits for the oldest: bounds the
#: memory held by activations in flight when analyses take longer than the schedule's interval.
MAX_IN_FLIGHT = 3
_ENV_LOCK = threading.Lock()


def check_executor(value: Any) -> Executor:
    """``value`` if it names an executor, else an :class:`InvalidParameterError` listing them."""
    if value not in EXECUTORS:
        raise InvalidParameterError(
            f"The 'executor' parameter of NeuronMap must be one of {list(EXECUTORS)}. Got {value!r} instead."
        )
    return cast(Executor, value)  # checked against EXECUTORS above


def check_worker_threads(value: Any) -> int:
    """``value`` if it is a positive int, else an :class:`InvalidParameterError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterError(
            f"The 'worker_threads' parameter of NeuronMap must be an int >= 1. Got {value!r} instead."
        )
    return value


@dataclass(frozen=True)
class PendingReport(Report):
    """What :meth:`NeuronMap.run <neuronmap.NeuronMap.run>` returns in background mode.

    It holds the run's step, epoch, event, timestamp and the results of the analyses that ran
    on the training thread (those with ``needs_model``); :meth:`wait` returns the complete
    :class:`~neuronmap.Report` once the worker's analyses are in (the one that
    ``monitor.history``, the reporters and the listeners receive).

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()],
        ...                        reporters=[], executor="background")
        >>> pending = monitor.run(tiny_mlp(), step=0)  # doctest: +SKIP
        >>> sorted(pending.wait(timeout=60).results)  # doctest: +SKIP
        ['activation_stats']
    """

    _run: _Run | None = field(default=None, repr=False, compare=False)

    def done(self) -> bool:
        """Whether every analysis of this run finished and the report is complete."""
        return self._run is None or self._run.complete.is_set()

    def wait(self, timeout: float | None = None) -> Report:
        """The complete report, waiting at most ``timeout`` seconds (``None``: as long as it takes).

        Raises:
            TimeoutError: The worker's analyses did not finish within ``timeout``.
        """
        if self._run is None:
            return self
        if not self._run.complete.wait(timeout):
            raise TimeoutError(
                f"The analyses of step {self.step} did not finish within {timeout} s; they are still "
                "running in the background (monitor.close() waits for them)."
            )
        assert self._run.report is not None  # set before `complete`
        return self._run.report


@dataclass
class _Run:
    """One scheduled run between hand-off and completion (main process only)."""

    seq: int
    step: int
    epoch: int | None
    event: str | None
    started: str
    timings: dict[str, float]
    #: Results of the analyses that ran on the training thread.
    local: dict[str, AnalysisResult]
    #: What the worker gets (kept until it answered, to resend it after a crash).
    message: dict[str, Any]
    model: nn.Module
    #: perf_counter at the start of capture (for the console line's duration).
    t_run: float
    remote: dict[str, AnalysisResult] | None = None
    #: Generation of the worker it was last sent to (0: none yet).
    sent_to: int = 0
    report: Report | None = None
    complete: threading.Event = field(default_factory=threading.Event)


# ---------------------------------------------------------------------------- main process
class BackgroundRuns:
    """Hands runs to a worker process and completes their reports in step order.

    Created by :class:`~neuronmap.NeuronMap` for ``executor="background"``; not public API.
    Two helper threads do the waiting, so that the training thread never does: the hand-off
    thread starts workers (the fork server's first start imports torch and the analyses:
    seconds) and sends the runs, in order; the completion thread receives results, notices a
    dead worker, and completes the reports.

    Args:
        analyses: The monitor's analyses; those without ``needs_model`` (and picklable) go to
            the worker, the others run on the training thread.
        probe: The probe set (sent to each worker once).
        finish: ``finish(run, results) -> Report``: the engine's completion step (findings,
            history, publishing, listeners), called on the completion thread in step order.
        history: ``() -> History`` a worker starts from (and restarts from after a crash).
        threads: Thread cap of the worker.
        batch_size, random_state: The monitor's settings, for the worker's context.
    """

    def __init__(
        self,
        analyses: Sequence[Analysis],
        probe: ProbeSet,
        *,
        finish: Callable[[_Run, dict[str, AnalysisResult]], Report],
        history: Callable[[], History],
        threads: int = 1,
        batch_size: int = 32,
        random_state: int = 0,
    ) -> None:
        self.probe = probe
        self.threads = threads
        self.batch_size = batch_size
        self.random_state = random_state
        self._finish = finish
        self._history = history
        self.local: list[Analysis] = [a for a in analyses if getattr(a, "needs_model", False)]
        self.remote: list[Analysis] = []
        for analysis in analyses:
            if analysis in self.local:
                continue
            try:
                pickle.dumps(analysis)
            except Exception as err:
                warnings.warn(
                    f"NeuronMap analysis {analysis.name!r} cannot be sent to the background worker "
                    f"({type(err).__name__}: {err}); it runs on the training thread.",
                    NeuronMapWarning,
                    stacklevel=4,
                )
                self.local.append(analysis)
            else:
                self.remote.append(analysis)
        self._lock = threading.Condition()
        self._seq = 0
        self._runs: collections.OrderedDict[int, _Run] = collections.OrderedDict()
        self._running: int | None = None
        self._started_any = False
        self._want_worker = False
        self._generation = 0
        self._process: Any = None
        self._jobs: Any = None
        self._results: Any = None
        self._threads: list[threading.Thread] = []
        self._closed = False
        #: Worker processes started so far (1 + restarts after crashes).
        self.starts = 0
        #: ``state_dict()`` of each worker-side analysis after its last run in the worker.
        self.states: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ state
    @property
    def worker_pid(self) -> int | None:
        """Process id of the live worker, if one is running."""
        process = self._process
        return process.pid if process is not None and process.exitcode is None else None

    def _with_state(self, analysis: Analysis) -> Analysis:
        """``analysis`` as the worker last left it (a copy with its reported state loaded)."""
        state = self.states.get(analysis.name)
        if not state:
            return analysis
        restored = copy.deepcopy(analysis)
        restored.load_state_dict(state)
        return restored

    def state_dict(self, analysis: Analysis) -> dict[str, Any]:
        """The state of ``analysis`` as its worker reported it (its own, if it runs here)."""
        with self._lock:
            return self.states.get(analysis.name) or analysis.state_dict()

    # ------------------------------------------------------------------ training thread
    def start(self) -> None:
        """Have a worker started now (the engine calls it at preflight: start-up overlaps training)."""
        with self._lock:
            if self.remote and not self._closed:
                self._want_worker = True
                self._ensure_threads()
                self._lock.notify_all()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def hand_off(self, run: _Run) -> None:
        """Queue ``run`` for the worker; waits only while :data:`MAX_IN_FLIGHT` runs are pending."""
        with self._lock:
            while len(self._runs) >= MAX_IN_FLIGHT and not self._closed:
                self._lock.wait(0.5)
            self._runs[run.seq] = run
            self._ensure_threads()
            self._lock.notify_all()

    def pending(self) -> int:
        """Runs handed off whose report is not complete yet."""
        with self._lock:
            return len(self._runs)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every run handed off so far is complete; ``False`` if ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._runs:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(0.5 if left is None else min(left, 0.5))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Wait at most ``timeout`` s for the runs in flight, fail the rest, stop the worker."""
        if not self.wait(timeout):
            with self._lock:
                late = list(self._runs.values())
            for run in late:
                text = (f"the analysis worker did not finish the run of step {run.step} within the close "
                        f"timeout of {timeout} s; it was stopped")
                self._deliver(run.seq, self._failed(text), crash=True)
        with self._lock:
            self._closed = True
            process, jobs = self._process, self._jobs
            self._process = None
            self._lock.notify_all()
        _stop(process, jobs)

    def restart(self) -> None:
        """Stop the worker after the runs in flight (a new one starts, with the monitor's state)."""
        self.wait()
        with self._lock:
            process, jobs = self._process, self._jobs
            self._process = None
            self.states.clear()  # the monitor's analyses hold the restored state now
        _stop(process, jobs)

    # ------------------------------------------------------------------ helper threads
    def _ensure_threads(self) -> None:
        # Called with the lock held.
        if not self._threads:
            self._threads = [threading.Thread(target=self._send_loop, name="neuronmap-handoff", daemon=True),
                             threading.Thread(target=self._receive_loop, name="neuronmap-complete", daemon=True)]
            for thread in self._threads:
                thread.start()

    def _unsent(self) -> list[_Run]:
        # Called with the lock held: runs the current worker has not been sent (every run still
        # waiting for its results, when the next worker is yet to start), in order.
        fresh = self._process is None
        return [r for r in self._runs.values() if r.remote is None and (fresh or r.sent_to != self._generation)]

    def _send_loop(self) -> None:
        # Starting workers, pickling and writing the activations happen here, not on the
        # training thread; a worker busy with the previous run never blocks a hand-off.
        while True:
            with self._lock:
                while not self._closed and not (self._unsent() or (self._want_worker and self._process is None)):
                    self._lock.wait(0.5)
                if self._closed:
                    return
                need_worker = self._process is None
            if need_worker:
                try:
                    started = self._start_worker()
                except Exception as err:  # e.g. a probe set that cannot be pickled
                    self._fail_unsent(f"the analysis worker could not start ({type(err).__name__}: {err})")
                    continue
                with self._lock:
                    self._want_worker = False
                    if self._closed:
                        _stop(started[0], started[1])
                        return
                    self._process, self._jobs, self._results = started
                    self._generation += 1
                    self._running, self._started_any = None, False
                    self.starts += 1
                    self._lock.notify_all()  # the completion thread watches the new worker
            with self._lock:
                batch, jobs = self._unsent(), self._jobs
                for run in batch:
                    run.sent_to = self._generation
            for run in batch:
                try:
                    jobs.send(run.message)
                except OSError:
                    pass  # a dead worker's pipe refuses the message: it is resent to the next worker
                except Exception as err:  # never let this thread die: later runs need it
                    text = f"its activations could not be sent to the worker ({type(err).__name__}: {err})"
                    self._deliver(run.seq, self._failed(text), crash=True)

    def _start_worker(self) -> tuple[Any, Any, Any]:
        context = _context()
        jobs_r, jobs_w = context.Pipe(duplex=False)
        results_r, results_w = context.Pipe(duplex=False)
        with self._lock:
            analyses = [self._with_state(a) for a in self.remote]
        init = {"probe": self.probe, "analyses": analyses, "history": self._history().to_records(),
                "threads": self.threads, "batch_size": self.batch_size, "random_state": self.random_state}
        process = context.Process(target=_worker_main, args=(jobs_r, results_w, init), daemon=True,
                                  name="neuronmap-analyses")
        # The thread-pool variables are read once by the native libraries when a process loads
        # them, so they must be in the environment of the process that loads them (the fork
        # server when it starts now, or a spawned worker).
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
            os.environ.update({k: str(self.threads) for k in _THREAD_VARIABLES})
            try:
                process.start()
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        jobs_r.close()
        results_w.close()
        return process, jobs_w, results_r

    def _receive_loop(self) -> None:
        while True:
            with self._lock:
                while self._process is None and not self._closed:
                    self._lock.wait(0.5)
                if self._closed and self._process is None:
                    return
                process, results = self._process, self._results
            try:
                ready = multiprocessing.connection.wait([results, process.sentinel], timeout=0.5)
            except OSError:
                ready = [process.sentinel]
            if not ready:
                continue
            if results in ready or results.poll():
                try:
                    message = results.recv()
                except (EOFError, OSError):
                    message = None
                if message is not None:
                    self._on_message(message)
                    continue
            process.join(timeout=5)
            self._on_worker_death(process)

    def _on_message(self, message: tuple[Any, ...]) -> None:
        if message[0] == "started":
            with self._lock:
                self._running = message[1]
                self._started_any = True
            return
        _, seq, results, states = message
        with self._lock:
            self._running = None
            # what the monitor's state_dict() (checkpoints) reports, and a restarted worker loads
            self.states.update(states)
        self._deliver(seq, results)

    def _on_worker_death(self, process: Any) -> None:
        with self._lock:
            if self._process is not process:
                return  # closed or restarted on purpose
            crashed = self._running
            if crashed is None and not self._started_any:
                # died before its first run (an import error in the worker, a kill at start):
                # fail the oldest run, so that a worker that can never start cannot loop forever
                crashed = next((r.seq for r in self._runs.values() if r.remote is None), None)
            self._process = None
        code = process.exitcode
        how = f"killed by signal {signal.Signals(-code).name}" if code is not None and code < 0 and \
            -code in signal.valid_signals() else f"exit code {code}"
        if crashed is not None:
            names = ", ".join(a.name for a in self.remote)
            text = f"the analysis worker process crashed ({how}) while running this run's analyses ({names})"
            self._deliver(crashed, self._failed(text), crash=True)
        with self._lock:
            self._lock.notify_all()  # the runs handed off after the crashed one go to a new worker

    def _failed(self, text: str) -> dict[str, AnalysisResult]:
        return {a.name: AnalysisResult(a.name, status="failed", error=text) for a in self.remote}

    def _fail_unsent(self, text: str) -> None:
        with self._lock:
            seqs = [r.seq for r in self._unsent()]
            self._want_worker = False
        for seq in seqs:
            self._deliver(seq, self._failed(text), crash=True)

    def _deliver(self, seq: int, results: dict[str, AnalysisResult], *, crash: bool = False) -> None:
        """Store ``results`` for run ``seq``, then complete every run that is next in order."""
        with self._lock:
            run = self._runs.get(seq)
            if run is None or run.remote is not None:
                return
            run.remote = results
            if crash and self._running == seq:
                self._running = None
        while True:
            with self._lock:
                head = next(iter(self._runs.values()), None)
                if head is None or head.remote is None:
                    return
            try:
                head.report = self._finish(head, head.remote)
            except Exception as err:  # never let the completion thread die: later runs need it
                warnings.warn(f"NeuronMap could not complete the report of step {head.step} "
                              f"({type(err).__name__}: {err}).", AnalysisFailedWarning, stacklevel=2)
                head.report = Report(step=head.step, epoch=head.epoch, event=head.event, timestamp=head.started,
                                     results={**head.local, **head.remote}, timings=head.timings)
            with self._lock:
                self._runs.pop(head.seq, None)
                head.complete.set()
                self._lock.notify_all()


def _stop(process: Any, jobs: Any) -> None:
    """Ask the worker to finish (it ends after its current run), then make sure it is gone."""
    if process is None:
        return
    with contextlib.suppress(OSError, ValueError):
        jobs.send(None)
    process.join(timeout=5)
    if process.exitcode is None:
        process.kill()
        process.join(timeout=5)


def worker_message(run_seq: int, *, step: int, epoch: int | None, event: str | None, started: str,
                   arrays: Mapping[str, np.ndarray], reduce: str, outputs: np.ndarray | None,
                   modules: Mapping[str, bytes]) -> dict[str, Any]:
    """The message one run sends to the worker: numpy arrays and plain values."""
    return {"seq": run_seq, "step": step, "epoch": epoch, "event": event, "started": started,
            "arrays": {k: np.asarray(v) for k, v in arrays.items()}, "reduce": reduce,
            "outputs": None if outputs is None else np.asarray(outputs), "modules": dict(modules)}


def new_run(seq: int, **kwargs: Any) -> _Run:
    """A :class:`_Run` (kept private; the engine builds them through this)."""
    return _Run(seq=seq, **kwargs)
