"""Findings: what a scheduled run says, in a few ranked lines, before any number is opened.

A :class:`Finding` is one claim about one run: which effect is significant after correction,
which layers encode the probing target, which bias metric crossed its threshold, what changed
since the previous run, which analysis failed. Each analysis contributes its own through
:meth:`neuronmap.analyses.Analysis.findings` (defaults: corrected-significant metrics and
failures; probing, fairness, CKA, representation bias, neuron statistics and attention say
more); :func:`attach_findings` adds the direction of change against the previous run and
ranks them. They lead every view: the MLflow run description, the W&B summary, TensorBoard's
text tab, the top of ``report.html``, the notebook repr and the per-run console line.

Significance is read from the ``_p_adj`` siblings (corrected across layers by the analysis)
and uncertainty from ``_ci_low``/``_ci_high``; nothing here recomputes a statistic.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from neuronmap._keys import SIBLINGS, is_sibling, split_rel  # re-exported: they lived here before

if TYPE_CHECKING:
    from neuronmap.analyses.base import Analysis, AnalysisResult
    from neuronmap.results import History, Report

__all__ = [
    "SIBLINGS",
    "Finding",
    "attach_findings",
    "change_findings",
    "default_findings",
    "findings_of",
    "format_value",
    "significant_findings",
    "summary_text",
]

Kind = Literal["failure", "threshold", "significant", "encodes", "change", "info"]

#: Base rank of each kind: a failure leads, a crossed threshold before a significant effect.
_RANK: dict[str, float] = {"failure": 100.0, "threshold": 60.0, "encodes": 40.0, "significant": 30.0,
                           "change": 20.0, "info": 0.0}


@dataclass(frozen=True)
class Finding:
    """One ranked claim about a run.

    Example:
        >>> f = Finding("probing", "encoder.layer.3", "accuracy", 0.91, "encodes",
        ...             "The target is decodable in 5/6 layers", ci=(0.85, 0.95), p_adj=0.001)
        >>> f.line()
        'probing: The target is decodable in 5/6 layers'
    """

    #: Analysis (the ``<analysis>`` of metric keys).
    analysis: str
    #: Layer (or attribute / ``model``) the claim is about; ``""`` for the whole analysis.
    layer: str
    #: Metric name, ``""`` when the claim is not about one metric (a failure).
    metric: str
    #: The value claimed about (NaN when there is none).
    value: float
    #: ``failure``, ``threshold``, ``significant``, ``encodes``, ``change`` or ``info``.
    kind: Kind
    #: One human sentence (without the analysis name).
    text: str
    #: Confidence interval of ``value``, when the analysis gave one.
    ci: tuple[float, float] | None = None
    #: Corrected p-value, when the analysis gave one.
    p_adj: float | None = None
    #: The same test's uncorrected p-value (what ``ci`` agrees with), when the analysis gave one.
    p: float | None = None
    #: The threshold crossed (or not), when there is one.
    threshold: float | None = None
    #: The value at the previous run and the step it was seen at.
    previous: float | None = None
    previous_step: int | None = None
    #: Extra rank within the kind (effect size, distance past the threshold ...).
    score: float = 0.0

    @property
    def rank(self) -> float:
        """Sort key: kind first, then ``score``."""
        return _RANK.get(self.kind, 0.0) + max(min(self.score, 9.99), 0.0)

    @property
    def change(self) -> float | None:
        """``value - previous``, when both are known."""
        if self.previous is None or not math.isfinite(self.value):
            return None
        return self.value - self.previous

    def line(self) -> str:
        """``<analysis>: <text>`` (what the console, tags and summaries show)."""
        return f"{self.analysis}: {self.text}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (NaN as ``None``)."""
        out = dataclasses.asdict(self)
        out["value"] = self.value if math.isfinite(self.value) else None
        out["ci"] = list(self.ci) if self.ci is not None else None
        out["change"] = self.change
        out["line"] = self.line()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["value"] = math.nan if kwargs.get("value") is None else float(kwargs["value"])
        if kwargs.get("ci") is not None:
            kwargs["ci"] = (float(kwargs["ci"][0]), float(kwargs["ci"][1]))
        return cls(**kwargs)


def format_value(value: float | None) -> str:
    """Three significant digits; ``NaN`` for missing values; p-values below 0.001 as ``<0.001``."""
    if value is None or not math.isfinite(float(value)):
        return "NaN"
    return f"{float(value):.3g}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else format_value(p)


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def stats_of(metrics: Mapping[str, float], layer: str, metric: str) -> dict[str, Any]:
    """``ci``, ``p_adj`` and ``p`` of one metric from its siblings (``None`` where absent or NaN)."""
    base = f"{layer}/{metric}"
    low, high = _finite(metrics.get(f"{base}_ci_low")), _finite(metrics.get(f"{base}_ci_high"))
    ci = (low, high) if low is not None and high is not None else None
    return {"ci": ci, "p_adj": _finite(metrics.get(f"{base}_p_adj")), "p": _finite(metrics.get(f"{base}_p"))}


