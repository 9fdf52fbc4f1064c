"""The embedded default reporter: a self-contained run folder on the local disk.

Layout of ``neuronmap-runs/<run-name>/``::

    metrics.jsonl          one JSON line per logged step (step, epoch, event, metrics)
    history.csv            the long-format History (step, epoch, event, analysis, layer, metric, value, key)
    config.json            parameters from log_params
    tags.json              tags from set_tags
    figures/<step>/<analysis>/<name>.png
    tables/<step>/<analysis>/<name>.csv
    texts/<name>.md        text documents (model cards)
    artifacts/             files from log_artifact
    run.json               run status and times
    report.html            a self-contained page (metrics over steps, latest figures and tables)

``neuronmap report RUN_DIR`` re-renders ``report.html`` from these files.

The folder survives a crash (see :mod:`neuronmap._files`): ``metrics.jsonl`` appends start on a
new line, readers skip a torn record with a :class:`~neuronmap.errors.TornLineWarning`, and
every whole-file JSON write is atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import math
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from neuronmap._files import (
    append_jsonl,
    check_run_name,
    read_json,
    read_jsonl_numbered,
    write_json_atomic,
    write_text_atomic,
)
from neuronmap.reporters.base import BaseReporter, RunStatus, render_png
from neuronmap.results import HISTORY_COLUMNS, split_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from neuronmap.results import Report

__all__ = ["LocalReporter", "read_history", "safe_name"]

DEFAULT_ROOT = "neuronmap-runs"


def safe_name(name: str) -> str:
    """A path-safe version of a figure/table name (``/`` kept as folder separators)."""
    parts = [re.sub(r"[^A-Za-z0-9._=+-]", "_", p) for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "unnamed"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_name() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


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
        self._write_json("run.json", self._run_info)

    def __repr__(self) -> str:
        return f"LocalReporter(run_dir={str(self.run_dir)!r})"

    # ------------------------------------------------------------------ helpers
    def _write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.run_dir / name, data)

    def _read_json(self, name: str) -> dict[str, Any]:
        data = read_json(self.run_dir / name)
        return data if isinstance(data, dict) else {}

    def _append_line(self, record: Mapping[str, Any]) -> None:
        append_jsonl(self.run_dir / "metrics.jsonl", record, default=float, allow_nan=False)

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
        reports_dir = self.run_dir / "reports"
        reports_dir.mkdir(exist_ok=True)
        write_text_atomic(reports_dir / f"{report.step}.json", report.to_json(indent=2))
        if any(s["status"] == "failed" for s in status.values()):
            self._write_json("failures.json", self._read_json("failures.json") | {str(report.step): status})

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        when = _now() if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc).isoformat(
            timespec="seconds")
        self._append_line({"step": int(step), "epoch": None, "event": None, "time": when, "metrics": _finite(metrics)})

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._write_json("config.json", self._read_json("config.json") | dict(params))

    def log_figure(self, name: str, figure: Figure, step: int) -> None:
        path = self.run_dir / "figures" / str(int(step)) / f"{safe_name(name)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render_png(figure))  # drawn once for every reporter (render_png)

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None:
        path = self.run_dir / "tables" / str(int(step)) / f"{safe_name(name)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        dataframe.to_csv(path, index=not isinstance(dataframe.index, pd.RangeIndex))

    def log_text(self, name: str, text: str) -> None:
        path = self.run_dir / "texts" / (safe_name(name) if Path(name).suffix else f"{safe_name(name)}.md")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def log_artifact(self, path: str | Path) -> None:
        src = Path(path)
        dest = self.run_dir / "artifacts" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dest.resolve():
            (shutil.copytree(src, dest, dirs_exist_ok=True) if src.is_dir() else shutil.copy2(src, dest))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._write_json("tags.json", self._read_json("tags.json") | {str(k): str(v) for k, v in tags.items()})

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
        self._write_json("run.json", self._run_info)
        self._write_history()
        if self.render_html:
            self.render()

    def _write_history(self) -> None:
        write_text_atomic(self.run_dir / "history.csv", read_history(self.run_dir).to_csv(index=False))

    def where(self) -> str:
        """Where to look (the per-run console line)."""
        return f"report {self.report_path}"

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.html"


def _finite(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """The long-format History of a run folder, rebuilt from ``metrics.jsonl``.

    Keys that are not NeuronMap keys (a user's own metrics) get empty analysis and layer. A torn
    line (a record cut short by a crash) is skipped with a
    :class:`~neuronmap.errors.TornLineWarning` naming it; every other record is read.

    Raises:
        ValueError: A line is valid JSON but not a metrics record (``step`` and ``metrics``).
    """
    path = Path(run_dir) / "metrics.jsonl"
    rows: list[list[Any]] = []
    for number, record in read_jsonl_numbered(path, stacklevel=3):
        if not (isinstance(record, dict) and isinstance(record.get("metrics"), dict) and "step" in record):
            raise ValueError(f"line {number} of {path} is not a metrics record (an object with 'step' and "
                             f"'metrics'): {str(record)[:80]!r}")
        for key, value in record["metrics"].items():
            try:
                analysis, layer, metric = split_key(key)
            except ValueError:
                analysis, layer, metric = "", "", key
            rows.append([record["step"], record.get("epoch"), record.get("event"), analysis, layer, metric,
                         math.nan if value is None else float(value), key])
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame["value"] = frame["value"].astype(float)
    return frame

