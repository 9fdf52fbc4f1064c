"""The embedded default reporter: a self-contained run folder on the local disk.

The folder's layout, names and readers are :mod:`neuronmap.runs.folder`; this reporter writes
it (``metrics.jsonl``, ``history.csv``, ``reports/<step>.json``, figures, tables, texts,
artifacts, ``run.json``) and keeps ``report.html`` current. ``neuronmap report RUN_DIR``
re-renders ``report.html`` from these files.

The folder survives a crash (see :mod:`neuronmap._files`): ``metrics.jsonl`` appends start on a
new line, readers skip a torn record with a :class:`~neuronmap.errors.TornLineWarning`, and
every whole-file JSON write is atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from neuronmap._files import (
    append_jsonl,
    check_run_name,
    read_json,
    write_json_atomic,
    write_text_atomic,
)
from neuronmap.reporters.base import BaseReporter, RunStatus, render_png
from neuronmap.runs.folder import (
    CONFIG_FILE,
    DEFAULT_ROOT,
    FAILURES_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    REPORT_FILE,
    REPORTS_DIR,
    RUN_FILE,
    TAGS_FILE,
    figure_path,
    new_run_name,
    read_history,
    safe_name,
    table_path,
    text_path,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from neuronmap.results import Report

# read_history, safe_name: kept importable from here, where they lived before neuronmap.runs
__all__ = ["DEFAULT_ROOT", "LocalReporter", "new_run_name", "read_history", "safe_name"]

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LocalReporter(BaseReporter):
    """Write everything to a run folder and keep ``report.html`` current.

    Args:
        root: Folder holding runs (default ``neuronmap-runs``).
        run_name: Name of this run's folder (default: UTC time plus a short random id): one
            folder name, without path separators, ``..`` or control characters.
        run_dir: Use this exact folder instead of ``root/run_name`` (resuming appends to it).
        render_html: Keep ``report.html`` current: re-rendered at ``close`` and on ``flush``
            at most once per ``render_interval_s`` (a page with many curves takes seconds to
            draw, which must not be paid at every scheduled run).
        render_interval_s: Minimum seconds between re-renders on ``flush`` (0: every flush).

    Raises:
        InvalidParameterError: ``run_name`` is not a single safe folder name.

    Example:
        >>> import tempfile
        >>> rep = LocalReporter(tempfile.mkdtemp(), run_name="demo")
        >>> rep.log_metrics({"neuronmap/x/layer/m": 1.0}, step=0)
        >>> rep.close()
        >>> (rep.run_dir / "history.csv").exists()
        True
    """

    name = "local"

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        run_name: str | None = None,
        *,
        run_dir: str | Path | None = None,
        render_html: bool = True,
        render_interval_s: float = 60.0,
    ) -> None:
        if run_dir is None and run_name is not None:
            check_run_name(run_name)
        self.run_dir = Path(run_dir) if run_dir is not None else Path(root) / (run_name or new_run_name())
        # absolute: the publisher writes from another thread, after the caller may have changed directory
        self.run_dir = self.run_dir.absolute()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.render_html = render_html
        self.render_interval_s = render_interval_s
        self._last_render: float | None = None
        self._run_info = {"started": _now(), "status": "RUNNING"}
        self._write_json(RUN_FILE, self._run_info)

    def __repr__(self) -> str:
        return f"LocalReporter(run_dir={str(self.run_dir)!r})"

    # ------------------------------------------------------------------ helpers
    def _write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.run_dir / name, data)

    def _read_json(self, name: str) -> dict[str, Any]:
        data = read_json(self.run_dir / name)
        return data if isinstance(data, dict) else {}

    def _append_line(self, record: Mapping[str, Any]) -> None:
        append_jsonl(self.run_dir / METRICS_FILE, record, default=float, allow_nan=False)

    # ------------------------------------------------------------------ Reporter API
    def log_report(self, report: Report) -> None:
        self._append_line(
            {"step": report.step, "epoch": report.epoch, "event": report.event, "time": report.timestamp,
             "metrics": _finite(report.metrics)}
        )
        for analysis, result in report.results.items():
            for fig_name, figure in result.figures.items():
                self.log_figure(f"{analysis}/{fig_name}", figure, report.step)
            for table_name, table in result.tables.items():
                self.log_table(f"{analysis}/{table_name}", table, report.step)
        status = {n: {"status": r.status, "error": r.error, "notes": list(r.notes)} for n, r in report.results.items()}
        reports_dir = self.run_dir / REPORTS_DIR
        reports_dir.mkdir(exist_ok=True)
        write_text_atomic(reports_dir / f"{report.step}.json", report.to_json(indent=2))
        if any(s["status"] == "failed" for s in status.values()):
            self._write_json(FAILURES_FILE, self._read_json(FAILURES_FILE) | {str(report.step): status})

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        when = _now() if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc).isoformat(
            timespec="seconds")
        self._append_line({"step": int(step), "epoch": None, "event": None, "time": when, "metrics": _finite(metrics)})

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._write_json(CONFIG_FILE, self._read_json(CONFIG_FILE) | dict(params))

    def log_figure(self, name: str, figure: Figure, step: int) -> None:
        path = figure_path(self.run_dir, step, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render_png(figure))  # drawn once for every reporter (render_png)

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None:
        path = table_path(self.run_dir, step, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        dataframe.to_csv(path, index=not isinstance(dataframe.index, pd.RangeIndex))

    def log_text(self, name: str, text: str) -> None:
        path = text_path(self.run_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def log_artifact(self, path: str | Path) -> None:
        src = Path(path)
        dest = self.run_dir / "artifacts" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dest.resolve():
            (shutil.copytree(src, dest, dirs_exist_ok=True) if src.is_dir() else shutil.copy2(src, dest))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._write_json(TAGS_FILE, self._read_json(TAGS_FILE) | {str(k): str(v) for k, v in tags.items()})

    def flush(self) -> None:
        self._write_history()
        now = time.monotonic()
        if self.render_html and (self._last_render is None or now - self._last_render >= self.render_interval_s):
            self.render()

    def render(self) -> Path:
        """Re-render ``report.html`` now."""
        from neuronmap.reporters._html import render_run_html

        self._last_render = time.monotonic()
        return render_run_html(self.run_dir)

    def close(self, status: RunStatus = "FINISHED") -> None:
        self._run_info.update(status=status, ended=_now())
        self._write_json(RUN_FILE, self._run_info)
        self._write_history()
        if self.render_html:
            self.render()

    def _write_history(self) -> None:
        write_text_atomic(self.run_dir / HISTORY_FILE, read_history(self.run_dir).to_csv(index=False))

    def where(self) -> str:
        """Where to look (the per-run console line)."""
        return f"report {self.report_path}"

    @property
    def report_path(self) -> Path:
        return self.run_dir / REPORT_FILE


def _finite(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
