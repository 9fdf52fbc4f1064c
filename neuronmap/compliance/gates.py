"""CI validation gates: thresholds on NeuronMap metrics -> pass/fail, exit code, JUnit XML.

A gate file lists checks on the stable metric keys (see :mod:`neuronmap.compliance._gate_config` for the
format). :func:`evaluate` applies them to a run's History and returns a frozen
:class:`GateReport` that renders as JSON, JUnit XML (one testcase per check, value and threshold
in the message, as GitHub, GitLab and Jenkins display it) and a Markdown table.

Statuses keep *failed* and *not run* apart: ``passed`` and ``failed`` checks were evaluated;
``error`` checks could not be (metric missing, no CI sibling, no baseline) and ``skipped`` ones
were optional and had nothing to evaluate. Exit codes: 0 all passed, 1 a check failed, 2 a check
could not be evaluated or the run/config could not be read.

Example:
    >>> import pandas as pd
    >>> from neuronmap.results import History
    >>> frame = pd.DataFrame([[0, 0, None, "probing", "net.1", "accuracy", 0.9,
    ...                        "neuronmap/probing/net.1/accuracy"]],
    ...                      columns=["step", "epoch", "event", "analysis", "layer", "metric", "value", "key"])
    >>> report = evaluate(History(frame), [{"metric": "neuronmap/probing/*/accuracy", "min": 0.8}])
    >>> report.exit_code
    0
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import pandas as pd

from neuronmap._keys import SIBLINGS
from neuronmap.capture.layers import match_selector
from neuronmap.compliance._gate_config import (
    BaselineRule,
    GateCheck,
    GateConfig,
    GateConfigError,
    load_gate_config,
)
from neuronmap.compliance._gate_output import report_to_dict, to_junit_xml, to_markdown
from neuronmap.errors import InvalidParameterError
from neuronmap.results import History
from neuronmap.runs.source import LoadedRun, RunReadError, load_run

if TYPE_CHECKING:
    from neuronmap.compliance.audit import AuditTrail

__all__ = ["BaselineRule", "CheckResult", "GateCheck", "GateConfig", "GateConfigError", "GateMonitor", "GateReport",
           "KeyResult", "RunReadError", "Status", "evaluate", "load_gate_config", "match_keys"]

Status = Literal["passed", "failed", "error", "skipped"]
RunLike: TypeAlias = "History | pd.DataFrame | LoadedRun | str | os.PathLike[str]"


@dataclass(frozen=True)
class KeyResult:
    """One metric key matched by a check."""

    #: The metric key (the statistic sibling is in :attr:`compared_key`).
    key: str
    #: The key whose values were compared (``key`` or ``key_ci_low``/``key_ci_high``).
    compared_key: str
    status: Status
    #: The decisive value (the last step's, or the worst/best one for ``all``/``any``).
    value: float | None
    #: The step of :attr:`value`.
    step: int | None
    #: The baseline run's value and the delta, when the check has a baseline rule.
    baseline_value: float | None
    delta: float | None
    #: What was compared with what, in words.
    message: str


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check over every key it matched."""

    check: GateCheck
    status: Status
    #: One line: the values, thresholds and (for errors) the reason.
    message: str
    results: tuple[KeyResult, ...] = ()

    @property
    def name(self) -> str:
        return self.check.name

    @property
    def ran(self) -> bool:
        """Whether the check was evaluated (``passed`` or ``failed``), as opposed to not run."""
        return self.status in ("passed", "failed")

    @property
    def threshold(self) -> str:
        """The condition in words, e.g. ``ci_low >= 0.7``."""
        return _threshold(self.check)


