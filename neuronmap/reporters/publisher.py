"""The one place that sends results to reporters, off the training thread.

A :class:`Publisher` owns a monitor's reporters from start to end: it resolves them (names
from the registry, the default local run folder), guards each with its own spool
(:mod:`neuronmap.reporters._spool`), logs the configuration once, publishes every
:class:`~neuronmap.results.Report` and the extra payloads that gates and the audit trail
produce, and closes them.

Threading model: each reporter gets a *lane*, a bounded queue served by one daemon thread.
The training thread only enqueues (microseconds); the lane's thread makes the tracker call.
A tracker that hangs therefore holds up its own lane and nothing else: not training, not
the other reporters. A lane whose queue is full writes the new payload straight into its
reporter's spool (a local file append) instead of waiting. Each payload is stamped once,
when it is created, so a retried call logs the same points (MLflow stores them once).

At :meth:`Publisher.close` every lane gets a bounded time (``close_timeout``) to deliver what
it holds. A lane still busy after that has its remaining payloads, the one in flight
included, written to its spool, and one warning names ``neuronmap replay RUN_DIR``, which
delivers them later and ends the tracker run with the status recorded here.

``strict=True`` publishes on the calling thread instead, so that a reporter failure can
raise where the user asked for it.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap.errors import InvalidParameterError, ReporterError, ReporterWarning
from neuronmap.reporters.base import Reporter, RunStatus, log_metrics_at, publish_report

if TYPE_CHECKING:
    from neuronmap.reporters._spool import SpooledReporter
    from neuronmap.results import Report

__all__ = ["Publisher"]


@dataclass
class _Call:
    """One reporter call waiting in a lane."""

    method: str
    args: tuple[Any, ...]


class _Lane:
    """One reporter's queue and the daemon thread that serves it."""

    def __init__(self, reporter: Reporter, *, max_queue: int, name: str) -> None:
        self.reporter = reporter
        self.max_queue = max_queue
        self.name = name
        self._queue: deque[_Call] = deque()
        self._cond = threading.Condition()
        self._busy: _Call | None = None
        self._thread: threading.Thread | None = None
        self._abandoned = False
        self._finishing = False
        self.overflowed = 0

    # -------------------------------------------------------------- training thread
    def submit(self, call: _Call) -> None:
        with self._cond:
            if self._abandoned:
                spill = True
            elif len(self._queue) >= self.max_queue:
                spill = True
                self.overflowed += 1
            else:
                spill = False
                self._queue.append(call)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name=f"neuronmap-publish-{self.name}",
                                                    daemon=True)
                    self._thread.start()
                self._cond.notify()
        if spill:
            _spill(self.reporter, [call])

    def wait(self, deadline: float) -> bool:
        """Wait until the lane is idle (True) or ``deadline`` (``time.monotonic()``) passes (False)."""
        with self._cond:
            while self._queue or self._busy is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def abandon(self) -> int:
        """Move what the lane still holds, the call in flight included, into the spool; return the count.

        The call in flight may still arrive later; trackers that key payloads by time (MLflow
        metrics) or by path (artifacts) then hold it once.
        """
        with self._cond:
            self._abandoned = True
            calls = ([self._busy] if self._busy is not None else []) + list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        _spill(self.reporter, calls)
        return len(calls)

    def finish(self) -> None:
        """Let the thread end once the queue is drained (the publisher closed)."""
        with self._cond:
            self._finishing = True
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (self._busy is not None)

    # -------------------------------------------------------------- lane thread
    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._abandoned and not self._finishing:
                    self._cond.wait()
                if self._abandoned or not self._queue:  # abandoned, or finished and drained
                    return
                call = self._busy = self._queue.popleft()
            try:
                _deliver(self.reporter, call)
            except Exception as err:  # a reporter that guards itself and still raised: never fatal
                warnings.warn(
                    f"NeuronMap reporter {self.name!r} failed in {call.method}() "
                    f"({type(err).__name__}: {err}); training goes on.",
                    ReporterWarning,
                    stacklevel=2,
                )
            with self._cond:
                self._busy = None
                self._cond.notify_all()


def _deliver(reporter: Reporter, call: _Call) -> None:
    if call.method == "log_report":
        log_report = getattr(reporter, "log_report", None)
        if log_report is not None:
            log_report(call.args[0])
        else:
            publish_report(reporter, call.args[0])
    elif call.method == "log_metrics":
        log_metrics_at(reporter, call.args[0], call.args[1], timestamp=call.args[2])
    else:
        getattr(reporter, call.method)(*call.args)


