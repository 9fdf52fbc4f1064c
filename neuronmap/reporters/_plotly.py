"""Interactive metric charts for ``report.html``: plotly, inlined, so the page works offline.

One chart per (analysis, metric): a line per layer over the analysed steps, with the CI as a
band where the analysis gave one, integer step ticks and a hover that shows layer, step and
value. ``plotly.min.js`` comes from the installed ``plotly`` package (the ``mlflow``,
``wandb`` and ``viz`` extras); without it the page falls back to static PNG charts.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuronmap._keys import SIBLINGS

__all__ = ["ANALYSIS_ORDER", "analysis_rank", "metric_charts", "plotly_js"]

#: Reading order of analyses on the page: bias and probing first, health statistics last.
ANALYSIS_ORDER = ("fairness", "counterfactual_bias", "representation_bias", "probing", "information",
                  "tcav", "concept_extraction", "cka", "rsa", "attention", "attribution",
                  "activation_patching", "causal_tracing", "circuit_discovery", "neuron_stats",
                  "activation_stats")
_MAX_LINES = 12


def analysis_rank(name: str) -> tuple[int, str]:
    """Sort key: known analyses in :data:`ANALYSIS_ORDER`, others between similarity and health."""
    base = name.split("_")[0]
    for i, known in enumerate(ANALYSIS_ORDER):
        if name == known or name.startswith(f"{known}_") or base == known:
            return i, name
    return ANALYSIS_ORDER.index("neuron_stats"), name


@cache
def plotly_js() -> str | None:
    """The minified plotly.js bundled with the ``plotly`` package, or ``None`` when not installed."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _clean(values: Any) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]


def metric_charts(history: pd.DataFrame, *, limit: int = 60) -> list[dict[str, Any]]:
    """Plotly specs ``{"id", "title", "analysis", "spec"}`` (``spec`` is JSON), in reading order."""
    main = history[~history["metric"].astype(str).str.endswith(SIBLINGS) & (history["analysis"] != "")]
    by_key = {k: g.sort_values("step") for k, g in history.groupby("key", sort=False)}
    charts: list[dict[str, Any]] = []
    groups = sorted(main.groupby(["analysis", "metric"], sort=False), key=lambda kv: (analysis_rank(kv[0][0]),
                                                                                     kv[0][1]))
    for (analysis, metric), group in groups:
        steps = sorted({int(s) for s in group["step"]})
        if len(steps) < 2:
            continue
        traces: list[dict[str, Any]] = []
        for i, layer in enumerate(list(dict.fromkeys(group["layer"]))[:_MAX_LINES]):
            series = group[group["layer"] == layer].sort_values("step")
            key = series["key"].iloc[0]
            low, high = by_key.get(f"{key}_ci_low"), by_key.get(f"{key}_ci_high")
            color = f"hsl({int(360 * i / max(1, min(_MAX_LINES, group['layer'].nunique())))},60%,45%)"
            if low is not None and high is not None and len(low) == len(series) == len(high):
                x = [int(s) for s in series["step"]]
                traces.append({"x": x + x[::-1], "y": _clean(high["value"]) + _clean(low["value"])[::-1],
                               "fill": "toself", "fillcolor": color.replace("hsl", "hsla").replace(")", ",0.12)"),
                               "mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False,
                               "type": "scatter"})
            traces.append({"x": [int(s) for s in series["step"]], "y": _clean(series["value"]), "name": str(layer),
                           "mode": "lines+markers", "type": "scatter", "line": {"color": color},
                           "hovertemplate": f"{layer}<br>step %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>"})
        layout = {"title": {"text": f"{analysis}: {metric}", "font": {"size": 15}, "x": 0.01, "xanchor": "left"},
                  "height": 360, "margin": {"l": 55, "r": 10, "t": 55, "b": 45}, "font": {"size": 12},
                  "xaxis": {"title": {"text": "step"}, "tickformat": "d",
                            **({"tickvals": steps} if len(steps) <= 12 else {})},
                  "yaxis": {"title": {"text": metric}}, "legend": {"font": {"size": 11}}}
        charts.append({"id": f"nm-chart-{len(charts)}", "title": f"{analysis}/{metric}", "analysis": analysis,
                       "spec": json.dumps({"data": traces, "layout": layout}).replace("</", "<\\/")})
        if len(charts) >= limit:
            break
    return charts