@dataclass(frozen=True)
class GateReport:
    """Every check's outcome for one run, frozen; renders as JSON, JUnit XML and Markdown."""

    #: The evaluated run, as the user named it.
    run: str
    #: The baseline run, if any.
    baseline: str | None
    #: Where the checks came from.
    config_source: str
    #: ISO-8601 UTC time of the evaluation.
    timestamp: str
    checks: tuple[CheckResult, ...]

    def by_status(self, status: Status) -> list[CheckResult]:
        return [c for c in self.checks if c.status == status]

    @property
    def ok(self) -> bool:
        """All checks passed or were optional and skipped."""
        return self.exit_code == 0

    @property
    def exit_code(self) -> int:
        """0 all passed, 1 a check failed, 2 a check could not be evaluated."""
        if self.by_status("error"):
            return 2
        return 1 if self.by_status("failed") else 0

    def to_dict(self) -> dict[str, Any]:
        return report_to_dict(self)

    def to_json(self, **kwargs: Any) -> str:
        import json

        return json.dumps(self.to_dict(), **kwargs)

    def to_junit_xml(self) -> str:
        """JUnit XML: one ``<testcase>`` per check; ``<failure>``, ``<error>`` or ``<skipped>``."""
        return to_junit_xml(self)

    def to_markdown(self) -> str:
        """A Markdown table (status, check, value, threshold, message)."""
        return to_markdown(self)

    def write(self, *, junit: str | Path | None = None, json: str | Path | None = None,
              markdown: str | Path | None = None, github_summary: bool = True) -> None:
        """Write the requested files; append the Markdown to ``$GITHUB_STEP_SUMMARY`` when set."""
        for path, text in ((junit, self.to_junit_xml), (json, lambda: self.to_json(indent=2)),
                           (markdown, self.to_markdown)):
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(text(), encoding="utf-8")
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if github_summary and summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(self.to_markdown() + "\n")


