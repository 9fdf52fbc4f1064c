"""What each tracker shows of a report, decided once here; the reporters only write it.

* :func:`findings_markdown`: the run description (MLflow ``mlflow.note.content``, TensorBoard's
  text tab, W&B's summary) with the findings first.
* :func:`finding_tags`: short run tags (finding count, the top finding, failed analyses, the
  key layout) that tracker run lists can filter on.
* :func:`custom_scalars_layout`: TensorBoard's custom-scalars layout, one multi-line chart per
  metric across layers.
* :class:`RunMirror`: a run folder (``metrics.jsonl``, ``reports/<step>.json``, figures,
  tables) kept beside a tracker, in :class:`~neuronmap.reporters.LocalReporter`'s format, so
  the full record and ``report.html`` reach trackers that chart only headline scalars; it is
  what ``neuronmap gate|report mlflow:ID`` read back.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap._headline import LAYOUT, LAYOUT_TAG
from neuronmap.findings import findings_of, summary_text
from neuronmap.runs.folder import figure_path, table_path

if TYPE_CHECKING:
    from neuronmap.results import Report

__all__ = ["RunMirror", "custom_scalars_layout", "finding_tags", "findings_markdown"]


def findings_markdown(report: Report, *, limit: int = 12, footer: str | None = None) -> str:
    """Markdown: a heading, the ranked findings, each analysis' status, then ``footer``."""
    found = findings_of(report)
    where = "" if report.epoch is None else f", epoch {report.epoch}"
    lines = [f"### NeuronMap findings (step {report.step}{where})", "",
             summary_text(found, limit=limit), ""]
    status = [f"{n}: {r.status}" + (f" ({r.error})" if r.error else "") for n, r in report.results.items()]
    if status:
        lines.append("Analyses: " + "; ".join(status))
    lines.append("")
    lines.append(footer or "Charts: one section per metric (`neuronmap/<analysis>/<metric>/<layer>`). "
                 "Every statistic (CIs, p-values) is in the artifact `neuronmap/metrics.jsonl` and "
                 "`neuronmap/report.html`.")
    return "\n".join(lines)


def finding_tags(report: Report) -> dict[str, str]:
    """``neuronmap.findings``, ``neuronmap.top_finding``, ``neuronmap.failed``, ``neuronmap.step`` and the layout."""
    found = findings_of(report)
    failed = sorted(n for n, r in report.results.items() if r.status == "failed")
    tags = {"neuronmap.findings": str(len(found)), "neuronmap.step": str(report.step), LAYOUT_TAG: LAYOUT,
            "neuronmap.failed": ",".join(failed) or "none"}
    if found:
        tags["neuronmap.top_finding"] = found[0].line()[:240]
    return tags


def custom_scalars_layout(report: Report, keys: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """``{"neuronmap <analysis>": {metric: ["Multiline", [regex]]}}``: one chart per metric across layers.

    Charts come from the tracker ``keys`` (``neuronmap/<analysis>/<metric>/<layer>``) and from
    each analysis' declared headline patterns, so a metric that first appears at a later run
    (CKA's drift to the previous run) has its chart from the start: TensorBoard keeps the first
    layout a run wrote.
    """
    from fnmatch import translate

    layout: dict[str, dict[str, list[Any]]] = {}
    for key in sorted(set(keys)):
        parts = key.split("/")
        if len(parts) < 4:
            continue
        prefix = re.escape(f"{parts[0]}/{parts[1]}/{parts[2]}/")
        layout.setdefault(f"neuronmap {parts[1]}", {})[parts[2]] = ["Multiline", [f"^{prefix}.*"]]
    for analysis, patterns in (getattr(report, "headline", None) or {}).items():
        for pattern in patterns:
            body = translate(pattern).removeprefix("(?s:").removesuffix(")\\Z").replace(".*", "[^/]*")
            if not any(c in pattern for c in "*?["):
                body = re.escape(pattern)
            layout.setdefault(f"neuronmap {analysis}", {}).setdefault(
                pattern, ["Multiline", [f"^{re.escape(f'neuronmap/{analysis}/')}{body}/.*"]])
    return layout


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}