def _spill(reporter: Reporter, calls: Sequence[_Call]) -> None:
    """Write calls into the reporter's spool without waiting for the tracker."""
    from neuronmap.reporters._spool import SpooledReporter
    from neuronmap.reporters.base import publish_report as _piecewise

    if not calls:
        return
    if not isinstance(reporter, SpooledReporter):  # guards itself (CompositeReporter): best effort, in order
        for call in calls:
            _deliver(reporter, call)
        return
    for call in calls:
        if call.method == "log_report":
            own = getattr(type(reporter.reporter), "log_report", None)
            if own is not None:
                reporter.spool_call("log_report", call.args[0])
            else:
                _piecewise(_SpoolOnly(reporter), call.args[0])
        else:
            reporter.spool_call(call.method, *call.args)


class _SpoolOnly:
    """Reporter-shaped view of a spool: every call is written, none is tried."""

    def __init__(self, spooled: SpooledReporter) -> None:
        self._spooled = spooled

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        self._spooled.spool_call("log_metrics", dict(metrics), int(step),
                                 time.time() if timestamp is None else float(timestamp))

    def __getattr__(self, method: str) -> Any:
        return lambda *args: self._spooled.spool_call(method, *args)


class Publisher:
    """Resolve, guard, and feed a monitor's reporters on background threads.

    Args:
        reporters: Reporter objects or registry names; ``None`` means one
            :class:`~neuronmap.reporters.LocalReporter` under ``neuronmap-runs/``, made on
            first use; ``[]`` reports nowhere.
        strict: Publish on the calling thread and raise
            :class:`~neuronmap.errors.ReporterError` when a reporter fails.
        max_queue: Calls a lane holds in memory before it writes new ones straight to its
            spool (a report is about three calls: params, the report, a flush).
        close_timeout: Seconds :meth:`close` waits for the lanes before it leaves the rest
            in the spool.

    Raises:
        InvalidParameterError: ``max_queue`` or ``close_timeout`` out of range.

    Example:
        >>> import tempfile
        >>> from neuronmap.reporters import LocalReporter
        >>> local = LocalReporter(tempfile.mkdtemp(), run_name="demo")
        >>> publisher = Publisher([local])
        >>> publisher.log_metrics({"neuronmap/gates/x/passed": 1.0}, step=3)
        >>> publisher.flush()
        True
        >>> publisher.close()
        >>> (local.run_dir / "metrics.jsonl").exists()
        True
    """

    def __init__(
        self,
        reporters: Sequence[Reporter | str] | None = None,
        *,
        strict: bool = False,
        max_queue: int = 64,
        close_timeout: float = 30.0,
    ) -> None:
        if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 1:
            raise InvalidParameterError(f"max_queue must be an int >= 1; got {max_queue!r}.")
        if not isinstance(close_timeout, (int, float)) or isinstance(close_timeout, bool) or close_timeout < 0:
            raise InvalidParameterError(f"close_timeout must be a number of seconds >= 0; got {close_timeout!r}.")
        self.spec = None if reporters is None else list(reporters)
        self.strict = strict
        self.max_queue = max_queue
        self.close_timeout = float(close_timeout)
        self._reporters: list[Reporter] | None = None
        self._guarded: list[Reporter] | None = None
        self._lanes: list[_Lane] | None = None
        self._params_logged = False
        self._closed = False

    def __repr__(self) -> str:
        names = [getattr(r, "name", type(r).__name__) for r in self._reporters or ()]
        return f"Publisher({names if self._reporters is not None else self.spec!r}, strict={self.strict})"

    # ------------------------------------------------------------------ reporters
    @property
    def user_chose(self) -> bool:
        """Whether reporters were given (``[]`` included) rather than left to the default."""
        return self.spec is not None or self._reporters is not None

    @property
    def resolved(self) -> bool:
        """Whether the reporters have been created (nothing is created before the first use)."""
        return self._reporters is not None

    @property
    def reporters(self) -> list[Reporter]:
        """The reporters as given (unguarded), created on first use."""
        if self._reporters is None:
            from neuronmap.reporters import LocalReporter, get_reporter

            if self.spec is None:
                self._reporters = [LocalReporter()]
            else:
                self._reporters = [get_reporter(r) if isinstance(r, str) else r for r in self.spec]
            from neuronmap.reporters._present import share_run_folder

            share_run_folder(self._reporters)  # one run folder per monitor, one MLflow store per project
        return self._reporters

    @reporters.setter
    def reporters(self, value: Sequence[Reporter]) -> None:
        if self._lanes is not None:
            raise InvalidParameterError("Reporters cannot change once publishing has started.")
        self._reporters = list(value)
        self._guarded = None

    @property
    def guarded(self) -> list[Reporter]:
        """The reporters, each behind its own spool (one that guards itself is kept as is)."""
        if self._guarded is None:
            from neuronmap.reporters._spool import guard_reporters

            self._guarded = guard_reporters(self.reporters, strict=self.strict)
        return self._guarded

    @property
    def run_dir(self) -> Path | None:
        """The folder of the first local run folder among the reporters, if any."""
        from neuronmap.reporters.local import LocalReporter

        for reporter in self._reporters or ():
            if isinstance(reporter, LocalReporter):
                return reporter.run_dir
        return None

    def _lanes_now(self) -> list[_Lane]:
        if self._lanes is None:
            self._lanes = [
                _Lane(r, max_queue=self.max_queue,
                      name=f"{i}-{getattr(getattr(r, 'reporter', r), 'name', type(r).__name__)}")
                for i, r in enumerate(self.guarded)
            ]
        return self._lanes

    def _send(self, method: str, *args: Any, skip: Callable[[Reporter], bool] | None = None) -> None:
        if self._closed:  # published again after close (an evaluation after training): new lanes
            self._closed, self._lanes = False, None
        call = _Call(method, args)
        targets: Sequence[Reporter | _Lane] = self.guarded if self.strict else self._lanes_now()
        for target in targets:
            reporter = target.reporter if isinstance(target, _Lane) else target
            if skip is not None and skip(getattr(reporter, "reporter", reporter)):
                continue
            target.submit(call) if isinstance(target, _Lane) else _deliver(target, call)

    # ------------------------------------------------------------------ payloads
    def publish(self, report: Report, *, params: Mapping[str, Any] | None = None) -> None:
        """Queue ``report`` for every reporter (after ``params``, the first time only), then a flush."""
        if params is not None and not self._params_logged:
            self._send("log_params", dict(params))
            self._params_logged = True
        self._send("log_report", report)
        self._send("flush")

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        """Queue extra metrics (gate outcomes ...), stamped now unless ``timestamp`` is given."""
        self._send("log_metrics", dict(metrics), int(step), time.time() if timestamp is None else float(timestamp))

    def log_artifact(self, path: str | Path, *, skip: Callable[[Reporter], bool] | None = None) -> None:
        """Queue a file for every reporter, except those for which ``skip(reporter)`` is true.

        ``skip`` lets the audit trail leave out the run folder the file already lies in.
        """
        self._send("log_artifact", Path(path), skip=skip)

    def log_text(self, name: str, text: str) -> None:
        """Queue a text document (a model card) for every reporter."""
        self._send("log_text", name, text)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Queue run tags for every reporter."""
        self._send("set_tags", {str(k): str(v) for k, v in tags.items()})

    # ------------------------------------------------------------------ waiting and closing
    @property
    def pending(self) -> int:
        """Calls queued or in flight, over all lanes."""
        return sum(lane.pending for lane in self._lanes or ())

    def flush(self, timeout: float | None = None, *, only_local: bool = False) -> bool:
        """Wait until every queued call was delivered or spooled; ``False`` if ``timeout`` ran out.

        ``only_local=True`` waits for the local run folders alone (a disk write, never a
        tracker): what the audit trail needs before it hashes the folder's files.
        """
        from neuronmap.reporters.local import LocalReporter

        deadline = time.monotonic() + (1e9 if timeout is None else float(timeout))
        lanes = [lane for lane in self._lanes or ()
                 if not only_local or isinstance(getattr(lane.reporter, "reporter", lane.reporter), LocalReporter)]
        return all([lane.wait(deadline) for lane in lanes])

    def close(self, status: RunStatus = "FINISHED", *, timeout: float | None = None) -> None:
        """Close every reporter with ``status``, waiting at most ``timeout`` (default ``close_timeout``).

        What a lane could not deliver in time stays in its spool, with one warning naming the
        command that delivers it later. Closing twice does nothing; publishing after a close
        (an evaluation after training) starts new lanes, and the next close ends them.
        """
        if self._closed or self._reporters is None:
            self._closed = True
            return
        self._send("close", status)
        self._closed = True
        if self.strict:
            return
        deadline = time.monotonic() + (self.close_timeout if timeout is None else float(timeout))
        lanes = self._lanes_now()
        late = [lane for lane in lanes if not lane.wait(deadline)]
        for lane in lanes:
            lane.finish()
        if not late:
            return
        left = {lane.name: lane.abandon() for lane in late}
        folders = sorted({str(getattr(lane.reporter, "spool_dir", "?")) for lane in late})
        run_dir = _run_dir_of(folders)
        command = f"neuronmap replay {run_dir}" if run_dir else "neuronmap replay RUN_DIR"
        message = (
            f"NeuronMap reporter(s) {sorted(left)} did not finish within "
            f"{self.close_timeout if timeout is None else timeout:g} s at close; "
            f"{sum(left.values())} call(s) are kept in {', '.join(folders)}. "
            f"Deliver them later with `{command}`; training is unaffected."
        )
        if self.strict:  # pragma: no cover - strict publishes synchronously
            raise ReporterError(message)
        warnings.warn(message, ReporterWarning, stacklevel=3)


def _run_dir_of(spool_dirs: Sequence[str]) -> str | None:
    """``<run_dir>`` of ``<run_dir>/spool/<i>-<name>`` folders, when they share one."""
    parents = {str(Path(d).parent.parent) for d in spool_dirs if Path(d).parent.name == "spool"}
    return parents.pop() if len(parents) == 1 else None