def evaluate(
    history_or_run: RunLike,
    config: GateConfig | str | os.PathLike[str] | Mapping[str, Any] | Sequence[Any],
    baseline: RunLike | None = None,
    *,
    tracking_uri: str | None = None,
    audit: bool | AuditTrail = True,
) -> GateReport:
    """Apply gate checks to a run.

    Args:
        history_or_run: A :class:`~neuronmap.History`, its frame, a run folder or ``mlflow:<run_id>``.
        config: A gates file path, its text, the parsed list/mapping or a :class:`GateConfig`.
        baseline: Another run to compare with (checks with a ``baseline:`` rule need it).
        tracking_uri: MLflow tracking URI for ``mlflow:`` runs (default ``MLFLOW_TRACKING_URI``).
        audit: ``True`` appends the evaluation to the run folder's audit trail when the run is a
            local folder; an :class:`~neuronmap.audit.AuditTrail` appends there; ``False`` never.

    Returns:
        The frozen :class:`GateReport`.

    Raises:
        GateConfigError: The config is invalid (the message has the line).
        RunReadError: A run cannot be read.
    """
    cfg = load_gate_config(config)
    run = _as_run(history_or_run, tracking_uri)
    base = _as_run(baseline, tracking_uri) if baseline is not None else None
    checks = tuple(_evaluate_check(check, run, base) for check in cfg.checks)
    report = GateReport(run=run.source, baseline=base.source if base else None, config_source=cfg.source,
                        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"), checks=checks)
    trail = _audit_trail(audit, run)
    if trail is not None:
        trail.record_gate(report)
    return report


def _audit_trail(audit: bool | AuditTrail, run: LoadedRun) -> AuditTrail | None:
    if audit is False:
        return None
    if audit is True:
        if run.run_dir is None:
            return None
        from neuronmap.compliance.audit import AuditTrail

        return AuditTrail(run.run_dir)
    return audit


def _as_run(run: RunLike, tracking_uri: str | None) -> LoadedRun:
    if isinstance(run, LoadedRun):
        return run
    if isinstance(run, History):
        return LoadedRun("<history>", run.frame)
    if isinstance(run, pd.DataFrame):
        missing = {"step", "key", "value"} - set(run.columns)
        if missing:
            raise InvalidParameterError(f"A History frame needs columns step, key, value; missing {sorted(missing)}.")
        return LoadedRun("<frame>", run)
    if isinstance(run, (str, os.PathLike)):
        return load_run(run, tracking_uri=tracking_uri)
    raise InvalidParameterError(
        f"history_or_run must be a History, a DataFrame, a run folder or 'mlflow:<run_id>'; got {type(run).__name__}."
    )


def match_keys(pattern: str, keys: Sequence[str]) -> list[str]:
    """Keys matched by a key or glob; statistic siblings only when the pattern names one.

    Example:
        >>> match_keys("neuronmap/p/*/acc", ["neuronmap/p/a/acc", "neuronmap/p/a/acc_ci_low", "neuronmap/p/a.b/acc"])
        ['neuronmap/p/a.b/acc', 'neuronmap/p/a/acc']
    """
    if not any(ch in pattern for ch in "*?["):
        return [pattern] if pattern in keys else []
    # The layer-selector matcher, with `*` staying between slashes (layer names in keys hold dots).
    wants_sibling = pattern.endswith(SIBLINGS)
    return sorted(k for k in match_selector(pattern, keys, sep="/") if wants_sibling or not k.endswith(SIBLINGS))


def _closest(pattern: str, keys: Sequence[str]) -> list[str]:
    plain = [k for k in keys if not k.endswith(SIBLINGS)] or list(keys)
    close = difflib.get_close_matches(pattern.replace("*", ""), plain, n=3, cutoff=0.4)
    return close or plain[:3]


def _series(frame: pd.DataFrame, key: str) -> pd.Series:
    sel = frame[frame["key"] == key]
    series = pd.Series(sel["value"].to_numpy(dtype=float), index=sel["step"].to_numpy(dtype=int))
    return series[~series.index.duplicated(keep="last")].sort_index()


def _evaluate_check(check: GateCheck, run: LoadedRun, base: LoadedRun | None) -> CheckResult:
    keys = match_keys(check.metric, run.keys)
    if not keys:
        status: Status = "error" if check.required else "skipped"
        close = _closest(check.metric, run.keys)
        hint = f"closest keys: {', '.join(close)}" if close else "the run has no metrics at all"
        return CheckResult(check, status, f"metric {check.metric!r} not found in {run.source}; {hint}.")
    if check.baseline is not None and base is None:
        status = "error" if check.required else "skipped"
        return CheckResult(check, status, "check has a baseline rule but no baseline run was given "
                                          "(pass --baseline RUN or baseline=...).")
    results = tuple(_evaluate_key(check, key, run, base) for key in keys)
    wanted: Status
    for wanted in ("error", "failed"):
        bad = [r for r in results if r.status == wanted]
        if bad:
            shown = "; ".join(r.message for r in bad[:5]) + (f"; ... {len(bad) - 5} more" if len(bad) > 5 else "")
            return CheckResult(check, wanted, shown, results)
    shown = "; ".join(r.message for r in results[:5]) + (f"; ... {len(results) - 5} more" if len(results) > 5 else "")
    return CheckResult(check, "passed", shown, results)


def _stat_key(key: str, statistic: str) -> str:
    return key if statistic == "value" else f"{key}_{statistic}"


def _evaluate_key(check: GateCheck, key: str, run: LoadedRun, base: LoadedRun | None) -> KeyResult:
    compared = _stat_key(key, check.statistic)
    series = _series(run.frame, compared)
    if series.empty:
        have = [k for k in run.keys if k.startswith(key)]
        return KeyResult(key, compared, "error", None, None, None, None,
                         f"{key} has no {check.statistic} (no key {compared}; present: {', '.join(have)})")
    if check.when == "last":
        series = series.iloc[-1:]
    base_value = None
    if check.baseline is not None and base is not None:
        base_key = _stat_key(key, check.baseline.statistic)
        base_series = _series(base.frame, base_key).dropna()
        if base_series.empty:
            return KeyResult(key, compared, "error", None, None, None, None,
                             f"baseline run {base.source} has no finite {base_key}")
        base_value = float(base_series.iloc[-1])
    outcomes = [(int(step), float(v), *_judge(check, float(v), base_value)) for step, v in series.items()]
    if any(math.isnan(v) for _, v, _, _ in outcomes) and check.when != "any":
        step = next(s for s, v, _, _ in outcomes if math.isnan(v))
        return KeyResult(key, compared, "error", None, step, base_value, None,
                         f"{compared} is NaN at step {step} (the analysis could not compute it)")
    passing = [o for o in outcomes if o[2]]
    ok = bool(passing) if check.when == "any" else len(passing) == len(outcomes)
    decisive = (passing[-1] if passing else outcomes[-1]) if check.when == "any" else next(
        (o for o in outcomes if not o[2]), outcomes[-1])
    step, value, _, delta = decisive
    where = {"last": f"at step {step}", "all": f"at step {step} ({len(passing)}/{len(outcomes)} steps pass)",
             "any": f"at step {step} ({len(passing)}/{len(outcomes)} steps pass)"}[check.when]
    verdict = "meets" if ok else "violates"
    text = f"{compared} = {value:.6g} {where} {verdict} {_threshold(check)}"
    if base_value is not None:
        text += f" (baseline {base_value:.6g}, delta {delta:+.6g})"
    return KeyResult(key, compared, "passed" if ok else "failed", value, step, base_value, delta, text)


def _judge(check: GateCheck, value: float, base: float | None) -> tuple[bool, float | None]:
    """Whether ``value`` meets the check, and the delta against the baseline."""
    if math.isnan(value):
        return False, None
    ok = (check.min is None or value >= check.min) and (check.max is None or value <= check.max)
    delta = None
    rule = check.baseline
    if rule is not None and base is not None:
        if rule.mode == "relative":
            if base != 0:
                delta = (value - base) / abs(base)
            else:
                delta = 0.0 if value == base else math.copysign(math.inf, value - base)
        else:
            delta = value - base
        ok = ok and (rule.min_delta is None or delta >= rule.min_delta)
        ok = ok and (rule.max_delta is None or delta <= rule.max_delta)
        if rule.margin is not None:
            ok = ok and (delta >= -rule.margin if rule.higher_is_better else delta <= rule.margin)
    return ok, delta


def _threshold(check: GateCheck) -> str:
    stat = check.statistic
    parts = []
    if check.min is not None:
        parts.append(f"{stat} >= {check.min:g}")
    if check.max is not None:
        parts.append(f"{stat} <= {check.max:g}")
    rule = check.baseline
    if rule is not None:
        unit = " (relative)" if rule.mode == "relative" else ""
        if rule.min_delta is not None:
            parts.append(f"delta >= {rule.min_delta:g}{unit}")
        if rule.max_delta is not None:
            parts.append(f"delta <= {rule.max_delta:g}{unit}")
        if rule.margin is not None:
            sign = ">= -" if rule.higher_is_better else "<= +"
            parts.append(f"delta {sign}{rule.margin:g}{unit} (non-inferiority)")
    return " and ".join(parts)


class GateMonitor:
    """Evaluate gates after every engine run (what the callbacks' ``gates=`` argument builds).

    Each check's outcome is logged to the monitor's reporters as
    ``neuronmap/gates/<check>/passed`` (1.0 or 0.0, for checks that ran) at the run's step. A
    failing gate never raises inside training; with ``stop_on_failure`` it sets
    :attr:`should_stop`, which the callbacks turn into ``trainer.should_stop`` /
    ``control.should_training_stop``. Only a failed check stops training: a check that
    errors (exit code 2: its metric is missing, or a baseline rule has no baseline) is in
    :attr:`last_report` with its message but neither stops training nor hides a failed check.

    Args:
        config: The gate checks (path, text, list/mapping or :class:`GateConfig`).
        baseline: A baseline run for checks with a ``baseline:`` rule.
        stop_on_failure: Set :attr:`should_stop` when a check fails (even when another
            check errored).
        audit: An audit trail to record each evaluation in (default: none).

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
        >>> gates = GateMonitor([{"metric": "neuronmap/activation_stats/*/nonfinite_fraction", "max": 0.0}],
        ...                     stop_on_failure=True).attach(monitor)
        >>> _ = monitor.run(tiny_mlp(), step=0)
        >>> gates.last_report.exit_code, gates.should_stop
        (0, False)
    """

    def __init__(self, config: GateConfig | str | os.PathLike[str] | Mapping[str, Any] | Sequence[Any], *,
                 baseline: RunLike | None = None, stop_on_failure: bool = False,
                 audit: AuditTrail | None = None) -> None:
        self.config = load_gate_config(config)
        self.baseline = _as_run(baseline, None) if baseline is not None else None
        self.stop_on_failure = stop_on_failure
        self.audit = audit
        self.last_report: GateReport | None = None
        self.should_stop = False
        self._monitor: Any = None

    def attach(self, monitor: Any) -> GateMonitor:
        """Evaluate after every run of ``monitor`` (a :class:`~neuronmap.NeuronMap`); returns ``self``."""
        self._monitor = monitor
        monitor.add_listener(self)
        return self

    def __call__(self, report: Any, model: Any) -> None:
        history = self._monitor.history if self._monitor is not None else History(report.to_frame())
        result = evaluate(history, self.config, self.baseline, audit=self.audit if self.audit is not None else False)
        self.last_report = result
        # Not `exit_code == 1`: one check that errors (exit 2, e.g. a metric not logged yet or a
        # baseline rule without a baseline) must not hide another check that failed.
        if self.stop_on_failure and result.by_status("failed"):
            self.should_stop = True
        if self._monitor is None:
            return
        metrics = {f"neuronmap/gates/{re.sub(r'[^A-Za-z0-9._-]+', '_', c.name)}/passed": float(c.status == "passed")
                   for c in result.checks if c.ran}
        # queued like every result (spooled when a tracker is down, never blocking training),
        # and kept in the monitor's history, which the gates and the model card read
        self._monitor.publisher.log_metrics(metrics, report.step)
        self._monitor.history.add_metrics(metrics, step=report.step, epoch=report.epoch, event=report.event)