class RunMirror:
    """A run folder in :class:`~neuronmap.reporters.LocalReporter`'s format, fed report by report.

    Args:
        root: The folder (created).

    Example:
        >>> import tempfile
        >>> from neuronmap.results import Report
        >>> mirror = RunMirror(tempfile.mkdtemp())
        >>> _ = mirror.add(Report(0, None, None, "2024-01-01T00:00:00+00:00"))
        >>> (mirror.root / "metrics.jsonl").exists()
        True
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._steps: dict[int, str] = {}

    def add(self, report: Report, *, figures: bool = True) -> list[Path]:
        """Record ``report`` (a replayed step replaces its line); return the files written."""
        from neuronmap.reporters.base import render_png

        self._steps[int(report.step)] = json.dumps(
            {"step": report.step, "epoch": report.epoch, "event": report.event, "time": report.timestamp,
             "metrics": _finite(report.metrics)}, default=float, allow_nan=False)
        written = [self.root / "metrics.jsonl", self.root / "reports" / f"{report.step}.json"]
        written[0].write_text("".join(line + "\n" for _, line in sorted(self._steps.items())), encoding="utf-8")
        written[1].parent.mkdir(parents=True, exist_ok=True)
        written[1].write_text(report.to_json(indent=2), encoding="utf-8")
        for analysis, result in report.results.items():
            for name, table in result.tables.items():
                path = table_path(self.root, report.step, f"{analysis}/{name}")
                path.parent.mkdir(parents=True, exist_ok=True)
                table.to_csv(path, index=not _range_index(table))
            if not figures:
                continue
            for name, figure in result.figures.items():
                path = figure_path(self.root, report.step, f"{analysis}/{name}")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(render_png(figure))
        return written

    def set_json(self, name: str, data: dict[str, Any]) -> None:
        (self.root / name).write_text(json.dumps(data, indent=2, default=str, sort_keys=True), encoding="utf-8")

    def render(self) -> Path:
        """Write ``report.html`` (findings first) and return its path."""
        from neuronmap.reporters._html import render_run_html

        return render_run_html(self.root)


def _range_index(frame: Any) -> bool:
    import pandas as pd

    return isinstance(frame.index, pd.RangeIndex)


def tracker_keys_of(report: Report, scalars: str) -> list[str]:
    """The tracker keys ``report`` produces (for layouts)."""
    from neuronmap._headline import tracker_metrics

    return list(tracker_metrics(report, scalars=scalars))  # type: ignore[arg-type]




def share_run_folder(reporters: Iterable[Any]) -> Path | None:
    """Point the reporters of one monitor that were given no folder at one run folder.

    The folder is the first :class:`~neuronmap.reporters.LocalReporter`'s ``run_dir`` (else a
    new ``neuronmap-runs/<run>``): TensorBoard writes to ``<run>/tensorboard``, W&B keeps its
    files in ``<run>/wandb``, and MLflow's embedded store stays shared by the project in the
    folder above (``neuronmap-runs/mlflow.db``) with the run named after the folder. A
    reporter given an explicit folder, writer, logger or run is left alone.
    """
    from neuronmap.reporters.local import LocalReporter
    from neuronmap.runs.folder import DEFAULT_ROOT, new_run_name

    items = [getattr(r, "reporter", r) for r in reporters]
    anchor = next((r.run_dir for r in items if isinstance(r, LocalReporter)), None)
    for reporter in items:
        kind = type(reporter).__name__
        if kind == "TensorBoardReporter" and reporter.log_dir is None and reporter._writer is None \
                and reporter._logger is None:
            anchor = anchor or Path(DEFAULT_ROOT) / new_run_name()
            reporter.log_dir = anchor / "tensorboard"
        elif kind == "MLflowReporter" and not getattr(reporter, "_run_dir_given", True) and reporter._client is None:
            anchor = anchor or Path(DEFAULT_ROOT) / new_run_name()
            reporter.run_dir = anchor
            reporter.run_name = reporter.run_name or anchor.name
        elif kind == "WandbReporter" and reporter.init_kwargs.get("dir") is None and reporter._run is None:
            anchor = anchor or Path(DEFAULT_ROOT) / new_run_name()
            anchor.mkdir(parents=True, exist_ok=True)
            reporter.init_kwargs["dir"] = str(anchor)
    return anchor