#: What a finding's numbers mean; shown under every list of findings that has a corrected p-value.
STATS_NOTE = ("CI and p are per test (not adjusted for multiplicity); p_adj is corrected for the number of tests "
              "the analysis ran (its p_adjust method), so a CI that excludes 0 can stand beside a p_adj above 0.05.")


def describe(value: float, ci: tuple[float, float] | None, p_adj: float | None, p: float | None = None) -> str:
    """A value with the uncertainty it has, each number named.

    Example:
        >>> describe(0.25, (0.0417, 0.4), 0.999, p=0.083)
        '0.25, CI [0.0417, 0.4], p 0.083, p_adj 0.999'
        >>> describe(0.91, None, 0.0001)
        '0.91, p_adj <0.001'
    """
    text = format_value(value)
    if ci is not None:
        text += f", CI [{format_value(ci[0])}, {format_value(ci[1])}]"
    if p is not None and p_adj is not None:
        text += f", p {_p(p)}"
    if p_adj is not None:
        text += f", p_adj {_p(p_adj)}"
    return text


def stats_note(findings: Iterable[Finding | Mapping[str, Any]]) -> str:
    """:data:`STATS_NOTE` when a finding shows a corrected p-value, else ``""``.

    Takes findings or their saved forms (``Finding.to_dict()``, or a card's ``{"line": ...}``,
    where a shown corrected p reads ``p_adj <value>``, as :func:`describe` writes it).
    """
    for f in findings:
        if isinstance(f, Finding):
            shown = f.p_adj is not None
        else:
            shown = f.get("p_adj") is not None or "p_adj " in str(f.get("line", ""))
        if shown:
            return STATS_NOTE
    return ""


def significant_findings(
    result: AnalysisResult, *, alpha: float = 0.05, metrics: Iterable[str] | None = None, limit: int = 3
) -> list[Finding]:
    """Metrics whose corrected p-value is below ``alpha``, strongest first (at most ``limit``)."""
    wanted = set(metrics) if metrics is not None else None
    found: list[Finding] = []
    for rel, value in result.metrics.items():
        layer, metric = split_rel(rel)
        if is_sibling(metric) or (wanted is not None and metric not in wanted):
            continue
        st = stats_of(result.metrics, layer, metric)
        if st["p_adj"] is None or st["p_adj"] >= alpha:
            continue
        found.append(Finding(
            result.name, layer, metric, float(value), "significant",
            f"{metric} at {layer} = {describe(value, **st)} (significant after correction)",
            score=min(-math.log10(max(st["p_adj"], 1e-12)), 9.0), **st,
        ))
    return sorted(found, key=lambda f: -f.rank)[:limit]


def failure_findings(result: AnalysisResult) -> list[Finding]:
    if result.status == "failed":
        return [Finding(result.name, "", "", math.nan, "failure", f"failed: {result.error or 'unknown error'}")]
    if result.status == "skipped":
        why = "; ".join(result.notes)[:200] or "nothing to compute"
        return [Finding(result.name, "", "", math.nan, "info", f"skipped: {why}")]
    return []


def default_findings(result: AnalysisResult, *, alpha: float = 0.05, limit: int = 3) -> list[Finding]:
    """What any analysis says by default: its failure, or its corrected-significant metrics."""
    return failure_findings(result) or significant_findings(result, alpha=alpha, limit=limit)


def change_findings(
    result: AnalysisResult,
    previous: Mapping[str, float],
    *,
    metrics: Iterable[str],
    previous_step: int | None = None,
    min_change: float = 0.05,
    limit: int = 2,
) -> list[Finding]:
    """Headline metrics that moved by at least ``min_change`` (relative to max(1, |previous|))
    since the previous run, and past the current CI where there is one."""
    wanted = set(metrics)
    found: list[Finding] = []
    for rel, value in result.metrics.items():
        layer, metric = split_rel(rel)
        if metric not in wanted or rel not in previous or not math.isfinite(value):
            continue
        before = float(previous[rel])
        if not math.isfinite(before):
            continue
        delta = value - before
        scale = max(1.0, abs(before))
        st = stats_of(result.metrics, layer, metric)
        if abs(delta) / scale < min_change or (st["ci"] is not None and st["ci"][0] <= before <= st["ci"][1]):
            continue
        word = "rose" if delta > 0 else "fell"
        since = f" since step {previous_step}" if previous_step is not None else " since the previous run"
        found.append(Finding(
            result.name, layer, metric, float(value), "change",
            f"{metric} at {layer} {word} {format_value(before)} -> {format_value(value)} "
            f"({delta:+.3g}){since}",
            previous=before, previous_step=previous_step, score=abs(delta) / scale * 10, **st,
        ))
    return sorted(found, key=lambda f: -f.rank)[:limit]


