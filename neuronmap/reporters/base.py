"""The reporter interface: where results go. Reporters only write; they never decide what to compute."""

from __future__ import annotations

import contextlib
import inspect
import io
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from neuronmap.results import Report

__all__ = ["BaseReporter", "Reporter", "RunStatus", "log_metrics_at", "publish_report", "render_png", "report_time"]

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]


@runtime_checkable
class Reporter(Protocol):
    """What every reporter implements (check a new one with ``neuronmap.testing.check_reporter``)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_figure(self, name: str, figure: Figure, step: int) -> None: ...

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None: ...

    def log_text(self, name: str, text: str) -> None: ...

    def log_artifact(self, path: str | Path) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: RunStatus = "FINISHED") -> None: ...


class BaseReporter:
    """Convenience base class: every method is a no-op until overridden."""

    name = "base"

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        """Log scalar metrics at ``step``.

        ``timestamp`` (seconds since the epoch) is when the values were produced; the
        publisher sets it once per payload, so a retried call carries the same time and a
        tracker that keys metrics by (key, step, time, value) stores it once.
        """

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log run parameters (configuration)."""

    def log_figure(self, name: str, figure: Figure, step: int) -> None:
        """Log a matplotlib figure."""

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None:
        """Log a table."""

    def log_text(self, name: str, text: str) -> None:
        """Log a text document (markdown, such as the model card)."""

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags."""

    def flush(self) -> None:
        """Write anything buffered."""

    def close(self, status: RunStatus = "FINISHED") -> None:
        """Finish the run with ``status``."""

    def log_report(self, report: Report) -> None:
        """Log one engine report: metrics, then each analysis' figures and tables."""
        publish_report(self, report)


def publish_report(reporter: Reporter, report: Report) -> None:
    """Send a report through the generic reporter API.

    Figures are named ``<analysis>/<figure>`` and tables ``<analysis>/<table>``. Metrics carry
    the report's own time (:func:`report_time`), so publishing the same report twice logs
    the same points.
    """
    metrics = report.metrics
    if metrics:
        log_metrics_at(reporter, metrics, report.step, timestamp=report_time(report))
    for analysis, result in report.results.items():
        for fig_name, figure in result.figures.items():
            reporter.log_figure(f"{analysis}/{fig_name}", figure, report.step)
        for table_name, table in result.tables.items():
            reporter.log_table(f"{analysis}/{table_name}", table, report.step)


def report_time(report: Report) -> float:
    """When ``report`` was made, in seconds since the epoch (its metrics' timestamp everywhere)."""
    try:
        return datetime.fromisoformat(str(report.timestamp)).timestamp()
    except ValueError:
        return time.time()


_TAKES_TIMESTAMP: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _takes_timestamp(reporter: Any) -> bool:
    cls = type(reporter)
    if cls not in _TAKES_TIMESTAMP:
        try:
            params = inspect.signature(reporter.log_metrics).parameters
            _TAKES_TIMESTAMP[cls] = "timestamp" in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
            )
        except (TypeError, ValueError):
            _TAKES_TIMESTAMP[cls] = False
    return _TAKES_TIMESTAMP[cls]


def log_metrics_at(reporter: Any, metrics: Mapping[str, float], step: int, *, timestamp: float | None) -> None:
    """``reporter.log_metrics`` with ``timestamp`` when it takes one (reporters written before it did not)."""
    if timestamp is not None and _takes_timestamp(reporter):
        reporter.log_metrics(metrics, step, timestamp=timestamp)
    else:
        reporter.log_metrics(metrics, step)


#: Drawing a matplotlib figure mutates it (canvas, dpi, layout caches), so two reporters on
#: two publisher threads must not draw the same figure at once; they share one PNG instead.
_FIGURE_LOCK = threading.Lock()
_PNG_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[float, bool], bytes]] = weakref.WeakKeyDictionary()


def render_png(figure: Figure, *, dpi: float = 100, tight: bool = True) -> bytes:
    """``figure`` as PNG bytes, drawn once per figure and settings, whatever thread asks.

    Every built-in reporter writes figures through this function, so a report fanned out to
    several trackers is drawn once, and concurrent publisher threads never draw the same
    figure at the same time.
    """
    key = (float(dpi), bool(tight))
    with _FIGURE_LOCK:
        cached = _PNG_CACHE.get(figure, {}).get(key)
        if cached is not None:
            return cached
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
        data = buffer.getvalue()
        with contextlib.suppress(TypeError):  # an object without weak references is not cached
            _PNG_CACHE.setdefault(figure, {})[key] = data
        return data
