"""The reporter interface: where results go. Reporters only write; they never decide what to compute."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from neuronmap.results import Report

__all__ = ["BaseReporter", "Reporter", "RunStatus", "publish_report"]

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

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at ``step``."""

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

    Figures are named ``<analysis>/<figure>`` and tables ``<analysis>/<table>``.
    """
    metrics = report.metrics
    if metrics:
        reporter.log_metrics(metrics, report.step)
    for analysis, result in report.results.items():
        for fig_name, figure in result.figures.items():
            reporter.log_figure(f"{analysis}/{fig_name}", figure, report.step)
        for table_name, table in result.tables.items():
            reporter.log_table(f"{analysis}/{table_name}", table, report.step)
