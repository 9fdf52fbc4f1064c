"""Outage tolerance for every reporter, in one place: guard, spool, back off, replay.

:class:`SpooledReporter` wraps any :class:`~neuronmap.reporters.base.Reporter`. Every call is
guarded. A call that fails with a *transient* error (the tracker is down, the network is
out) is written to a spool folder inside the run folder and replayed, in the original
order, by a later call once the back-off delay has passed, by ``flush`` or at ``close``.
After each failure the next attempt waits twice as long (``retry_after`` up to
``max_retry_after`` seconds), so a dead tracker does not slow training down, and one
:class:`~neuronmap.errors.ReporterWarning` is issued per outage. A call the tracker
*rejects* (a bad key, a payload it refuses) is not retried, since it would fail again and
block every later payload; it is kept in ``rejected.jsonl`` and warned about. Nothing
raises unless ``strict=True``.

Spool layout (``<run_dir>/spool/<i>-<reporter>/``)::

    spool.jsonl      one JSON line per call: seq, method, arguments
    files/<seq>/     what JSON cannot hold: figures as PNG, tables as CSV, copied artifacts
    done             seq of the last delivered line (a new process resumes after it)
    rejected.jsonl   calls the tracker refused, with the error, kept for inspection
    reporter.json    how to rebuild the reporter in another process (``neuronmap replay``):
                     ``{"class": "module:Class", "spec": {...}}`` from the reporter's
                     ``replay_spec()``, written when the first call is spooled

Metrics carry the time they were produced (the last argument of a spooled ``log_metrics``),
so a call replayed after its first attempt half-arrived logs the same points again, which
MLflow stores once.

Nothing is pickled: a spooled figure comes back as a figure showing its PNG, a table as
the DataFrame read back from its CSV, and non-finite floats are written as
``{"$float": "nan"}`` so every line is strict JSON. MLflow metrics (same key, step and
timestamp) and artifacts (same path) are idempotent, so replaying a call whose first
attempt half-arrived does not duplicate it.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap._failures import caller_stacklevel
from neuronmap._files import append_jsonl, write_text_atomic
from neuronmap.errors import InvalidParameterError, ReporterError, ReporterWarning
from neuronmap.reporters._spool_codec import _Codec
from neuronmap.reporters.base import (
    BaseReporter,
    Reporter,
    RunStatus,
    log_metrics_at,
    publish_report,
)
from neuronmap.reporters.local import LocalReporter
from neuronmap.runs.folder import DEFAULT_ROOT, new_run_name, safe_name

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from neuronmap.results import Report

__all__ = ["SpooledReporter", "guard_reporters", "is_retryable"]

_log = logging.getLogger("neuronmap.reporters")


def is_retryable(error: BaseException) -> bool:
    """Whether a failed call is worth retrying (the rule for reporters without their own).

    Errors that say the *payload* is wrong (``ValueError``, ``TypeError``, ``KeyError``,
    ``AttributeError``, :class:`~neuronmap.errors.InvalidParameterError`, a local file that
    does not exist) would fail on every replay, so they are not retried; everything else
    (connection refused, timeouts, HTTP 5xx, a tracker that failed to start) is. Other
    ``OSError`` are checked before ``ValueError`` because some network errors derive from both.
    """
    if isinstance(error, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(error, OSError):
        return True
    return not isinstance(error, (ValueError, TypeError, KeyError, AttributeError, NotImplementedError))


class SpooledReporter(BaseReporter):
    """Wrap a reporter so that an outage never reaches training and nothing is lost.

    Args:
        reporter: The reporter to guard.
        spool_dir: Folder for failed payloads (created only when something fails). Calls
            left there by an earlier process are delivered first.
        strict: Raise :class:`~neuronmap.errors.ReporterError` on a failure (the payload is
            spooled first, so it is still delivered later).
        retry_after: Seconds to wait after the first failure before trying again.
        max_retry_after: Longest wait between attempts (the delay doubles up to it).

    A reporter may define ``is_retryable(error) -> bool`` to classify its own errors;
    otherwise :func:`is_retryable` decides.

    Example:
        >>> import tempfile
        >>> from neuronmap.reporters import LocalReporter
        >>> inner = LocalReporter(tempfile.mkdtemp(), run_name="demo")
        >>> rep = SpooledReporter(inner, spool_dir=inner.run_dir / "spool" / "0-local")
        >>> rep.log_metrics({"neuronmap/x/layer/m": 1.0}, step=0)
        >>> rep.pending
        0
        >>> rep.close()
    """

    def __init__(
        self,
        reporter: Reporter,
        *,
        spool_dir: str | Path,
        strict: bool = False,
        retry_after: float = 1.0,
        max_retry_after: float = 60.0,
    ) -> None:
        if isinstance(reporter, SpooledReporter):
            raise InvalidParameterError(f"{reporter!r} is already spooled; pass its .reporter instead.")
        if not retry_after > 0 or not max_retry_after >= retry_after:
            raise InvalidParameterError(
                "retry_after must be > 0 and max_retry_after >= retry_after; "
                f"got retry_after={retry_after!r}, max_retry_after={max_retry_after!r}."
            )
        self.reporter = reporter
        self.name = str(getattr(reporter, "name", type(reporter).__name__))
        self.spool_dir = Path(spool_dir)
        self.strict = strict
        self.retry_after = float(retry_after)
        self.max_retry_after = float(max_retry_after)
        self._lock = threading.RLock()  # one call at a time reaches the tracker
        # spool files and counters: never held across a tracker call, so a publisher can spill
        # payloads into the spool while a call hangs on the tracker
        self._spool_lock = threading.RLock()
        self._failures = 0
        self._next_try = 0.0
        self._in_outage = False
        entries = self._entries()
        self._pending = len(entries)
        rejected = _read_jsonl(self.spool_dir / "rejected.jsonl")
        self._seq = max([_read_done(self.spool_dir), *(e["seq"] for e in [*entries, *rejected])])

    def __repr__(self) -> str:
        return f"SpooledReporter({self.reporter!r}, pending={self._pending})"

    @property
    def pending(self) -> int:
        """Spooled calls not yet delivered."""
        return self._pending

    @property
    def in_outage(self) -> bool:
        """Whether the last attempt failed (calls are being spooled)."""
        return self._in_outage

    # ------------------------------------------------------------------ core
    def _entries(self) -> list[dict[str, Any]]:
        done = _read_done(self.spool_dir)
        return [e for e in _read_jsonl(self.spool_dir / "spool.jsonl") if e["seq"] > done]

    def _invoke(self, method: str, args: Sequence[Any]) -> None:
        """Call the reporter; a spooled ``log_metrics`` carries its timestamp as a third argument."""
        if method == "log_metrics" and len(args) == 3:
            log_metrics_at(self.reporter, args[0], args[1], timestamp=args[2])
        else:
            getattr(self.reporter, method)(*args)

    def _retryable(self, error: BaseException) -> bool:
        rule: Callable[[BaseException], bool] = getattr(self.reporter, "is_retryable", is_retryable)
        try:
            return bool(rule(error))
        except Exception:  # a broken rule must not turn an outage into data loss
            return True

    @contextmanager
    def _contained(self, method: str) -> Iterator[None]:
        """The spool's own failures (a full disk, an unreadable entry) never reach training either."""
        try:
            yield
        except ReporterError:
            raise
        except Exception as err:
            if self.strict:
                raise ReporterError(f"Could not deliver or spool {method}() of reporter {self.name!r}: {err}") from err
            self._warn(
                f"NeuronMap could not deliver or spool {method}() of reporter {self.name!r} "
                f"({type(err).__name__}: {err}); this call is lost, training goes on."
            )

    def _call(self, method: str, *args: Any) -> None:
        with self._lock, self._contained(method):
            if self._in_outage or self._pending:
                self._spool(method, args)
                delivered = time.monotonic() >= self._next_try and self._replay()
                if not delivered and self.strict:
                    raise ReporterError(
                        f"Reporter {self.reporter!r} is still unreachable; {self._pending} call(s) wait in "
                        f"{self.spool_dir}."
                    )
                return
            try:
                self._invoke(method, args)
            except Exception as err:
                if self._retryable(err):
                    self._spool(method, args)
                    self._back_off(err, method)
                else:
                    self._reject(err, method, args)
                if self.strict:
                    raise ReporterError(f"Reporter {self.reporter!r} failed in {method}(): {err}") from err
            else:
                self._failures = 0

    def _spool(self, method: str, args: Sequence[Any], *, file: str = "spool.jsonl", **extra: Any) -> None:
        with self._spool_lock:
            self._seq += 1
            entry = {"seq": self._seq, "method": method, "time": time.time(), **extra,
                     "args": _Codec(self.spool_dir, self._seq, folder=Path(file).stem).encode_args(args)}
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            self._write_spec()
            append_jsonl(self.spool_dir / file, entry, allow_nan=False)
            if file == "spool.jsonl":
                self._pending += 1

    def spool_call(self, method: str, *args: Any) -> None:
        """Write a call to the spool without trying the tracker (it is delivered by the next replay).

        This never waits for a call in progress, so a publisher can put its undelivered
        payloads here while the tracker hangs. Spool failures are contained as in every call.
        """
        with self._contained(method):
            self._spool(method, args)
            self._in_outage = True

    def _write_spec(self) -> None:
        """Record how to rebuild the reporter, so ``neuronmap replay`` can deliver the spool later."""
        spec = getattr(self.reporter, "replay_spec", None)
        if spec is None:
            return
        try:
            body = {"class": f"{type(self.reporter).__module__}:{type(self.reporter).__qualname__}", "spec": spec()}
            text = json.dumps(body, indent=2, default=str, sort_keys=True)
        except Exception as err:  # a reporter that cannot describe itself still spools
            _log.warning("Reporter %r gave no replay spec (%s); replay it from Python.", self.name, err)
            return
        path = self.spool_dir / "reporter.json"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_text_atomic(path, text)

    def _back_off(self, err: Exception, method: str) -> None:
        """A transient failure: wait twice as long before the next try; warn once per outage."""
        self._failures += 1
        delay = min(self.retry_after * 2 ** (self._failures - 1), self.max_retry_after)
        self._next_try = time.monotonic() + delay
        if not self._in_outage:
            self._in_outage = True
            self._warn(
                f"NeuronMap reporter {self.name!r} failed in {method}() ({type(err).__name__}: {err}); training "
                f"goes on. Calls are spooled to {self.spool_dir} and replayed in order when it answers again "
                f"(next try in {delay:g} s). Pass strict=True to raise instead."
            )

    def _reject(self, err: Exception, method: str, args: Sequence[Any]) -> None:
        """The tracker refused the payload: keep it aside, since retrying would block the spool."""
        self._spool(method, args, file="rejected.jsonl", error=f"{type(err).__name__}: {err}")
        self._warn(
            f"NeuronMap reporter {self.name!r} rejected {method}() ({type(err).__name__}: {err}). The call "
            f"is not retried (it would fail again); it is kept in {self.spool_dir / 'rejected.jsonl'}."
        )

    def _set_aside(self, entry: dict[str, Any], err: Exception) -> None:
        files = self.spool_dir / "files" / str(entry["seq"])
        if files.exists():
            shutil.move(files, self.spool_dir / "rejected-files" / str(entry["seq"]))
        with (self.spool_dir / "rejected.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry | {"error": f"unreadable: {type(err).__name__}: {err}"}) + "\n")
        self._warn(f"NeuronMap set aside spooled call {entry['seq']} of reporter {self.name!r} ({err}).")
        (self.spool_dir / "done").write_text(str(entry["seq"]))
        self._pending -= 1

    def _warn(self, message: str) -> None:
        warnings.warn(message, ReporterWarning, stacklevel=caller_stacklevel())

    def _replay(self) -> bool:
        """Deliver spooled calls in order, stopping at a transient failure; True once drained."""
        entries = self._entries()
        for entry in entries:
            method = entry["method"]
            try:
                args = _Codec(self.spool_dir, entry["seq"]).decode_args(entry["args"])
            except Exception as err:  # damaged entry: set it aside rather than block the rest
                self._set_aside(entry, err)
                continue
            try:
                self._invoke(method, args)
            except Exception as err:
                if self._retryable(err):
                    self._back_off(err, method)
                    return False
                self._reject(err, method, args)
            with self._spool_lock:
                (self.spool_dir / "done").write_text(str(entry["seq"]))
                self._pending -= 1
        with self._spool_lock:
            if self._entries():  # spilled by a publisher while this replay ran: deliver them next
                return self._replay()
            if entries:
                _log.info("NeuronMap reporter %r answers again; replayed %d spooled call(s).", self.name,
                          len(entries))
                shutil.rmtree(self.spool_dir / "files", ignore_errors=True)
                (self.spool_dir / "spool.jsonl").unlink(missing_ok=True)
            self._pending = 0
            self._failures = 0
            self._in_outage = False
        return True

    # ------------------------------------------------------------------ Reporter API
    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        """Log ``metrics``; stamped now when no ``timestamp`` is given, so every replay logs the same points."""
        self._call("log_metrics", dict(metrics), int(step), time.time() if timestamp is None else float(timestamp))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", dict(params))

    def log_figure(self, name: str, figure: Figure, step: int) -> None:
        self._call("log_figure", name, figure, int(step))

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None:
        self._call("log_table", name, dataframe, int(step))

    def log_text(self, name: str, text: str) -> None:
        self._call("log_text", name, text)

    def log_artifact(self, path: str | Path) -> None:
        self._call("log_artifact", Path(path))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("set_tags", {str(k): str(v) for k, v in tags.items()})

    def log_report(self, report: Report) -> None:
        """Reporters with their own ``log_report`` get the report whole; others piece by piece.

        Piece by piece, a failed figure upload spools only that figure, so the metrics that
        did arrive are not sent twice.
        """
        own = getattr(type(self.reporter), "log_report", None)
        if own is not None and own is not BaseReporter.log_report:
            self._call("log_report", report)
        else:
            publish_report(self, report)

    def flush(self) -> None:
        """Replay spooled calls if the back-off allows, then flush the reporter."""
        with self._lock, self._contained("flush"):
            if self._pending and (time.monotonic() < self._next_try or not self._replay()):
                return
            try:
                self.reporter.flush()
            except Exception as err:
                self._back_off(err, "flush")
                if self.strict:
                    raise ReporterError(f"Reporter {self.reporter!r} failed in flush(): {err}") from err

    def close(self, status: RunStatus = "FINISHED") -> None:
        """Replay everything (ignoring the back-off), then close the reporter with ``status``.

        If the tracker is still down, ``close`` is spooled too and a warning says how many
        calls wait in the spool folder; a later ``SpooledReporter`` on that folder delivers
        them (``SpooledReporter(reporter, spool_dir=...).flush()``).
        """
        with self._lock, self._contained("close"):
            if self._pending and not self._replay():
                self._spool("close", (status,))
                self._warn(
                    f"NeuronMap reporter {self.name!r} is still unreachable at close; {self._pending} call(s) "
                    f"stay in {self.spool_dir}. Deliver them later with `{replay_command(self.spool_dir)}`."
                )
                return
            self._call("close", status)

    def deliver(self) -> bool:
        """Replay every spooled call now, ignoring the back-off; ``True`` once the spool is empty.

        A spooled ``close`` is delivered in its place, so the tracker run ends with the status
        recorded when it was spooled (what ``neuronmap replay`` relies on).
        """
        with self._lock, self._contained("deliver"):
            return not self._pending or self._replay()
        return False  # the spool itself failed (contained above, with a warning)


def replay_command(spool_dir: str | Path) -> str:
    """The shell command that delivers a spool folder ``<run_dir>/spool/<i>-<name>`` later."""
    folder = Path(spool_dir)
    run_dir = folder.parent.parent if folder.parent.name == "spool" else None
    return f"neuronmap replay {run_dir}" if run_dir is not None else "neuronmap replay RUN_DIR"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Entries of a spool file; a line cut short by a crash is skipped, with a log message."""
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if line.strip():
                _log.warning("Skipping unreadable line %d of %s.", number, path)
    return entries


def _read_done(spool_dir: Path) -> int:
    path = spool_dir / "done"
    return int(path.read_text().strip() or 0) if path.exists() else 0


def default_spool_root(reporters: Sequence[Reporter]) -> Path:
    """The first local run folder's ``spool/``, else ``neuronmap-runs/<new run>/spool`` (made lazily)."""
    for reporter in reporters:
        inner = getattr(reporter, "reporter", reporter)
        if isinstance(inner, LocalReporter):
            return inner.run_dir / "spool"
    return Path(DEFAULT_ROOT) / new_run_name() / "spool"


def guard_reporters(
    reporters: Sequence[Reporter],
    *,
    spool_root: str | Path | None = None,
    strict: bool = False,
    retry_after: float = 1.0,
    max_retry_after: float = 60.0,
) -> list[Reporter]:
    """Wrap each reporter in a :class:`SpooledReporter` with its own spool folder.

    Args:
        reporters: The reporters, in order.
        spool_root: Parent of the spool folders (default: :func:`default_spool_root`).
        strict, retry_after, max_retry_after: Passed to each :class:`SpooledReporter`.

    Returns:
        The guarded reporters. One that guards itself already (a :class:`SpooledReporter`,
        or one with ``guards_itself = True`` such as ``CompositeReporter``) is kept as is.
    """
    root = Path(spool_root) if spool_root is not None else default_spool_root(reporters)
    guarded: list[Reporter] = []
    for i, reporter in enumerate(reporters):
        if isinstance(reporter, SpooledReporter) or getattr(reporter, "guards_itself", False):
            guarded.append(reporter)
            continue
        name = safe_name(str(getattr(reporter, "name", type(reporter).__name__))).replace("/", "_")
        guarded.append(
            SpooledReporter(
                reporter, spool_dir=root / f"{i}-{name}", strict=strict,
                retry_after=retry_after, max_retry_after=max_retry_after,
            )
        )
    return guarded
