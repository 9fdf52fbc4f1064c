"""Weights & Biases reporter: metrics on NeuronMap's own step axis, images, tables, HTML model cards.

W&B drops a value logged with ``step=`` lower than the run's current step (wandb #9449),
and NeuronMap's analysis steps often lag the trainer's. So this reporter never passes
``step=``: it declares ``neuronmap/step`` with ``define_metric`` and plots every
``neuronmap/*`` key against it, which keeps each value whatever the trainer logged before.

It also leaves W&B's own step counter to the trainer: values go into the current history
row with ``commit=False`` (the trainer's next ``log``, or ``finish``, commits it). Only
when that row already holds a different value for one of the keys (two analysis runs
with no trainer log in between) is the row committed first, so nothing is overwritten
and a user who logs with an explicit ``step=`` is not pushed behind W&B's counter.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap._headline import Scalars, check_scalars
from neuronmap._imports import WANDB_AVAILABLE
from neuronmap.errors import InvalidParameterError
from neuronmap.reporters.base import BaseReporter, RunStatus, render_png

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from neuronmap.reporters._present import RunMirror
    from neuronmap.results import Report

__all__ = ["WandbReporter"]

_STATUSES = ("FINISHED", "FAILED", "KILLED")


class WandbReporter(BaseReporter):
    """Log into a W&B run: a given one, a Lightning ``WandbLogger``'s, ``wandb.run``, or a new one.

    The run is looked up (or ``wandb.init`` called) on first use, so a failing
    ``wandb.init`` is an ordinary reporter failure: spooled and retried, while other
    reporters go on.

    Args:
        run: Log into this run, or into this Lightning ``WandbLogger``'s run (its ``.experiment``).
        project: Project of a new run.
        entity: Entity (team) of a new run.
        run_name: Name of a new run.
        mode: ``"online"``, ``"offline"`` or ``"disabled"`` for a new run (default: W&B's,
            e.g. ``WANDB_MODE``).
        dir: Folder for W&B's local files of a new run.
        tags: Tags of a new run.
        init_kwargs: Further ``wandb.init`` arguments.
        init_timeout: Seconds ``wandb.init`` may wait for the server, unless ``init_kwargs``
            has ``settings``; W&B's default of 90 s would stall training at every retry
            while the server is down.
        step_metric: The x-axis key of NeuronMap's metrics.
        scalars: ``"headline"`` (default): each analysis' headline metrics as charts;
            ``"all"``: every CI and p-value too.
        line_series: Also log one ``wandb.plot.line_series`` chart per headline metric,
            with a line per layer over ``neuronmap/step``, under
            ``neuronmap/charts/<analysis>/<metric>`` (W&B's default panels draw one chart
            per key, i.e. one per layer).

    Only a run this reporter started is finished by :meth:`close` (``FAILED`` and
    ``KILLED`` finish it with exit code 1, which W&B shows as failed).

    Example:
        >>> from neuronmap.reporters import WandbReporter
        >>> rep = WandbReporter(project="demo", mode="offline")  # doctest: +SKIP
        >>> rep.log_metrics({"neuronmap/probing/encoder.layer.5/accuracy": 0.91}, step=100)  # doctest: +SKIP
        >>> rep.close()  # doctest: +SKIP
    """

    name = "wandb"

    def __init__(
        self,
        run: Any | None = None,
        *,
        project: str = "neuronmap",
        entity: str | None = None,
        run_name: str | None = None,
        mode: str | None = None,
        dir: str | Path | None = None,
        tags: Sequence[str] | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        init_timeout: float = 30.0,
        step_metric: str = "neuronmap/step",
        scalars: Scalars = "headline",
        line_series: bool = True,
    ) -> None:
        WANDB_AVAILABLE.require("WandbReporter")
        if run is not None and not (hasattr(run, "experiment") or callable(getattr(run, "log", None))):
            raise InvalidParameterError(
                f"run must be a wandb Run or a Lightning WandbLogger (with .experiment); got {type(run).__name__}."
            )
        if mode not in (None, "online", "offline", "disabled", "shared"):
            raise InvalidParameterError(
                f"mode must be one of ['online', 'offline', 'disabled', 'shared'] or None; got {mode!r}."
            )
        is_logger = hasattr(run, "experiment")
        self._logger = run if is_logger else None
        self._run = None if is_logger else run
        self._owns_run = False
        self._defined = False
        self._row: dict[str, Any] = {}
        self._row_step: int | None = None
        self.step_metric = step_metric
        self.init_kwargs: dict[str, Any] = {
            "project": project, "entity": entity, "name": run_name, "mode": mode,
            "dir": None if dir is None else str(dir), "tags": None if tags is None else list(tags),
            **dict(init_kwargs or {}),
        }
        self.init_timeout = init_timeout
        self.scalars = check_scalars(scalars, "WandbReporter")
        self.line_series = bool(line_series)
        #: (analysis, metric) -> layer -> [(step, value)], the history the line charts redraw.
        self._series: dict[tuple[str, str], dict[str, list[tuple[int, float]]]] = {}
        self._mirror: RunMirror | None = None

    def __repr__(self) -> str:
        run_id = getattr(self._run, "id", None)
        return f"WandbReporter({run_id or ('logger' if self._logger is not None else 'new run')!r})"

    @property
    def run(self) -> Any:
        """The W&B run (looked up or started on first use)."""
        if self._run is None:
            import wandb

            if self._logger is not None:
                self._run = self._logger.experiment
            elif wandb.run is not None:
                self._run = wandb.run
            else:
                kwargs = {k: v for k, v in self.init_kwargs.items() if v is not None}
                kwargs.setdefault("settings", wandb.Settings(init_timeout=self.init_timeout))
                self._run = wandb.init(**kwargs)
                self._owns_run = True
        if not self._defined:
            self._run.define_metric(self.step_metric)
            self._run.define_metric("neuronmap/*", step_metric=self.step_metric)
            self._defined = True
        return self._run

    def _log(self, data: Mapping[str, Any]) -> None:
        """Add ``data`` to W&B's current history row, committing it first only on a clash."""
        run = self.run
        if run.step != self._row_step:  # someone committed the row since our last log
            self._row = {}
        if any(key in self._row and not _same(self._row[key], value) for key, value in data.items()):
            run.log({}, commit=True)
            self._row = {}
        run.log(dict(data), commit=False)
        self._row.update(data)
        self._row_step = run.step

    # ------------------------------------------------------------------ Reporter API
    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        """Log ``metrics`` with ``neuronmap/step = step`` (no ``step=``, so nothing is dropped).

        W&B stamps rows itself; ``timestamp`` is accepted for the reporter interface.
        """
        self._log({**{str(k): float(v) for k, v in metrics.items()}, self.step_metric: int(step)})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the run config."""
        self.run.config.update(json.loads(json.dumps(dict(params), default=str)), allow_val_change=True)

    def log_figure(self, name: str, figure: Figure, step: int) -> None:
        """Log ``figure`` as a ``wandb.Image`` under ``neuronmap/figures/<name>``."""
        import wandb
        from PIL import Image

        # rendered here rather than by wandb.Image(figure), which needs pyplot; drawn once
        # for every reporter and never concurrently with another thread (render_png)
        with Image.open(io.BytesIO(render_png(figure))) as image:
            self._log({f"neuronmap/figures/{name}": wandb.Image(image.convert("RGBA")), self.step_metric: int(step)})

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None:
        """Log a ``wandb.Table`` under ``neuronmap/tables/<name>`` (a non-default index becomes a column)."""
        import pandas as pd
        import wandb

        frame = dataframe if isinstance(dataframe.index, pd.RangeIndex) else dataframe.reset_index()
        self._log({f"neuronmap/tables/{name}": wandb.Table(dataframe=frame), self.step_metric: int(step)})

    def log_text(self, name: str, text: str) -> None:
        """Show markdown ``text`` as an HTML panel and keep the markdown as a W&B artifact."""
        import wandb

        self._log({f"neuronmap/texts/{name}": wandb.Html(io.StringIO(_markdown_html(text)))})
        artifact = wandb.Artifact(_artifact_name(f"neuronmap-{name}"), type="neuronmap-text")
        suffix = "" if Path(name).suffix else ".md"
        with artifact.new_file(f"{Path(name).name}{suffix}", mode="w", encoding="utf-8") as fh:
            fh.write(text)
        self.run.log_artifact(artifact)

    def log_artifact(self, path: str | Path) -> None:
        """Log a file or folder as a W&B artifact named ``neuronmap-<name>``."""
        import wandb

        src = Path(path)
        if not src.exists():
            raise InvalidParameterError(f"log_artifact got a path that does not exist: {str(src)!r}.")
        artifact = wandb.Artifact(_artifact_name(f"neuronmap-{src.name}"), type="neuronmap-file")
        if src.is_dir():
            artifact.add_dir(str(src))
        else:
            artifact.add_file(str(src))
        self.run.log_artifact(artifact)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add ``key=value`` run tags (cut to W&B's 64 characters; full values in the config)."""
        run = self.run
        new = [f"{k}={v}"[:64] for k, v in tags.items()]
        run.tags = tuple(dict.fromkeys([*(run.tags or ()), *new]))
        run.config.update({"neuronmap_tags": {str(k): str(v) for k, v in tags.items()}}, allow_val_change=True)

    def log_report(self, report: Report) -> None:
        """Headline scalars, the findings in the run summary, figures, tables and the full record.

        Scalars are keyed ``neuronmap/<analysis>/<metric>/<layer>`` against ``neuronmap/step``
        (``scalars="all"`` adds every CI and p-value). The run summary gets
        ``neuronmap/findings`` (the ranked lines) and ``neuronmap/top_finding``. The full
        record goes to ``<run dir>/files/neuronmap/`` (``metrics.jsonl``, ``reports/``,
        ``report.html`` at close), which W&B uploads with the run and ``neuronmap gate|report``
        read from an offline run folder.
        """
        from neuronmap._headline import tracker_metrics
        from neuronmap.findings import findings_of, summary_text
        from neuronmap.reporters._present import RunMirror

        metrics = tracker_metrics(report, scalars=self.scalars)
        if metrics:
            self.log_metrics(metrics, report.step)
        if self.line_series:
            self._log_line_series(tracker_metrics(report, scalars="headline"), report.step)
        found = findings_of(report)
        run = self.run
        run.summary["neuronmap/findings"] = summary_text(found)
        run.summary["neuronmap/findings_count"] = len(found)
        if found:
            run.summary["neuronmap/top_finding"] = found[0].line()
        for analysis, result in report.results.items():
            for fig_name, figure in result.figures.items():
                self.log_figure(f"{analysis}/{fig_name}", figure, report.step)
            for table_name, table in result.tables.items():
                self.log_table(f"{analysis}/{table_name}", table, report.step)
        if self._mirror is None:
            self._mirror = RunMirror(Path(run.dir) / "neuronmap")
        self._mirror.add(report)

    def _log_line_series(self, headline: Mapping[str, float], step: int) -> None:
        """One chart per headline metric with a line per layer, redrawn from every step so far.

        A custom chart is a table W&B draws whole, so each report logs the series up to now;
        the last one logged is the chart the run page shows.
        """
        import math

        import wandb

        touched: set[tuple[str, str]] = set()
        for key, value in headline.items():
            parts = key.split("/", 3)
            if len(parts) != 4 or not math.isfinite(float(value)):
                continue
            _, analysis, metric, layer = parts
            points = self._series.setdefault((analysis, metric), {}).setdefault(layer, [])
            points[:] = [p for p in points if p[0] != int(step)] + [(int(step), float(value))]
            touched.add((analysis, metric))
        for analysis, metric in sorted(touched):
            lines = self._series[(analysis, metric)]
            layers = list(lines)
            chart = wandb.plot.line_series(
                xs=[[s for s, _ in lines[layer]] for layer in layers],
                ys=[[v for _, v in lines[layer]] for layer in layers],
                keys=layers, title=f"{analysis}: {metric} by layer", xname=self.step_metric,
            )
            self._log({f"neuronmap/charts/{analysis}/{metric}": chart, self.step_metric: int(step)})

    def where(self) -> str:
        """Where to look (the per-run console line)."""
        run = self._run
        url = getattr(run, "url", None) if run is not None else None
        return f"W&B run {url}" if url else f"W&B run folder {getattr(run, 'dir', '(not started)')}"

    def close(self, status: RunStatus = "FINISHED") -> None:
        """Finish a run this reporter started (exit code 1 unless ``FINISHED``)."""
        if status not in _STATUSES:
            raise InvalidParameterError(f"status must be one of {list(_STATUSES)}; got {status!r}.")
        if self._mirror is not None:
            self._mirror.set_json("run.json", {"status": status})
            page = self._mirror.render()
            import wandb

            self.run.log({"neuronmap/report": wandb.Html(page.read_text(encoding="utf-8"), inject=False)})
        if self._owns_run and self._run is not None:
            self._run.finish(exit_code=0 if status == "FINISHED" else 1)


def _same(a: Any, b: Any) -> bool:
    """Equal plain values (media objects are never the same: each log is a new one)."""
    return isinstance(a, (int, float, str)) and type(a) is type(b) and a == b


def _artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.`` (at most 128)."""
    return re.sub(r"[^\w.-]", "-", name)[:128]


def _markdown_html(text: str) -> str:
    """Markdown rendered to HTML when the ``markdown`` package is there, else shown verbatim.

    Raw HTML in the text is escaped first: model cards carry user-supplied strings, and the
    panel must not run them (``>`` blockquotes are the price).
    """
    try:
        import markdown
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return markdown.markdown(html.escape(text, quote=False), extensions=["tables", "fenced_code"])
