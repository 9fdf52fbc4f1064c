"""Notebook views (``_repr_html_``) of :class:`~neuronmap.Report`, :class:`~neuronmap.History`
and :class:`~neuronmap.NeuronMap`: findings first, then a values table, then the figures.

Everything is escaped (probe-set names, layer names and notes are user strings) and
self-contained (figures inlined as PNG), so a saved notebook shows the same thing offline.
"""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

from neuronmap._keys import SIBLINGS
from neuronmap.findings import describe, findings_of, format_value, split_rel, stats_of

if TYPE_CHECKING:
    from neuronmap.engine import NeuronMap
    from neuronmap.findings import Finding
    from neuronmap.results import History, Report

__all__ = ["findings_html", "history_html", "monitor_html", "report_html"]

_STYLE = ("<style>.nm-f li{margin:2px 0}.nm-t{border-collapse:collapse;font-size:12px}"
          ".nm-t td,.nm-t th{border:1px solid #ddd;padding:2px 6px;text-align:left}"
          ".nm-fail{color:#b00020}.nm-thr{color:#b35c00}</style>")
_CLASS = {"failure": "nm-fail", "threshold": "nm-thr"}
_MAX_ROWS = 40


def findings_html(findings: tuple[Finding, ...] | list[Finding]) -> str:
    """An ordered list of findings (failures red, crossed thresholds orange)."""
    if not findings:
        return "<p><i>No findings: nothing significant, no threshold crossed.</i></p>"
    items = "".join(
        f'<li class="{_CLASS.get(f.kind, "")}"><b>{html.escape(f.analysis)}</b>: {html.escape(f.text)}</li>'
        for f in findings
    )
    return f'<ol class="nm-f">{items}</ol>'


def _values_table(report: Report) -> str:
    rows = []
    for name, result in report.results.items():
        for rel, value in result.metrics.items():
            layer, metric = split_rel(rel)
            if metric.endswith(SIBLINGS):
                continue
            st = stats_of(result.metrics, layer, metric)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(layer)}</td><td>{html.escape(metric)}"
                        f"</td><td>{html.escape(describe(value, **st))}</td></tr>")
    more = f"<p>{len(rows) - _MAX_ROWS} more rows in <code>report.metrics</code>.</p>" if len(rows) > _MAX_ROWS else ""
    return ('<table class="nm-t"><tr><th>analysis</th><th>layer</th><th>metric</th><th>value, CI, p, p_adj</th></tr>'
            + "".join(rows[:_MAX_ROWS]) + "</table>" + more)


def _figures(report: Report, limit: int = 6) -> str:
    from neuronmap.reporters.base import render_png

    out: list[str] = []
    for name, result in report.results.items():
        for fig_name, figure in result.figures.items():
            if len(out) >= limit:
                break
            try:
                png = base64.b64encode(render_png(figure, dpi=80)).decode()
            except Exception:  # a figure that cannot draw must not hide the rest of the repr
                continue
            out.append(f'<figure style="display:inline-block;margin:4px"><img style="max-width:560px" '
                       f'src="data:image/png;base64,{png}"><figcaption>{html.escape(name)}/{html.escape(fig_name)}'
                       "</figcaption></figure>")
    return "".join(out)


def report_html(report: Report) -> str:
    """Findings, the analyses' status, a values table and up to six figures."""
    found = findings_of(report)
    status = ", ".join(f"{html.escape(n)}: {html.escape(r.status)}" for n, r in report.results.items())
    return (
        f"{_STYLE}<div><h4>NeuronMap step {report.step}"
        f"{'' if report.epoch is None else f', epoch {report.epoch}'}"
        f"{'' if not report.event else ', ' + html.escape(str(report.event))}</h4>"
        f"<b>Findings</b>{findings_html(found)}<p>{status}</p>"
        f"<details open><summary>Values</summary>{_values_table(report)}</details>"
        f"{_figures(report)}</div>"
    )


def history_html(history: History) -> str:
    """The latest value per analysis/layer/metric with its first value and the number of runs."""
    frame = history.frame
    if frame.empty:
        return "<div><b>NeuronMap history</b>: no runs yet.</div>"
    main = frame[~frame["metric"].astype(str).str.endswith(SIBLINGS)]
    grouped = main.groupby("key", sort=False)
    rows = []
    for _key, group in list(grouped)[:_MAX_ROWS]:
        first, last = group.iloc[0], group.iloc[-1]
        rows.append(
            f"<tr><td>{html.escape(str(last['analysis']))}</td><td>{html.escape(str(last['layer']))}</td>"
            f"<td>{html.escape(str(last['metric']))}</td><td>{format_value(first['value'])}</td>"
            f"<td>{format_value(last['value'])}</td><td>{len(group)}</td></tr>"
        )
    more = f"<p>{grouped.ngroups - _MAX_ROWS} more metrics in <code>history.frame</code>.</p>" \
        if grouped.ngroups > _MAX_ROWS else ""
    return (f"{_STYLE}<div><b>NeuronMap history</b>: {len(history.steps)} runs, steps "
            f"{history.steps[0]}..{history.steps[-1]}, {grouped.ngroups} metrics"
            '<table class="nm-t"><tr><th>analysis</th><th>layer</th><th>metric</th><th>first</th><th>latest</th>'
            f"<th>runs</th></tr>{''.join(rows)}</table>{more}</div>")


def monitor_html(monitor: NeuronMap) -> str:
    """The configuration, then the last run's findings and values (when there was one)."""
    last = getattr(monitor, "last_report", None)
    analyses = ", ".join(html.escape(a.name) for a in monitor.analyses) or "none"
    head = (f"{_STYLE}<div><b>NeuronMap</b> {html.escape(monitor.name)}: probe "
            f"{html.escape(monitor.probe.name)} (n={len(monitor.probe)}), layers "
            f"{html.escape(', '.join(monitor.layers))}, analyses {analyses}, "
            f"{len(monitor.history.steps)} runs so far</div>")
    return head + (report_html(last) if last is not None else "")

