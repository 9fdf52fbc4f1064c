"""Render a run folder into one self-contained ``report.html`` (images inlined as base64)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import FileSystemLoader, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from neuronmap._files import write_text_atomic
from neuronmap._keys import SIBLINGS
from neuronmap.findings import stats_note
from neuronmap.reporters._plotly import analysis_rank, metric_charts, plotly_js
from neuronmap.runs.folder import (
    CONFIG_FILE,
    FAILURES_FILE,
    REPORT_FILE,
    RUN_FILE,
    TAGS_FILE,
    latest_report,
    read_history,
    read_object,
)

__all__ = ["render_run_html"]

_MAX_PLOTS = 60
_MAX_TABLE_ROWS = 50


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _metric_plots(history: pd.DataFrame) -> list[dict[str, str]]:
    """One plot per (analysis, metric): a line per layer, with a CI band where there is one."""
    main = history[~history["metric"].str.endswith(SIBLINGS) & (history["analysis"] != "")]
    plots: list[dict[str, str]] = []
    for (analysis, metric), group in main.groupby(["analysis", "metric"], sort=True):
        if group["step"].nunique() < 2:
            continue
        fig = Figure(figsize=(7.0, 4.0))
        ax = fig.add_subplot()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        layers = list(dict.fromkeys(group["layer"]))
        for layer in layers[:12]:
            series = group[group["layer"] == layer].sort_values("step")
            ax.plot(series["step"], series["value"], marker="o", ms=3, label=layer)
            low = history[history["key"] == f"{series['key'].iloc[0]}_ci_low"].sort_values("step")
            high = history[history["key"] == f"{series['key'].iloc[0]}_ci_high"].sort_values("step")
            if len(low) == len(series) == len(high):
                ax.fill_between(series["step"], low["value"], high["value"], alpha=0.15)
        ax.set_title(f"{analysis} / {metric}", fontsize=9)
        ax.set_xlabel("step")
        if len(layers) > 1:
            ax.legend(fontsize=6, ncol=2)
        plots.append({"title": f"{analysis}/{metric}", "png": _png(fig)})
        if len(plots) >= _MAX_PLOTS:
            break
    return plots


def _latest_step_dir(root: Path) -> Path | None:
    steps = [p for p in root.iterdir() if p.is_dir() and p.name.lstrip("-").isdigit()] if root.exists() else []
    return max(steps, key=lambda p: int(p.name)) if steps else None


def _table(path: Path, root: Path) -> dict[str, Any]:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:  # a table logged with no rows and no columns
        frame = pd.DataFrame()
    return {
        "name": str(path.relative_to(root).with_suffix("")),
        "html": frame.head(_MAX_TABLE_ROWS).to_html(index=False, float_format=_fmt, border=0, classes="tbl"),
        "rows": len(frame),
    }


def _latest_findings(run_dir: Path) -> list[dict[str, Any]]:
    """The findings of the last analysed step (``reports/<step>.json``), ranked as the engine ranked them."""
    latest = latest_report(run_dir)
    if latest is None:
        return []
    step, report = latest
    return [{**f, "step": step} for f in report.get("findings") or [] if isinstance(f, dict)]


def render_run_html(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` for a run folder and return its path.

    The page holds: run status and config, the latest value of every metric, metric curves
    over steps, the latest step's figures and tables, and recorded failures. It needs no network.
    """
    run_dir = Path(run_dir)
    history = read_history(run_dir)
    latest = history.drop_duplicates("key", keep="last") if not history.empty else history
    summary = latest[~latest["metric"].str.endswith(SIBLINGS)] if not latest.empty else latest
    summary_rows = []
    for row in summary.itertuples():
        ci_low = latest.loc[latest["key"] == f"{row.key}_ci_low", "value"]
        ci_high = latest.loc[latest["key"] == f"{row.key}_ci_high", "value"]
        p_adj = latest.loc[latest["key"] == f"{row.key}_p_adj", "value"]
        summary_rows.append({
            "analysis": row.analysis, "layer": row.layer, "metric": row.metric, "step": row.step,
            "value": _fmt(row.value),
            "ci": f"[{_fmt(ci_low.iloc[0])}, {_fmt(ci_high.iloc[0])}]" if len(ci_low) and len(ci_high) else "",
            "p_adj": _fmt(p_adj.iloc[0]) if len(p_adj) else "",
        })
    fig_dir = _latest_step_dir(run_dir / "figures")
    figures = [
        {"name": str(p.relative_to(fig_dir).with_suffix("")), "png": base64.b64encode(p.read_bytes()).decode()}
        for p in sorted(fig_dir.rglob("*.png"))
    ] if fig_dir else []
    table_dir = _latest_step_dir(run_dir / "tables")
    tables = [_table(p, table_dir) for p in sorted(table_dir.rglob("*.csv"))] if table_dir is not None else []
    env = SandboxedEnvironment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    charts = metric_charts(history) if not history.empty and plotly_js() is not None else []
    figures.sort(key=lambda f: analysis_rank(f["name"].split("/")[0]))
    findings = _latest_findings(run_dir)
    page = env.get_template("report.html.j2").render(
        run_name=run_dir.name,
        run=read_object(run_dir / RUN_FILE),
        config=json.dumps(read_object(run_dir / CONFIG_FILE), indent=2, default=str),
        tags=read_object(run_dir / TAGS_FILE),
        failures=read_object(run_dir / FAILURES_FILE),
        steps=sorted({int(s) for s in history["step"]}) if not history.empty else [],
        summary=sorted(summary_rows, key=lambda r: analysis_rank(str(r["analysis"]))),
        findings=findings,
        stats_note=stats_note(findings),
        charts=charts,
        plotly_js=plotly_js() if charts else None,
        plots=_metric_plots(history) if not history.empty and not charts else [],
        figures=figures,
        figure_step=fig_dir.name if fig_dir else None,
        tables=tables,
        table_step=table_dir.name if table_dir else None,
    )
    out_path = Path(out) if out else run_dir / REPORT_FILE
    write_text_atomic(out_path, page)
    return out_path


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "NaN"
    value = float(value)
    return f"{value:.4g}"
