"""TensorBoard reporter: scalars, figures (``add_figure``), tables and model cards as markdown text.

TensorBoard has no tables or artifacts: tables become markdown text (its text plugin
renders them), params and tags a JSON code block, and files from ``log_artifact`` are
copied next to the event files under ``neuronmap-artifacts/``.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap._headline import Scalars, check_scalars
from neuronmap._imports import TENSORBOARD_AVAILABLE
from neuronmap.errors import InvalidParameterError
from neuronmap.reporters.base import BaseReporter, RunStatus, render_png
from neuronmap.runs.folder import DEFAULT_ROOT, new_run_name

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from torch.utils.tensorboard import SummaryWriter

    from neuronmap.results import Report

__all__ = ["TensorBoardReporter"]

_STATUSES = ("FINISHED", "FAILED", "KILLED")


class TensorBoardReporter(BaseReporter):
    """Write to a ``SummaryWriter``: a given one, a Lightning ``TensorBoardLogger``'s, or a new one.

    Args:
        writer: A ``SummaryWriter`` (``torch.utils.tensorboard`` or ``tensorboardX``), a
            Lightning ``TensorBoardLogger`` (its ``.experiment`` is the writer), or the log
            folder of a new writer (default ``neuronmap-runs/<new run>/tensorboard``).
        max_table_rows: Rows of a table shown as text (the rest is summarised).
        scalars: ``"headline"`` (default): each analysis' headline metrics as scalars;
            ``"all"``: every CI and p-value too.

    A borrowed writer is flushed, never closed, by :meth:`close`.

    Example:
        >>> import tempfile
        >>> from neuronmap.reporters import TensorBoardReporter
        >>> rep = TensorBoardReporter(tempfile.mkdtemp())
        >>> rep.log_metrics({"neuronmap/probing/encoder.layer.5/accuracy": 0.91}, step=100)
        >>> rep.close()
    """

    name = "tensorboard"

    def __init__(
        self,
        writer: SummaryWriter | str | Path | Any | None = None,
        *,
        max_table_rows: int = 200,
        scalars: Scalars = "headline",
    ) -> None:
        TENSORBOARD_AVAILABLE.require("TensorBoardReporter")
        is_path = isinstance(writer, (str, Path))
        is_logger = hasattr(writer, "experiment")
        if not (writer is None or is_path or is_logger or callable(getattr(writer, "add_scalar", None))):
            raise InvalidParameterError(
                "writer must be a SummaryWriter, a Lightning TensorBoardLogger or a log folder; "
                f"got {type(writer).__name__}."
            )
        if not isinstance(max_table_rows, int) or max_table_rows < 1:
            raise InvalidParameterError(f"max_table_rows must be a positive int; got {max_table_rows!r}.")
        self._writer: Any | None = None if is_path or is_logger else writer
        self._logger: Any | None = writer if is_logger else None
        self._owns_writer = False
        self.log_dir = Path(writer) if isinstance(writer, (str, Path)) else None
        self.max_table_rows = max_table_rows
        self.scalars = check_scalars(scalars, "TensorBoardReporter")
        self._layout_written = False

    def __repr__(self) -> str:
        return f"TensorBoardReporter({str(self.log_dir) if self.log_dir else 'borrowed writer'!r})"

    @property
    def writer(self) -> SummaryWriter:
        """The ``SummaryWriter`` (created on first use)."""
        if self._writer is None:
            if self._logger is not None:
                self._writer = self._logger.experiment
            else:
                from torch.utils.tensorboard import SummaryWriter

                if self.log_dir is None:
                    self.log_dir = Path(DEFAULT_ROOT) / new_run_name() / "tensorboard"
                self._writer = SummaryWriter(str(self.log_dir))
                self._owns_writer = True
        writer: SummaryWriter = self._writer
        if not self._owns_writer and _was_closed(writer):
            # Its owner closed it (HF's TensorBoardCallback does at train end, before later
            # callbacks' on_train_end). Writing reopens a new event file, which is ours to close.
            self._owns_writer = True
        return writer

    # ------------------------------------------------------------------ Reporter API
    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        """One scalar per key (NaN is kept; TensorBoard draws a gap), at wall time ``timestamp``."""
        writer = self.writer
        for key, value in metrics.items():
            writer.add_scalar(str(key), float(value), int(step), walltime=timestamp)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The configuration as a JSON code block under ``neuronmap/config``."""
        body = json.dumps(dict(params), indent=2, default=str, sort_keys=True)
        self.writer.add_text("neuronmap/config", _code_block(body))

    def log_figure(self, name: str, figure: Figure, step: int) -> None:
        """``add_figure`` under ``neuronmap/figures/<name>`` (the caller's figure is left open)."""
        import numpy as np
        from matplotlib.image import imread

        # drawn once for every reporter (render_png), never concurrently with another thread
        image = imread(io.BytesIO(render_png(figure, dpi=figure.dpi, tight=False)), format="png")
        self.writer.add_image(f"neuronmap/figures/{name}", np.asarray(image[..., :3] * 255, dtype=np.uint8),
                              int(step), dataformats="HWC")

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None:
        """A markdown table under ``neuronmap/tables/<name>``."""
        self.writer.add_text(f"neuronmap/tables/{name}", markdown_table(dataframe, max_rows=self.max_table_rows),
                             int(step))

    def log_text(self, name: str, text: str) -> None:
        """Markdown under ``neuronmap/texts/<name>`` (TensorBoard's text tab renders it)."""
        self.writer.add_text(f"neuronmap/texts/{name}", text)

    def log_artifact(self, path: str | Path) -> None:
        """Copy a file or folder to ``<log_dir>/neuronmap-artifacts/``."""
        src = Path(path)
        if not src.exists():
            raise InvalidParameterError(f"log_artifact got a path that does not exist: {str(src)!r}.")
        dest = Path(self.writer.get_logdir()) / "neuronmap-artifacts" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags as a JSON code block under ``neuronmap/tags``."""
        body = json.dumps({str(k): str(v) for k, v in tags.items()}, indent=2, sort_keys=True)
        self.writer.add_text("neuronmap/tags", _code_block(body))

    def log_report(self, report: Report) -> None:
        """Headline scalars, a custom-scalars layout, the findings as text, then figures and tables.

        Scalars are keyed ``neuronmap/<analysis>/<metric>/<layer>`` (``scalars="all"`` adds every
        CI and p-value); the Custom Scalars tab gets one multi-line chart per metric with a
        line per layer (written with the first report: TensorBoard keeps a run's first
        layout); the findings go to the text tab under ``neuronmap/findings`` at this step.
        """
        from neuronmap._headline import tracker_metrics
        from neuronmap.reporters._present import custom_scalars_layout, findings_markdown
        from neuronmap.reporters.base import report_time

        metrics = tracker_metrics(report, scalars=self.scalars)
        if metrics:
            self.log_metrics(metrics, report.step, timestamp=report_time(report))
        if not self._layout_written and metrics:
            self.writer.add_custom_scalars(custom_scalars_layout(report, metrics))
            self._layout_written = True
        self.writer.add_text("neuronmap/findings", findings_markdown(
            report, footer="One chart per metric across layers: Custom Scalars tab. Every statistic: "
            "the run folder's metrics.jsonl and report.html."), int(report.step))
        for analysis, result in report.results.items():
            for fig_name, figure in result.figures.items():
                self.log_figure(f"{analysis}/{fig_name}", figure, report.step)
            for table_name, table in result.tables.items():
                self.log_table(f"{analysis}/{table_name}", table, report.step)

    def where(self) -> str:
        """Where to look (the per-run console line)."""
        folder = self.log_dir if self.log_dir is not None else "(the trainer's log folder)"
        return f"tensorboard --logdir {folder}"

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: RunStatus = "FINISHED") -> None:
        """Record ``status`` as text, flush, and close a writer this reporter created."""
        if status not in _STATUSES:
            raise InvalidParameterError(f"status must be one of {list(_STATUSES)}; got {status!r}.")
        if self._writer is None and self._logger is None:
            return  # never written to: nothing to close, and no empty log folder
        writer = self.writer
        writer.add_text("neuronmap/status", status)
        writer.flush()
        if self._owns_writer:
            writer.close()


def _was_closed(writer: Any) -> bool:
    """Whether a torch ``SummaryWriter`` was closed (``close()`` drops its file writer)."""
    return "file_writer" in vars(writer) and writer.file_writer is None


def markdown_table(dataframe: pd.DataFrame, *, max_rows: int = 200) -> str:
    """A GitHub-flavoured markdown table (floats to 4 significant digits, ``|`` escaped).

    Written here rather than with ``DataFrame.to_markdown`` so that ``tabulate`` is not a
    dependency.

    Example:
        >>> import pandas as pd
        >>> print(markdown_table(pd.DataFrame({"layer": ["a"], "cka": [0.123456]})))
        | layer | cka |
        |---|---|
        | a | 0.1235 |
    """
    import pandas as pd

    frame = dataframe if isinstance(dataframe.index, pd.RangeIndex) else dataframe.reset_index()
    rows = [[str(c) for c in frame.columns]]
    rows += [[_cell(v) for v in row] for row in frame.head(max_rows).itertuples(index=False, name=None)]
    lines = ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    if len(frame) > max_rows:
        lines.append(f"\n_{len(frame) - max_rows} more rows not shown._")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _code_block(body: str) -> str:
    # four-space indentation: TensorBoard's markdown renders it as code without fences
    return "\n".join("    " + line for line in body.splitlines())