def summary_text(findings: Sequence[Finding], *, header: str | None = None, limit: int | None = None) -> str:
    """Findings as plain lines (``- analysis: text``), ranked; a line saying so when there are none."""
    lines = [header] if header else []
    shown = list(findings)[:limit] if limit else list(findings)
    lines += [f"- {f.line()}" for f in shown] or ["- No findings: nothing significant, no threshold crossed."]
    if limit and len(findings) > limit:
        lines.append(f"- ... and {len(findings) - limit} more (report.html)")
    if note := stats_note(shown):
        lines.append(f"  Note: {note}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- collecting per run
def _previous(history: History | None, step: int) -> tuple[dict[str, float], int | None]:
    """Each relative key's value at the last run before ``step``: ``({analysis/layer/metric: v}, step)``."""
    if history is None or len(history) == 0:
        return {}, None
    frame = history.frame
    earlier = frame[frame["step"] < step]
    if earlier.empty:
        return {}, None
    last_step = int(earlier["step"].max())
    last = earlier[earlier["step"] == last_step]
    keys = last["analysis"].astype(str) + "/" + last["layer"].astype(str) + "/" + last["metric"].astype(str)
    return dict(zip(keys, last["value"].astype(float), strict=True)), last_step


def analysis_findings(
    analysis: Analysis | None, result: AnalysisResult, previous: Mapping[str, float], previous_step: int | None
) -> list[Finding]:
    """One analysis' findings (its hook, or the defaults), with changes since the previous run."""
    from neuronmap._headline import headline_patterns, is_headline

    prev = {k[len(result.name) + 1:]: v for k, v in previous.items() if k.startswith(f"{result.name}/")}
    try:
        own = analysis.findings(result) if analysis is not None else default_findings(result)
    except Exception as err:  # a findings hook must never cost the run its report
        own = [Finding(result.name, "", "", math.nan, "failure", f"findings hook failed: {err}")]
    if result.status != "ok":
        return own
    patterns = headline_patterns(analysis, result)
    metrics = {split_rel(rel)[1] for rel in result.metrics if is_headline(split_rel(rel)[1], patterns)}
    changes = change_findings(result, prev, metrics=metrics, previous_step=previous_step)
    own = [dataclasses.replace(f, previous=prev.get(f"{f.layer}/{f.metric}"), previous_step=previous_step)
           if f.previous is None and f"{f.layer}/{f.metric}" in prev else f for f in own]
    said = {(f.layer, f.metric) for f in own}
    return own + [c for c in changes if (c.layer, c.metric) not in said]


def collect_findings(
    results: Mapping[str, AnalysisResult],
    analyses: Sequence[Analysis] = (),
    *,
    history: History | None = None,
    step: int = 0,
) -> tuple[Finding, ...]:
    """Every analysis' findings, ranked (failures first, then crossed thresholds ...)."""
    from neuronmap.analyses._registry import default_instance

    by_name = {a.name: a for a in analyses}
    previous, previous_step = _previous(history, step)
    found: list[Finding] = []
    for name, result in results.items():
        found += analysis_findings(by_name.get(name) or default_instance(name), result, previous, previous_step)
    return tuple(sorted(found, key=lambda f: -f.rank))


def attach_findings(report: Report, analyses: Sequence[Analysis], history: History | None) -> Report:
    """``report`` with its :attr:`~neuronmap.Report.findings` and headline metric names filled in.

    Called by the engine before the report joins ``history`` (the previous run is the last
    one in it).
    """
    from neuronmap._headline import headline_patterns

    findings = collect_findings(report.results, analyses, history=history, step=report.step)
    by_name = {a.name: a for a in analyses}
    headline = {n: headline_patterns(by_name.get(n), r) for n, r in report.results.items()}
    return dataclasses.replace(report, findings=findings, headline=headline)


def findings_of(report: Report) -> tuple[Finding, ...]:
    """The report's findings, recomputed without history when it carries none (a replayed report)."""
    if report.findings or not report.results:
        return tuple(report.findings)
    return collect_findings(report.results, step=report.step)
