"""Results of scheduled runs: :class:`AnalysisResult` (one analysis, its metrics in a
:class:`MetricSet`), :class:`Report` (one run) and :class:`History` (all runs).

Metric keys are stable, slash-separated and tracker-safe:
``neuronmap/<analysis>/<layer>/<metric>``, with ``_ci_low``, ``_ci_high``, ``_p`` and
``_p_adj`` siblings where a statistic has them.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from neuronmap._keys import PREFIX, metric_key, split_key  # re-exported: they lived here before
from neuronmap.errors import InvalidParameterError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from neuronmap.findings import Finding

__all__ = ["HISTORY_COLUMNS", "PREFIX", "AnalysisResult", "History", "MetricSet", "Report", "Status", "metric_key",
           "split_key"]

HISTORY_COLUMNS = ["step", "epoch", "event", "analysis", "layer", "metric", "value", "key"]

Status = Literal["ok", "skipped", "failed"]


class MetricSet(dict[str, float]):
    """Relative metric keys ``<layer>/<metric>`` -> value, with helpers for statistic siblings."""

    def add(
        self,
        layer: str,
        metric: str,
        value: float,
        *,
        ci: tuple[float, float] | Any | None = None,
        p: float | None = None,
        p_adj: float | None = None,
    ) -> None:
        """Add ``value`` and, when given, its ``_ci_low``/``_ci_high``/``_p``/``_p_adj`` siblings.

        ``ci`` may be a ``(low, high)`` pair or any object with ``.low`` and ``.high``.
        """
        if "/" in metric:
            raise InvalidParameterError(f"Metric names cannot contain '/'; got {metric!r}.")
        key = f"{layer}/{metric}"
        self[key] = float(value)
        if ci is not None:
            low, high = (ci.low, ci.high) if hasattr(ci, "low") else ci  # type: ignore[union-attr]
            self[f"{key}_ci_low"] = float(low)
            self[f"{key}_ci_high"] = float(high)
        if p is not None:
            self[f"{key}_p"] = float(p)
        if p_adj is not None:
            self[f"{key}_p_adj"] = float(p_adj)


@dataclass(frozen=True)
class AnalysisResult:
    """What one analysis produced in one run."""

    #: Registry name of the analysis (the ``<analysis>`` part of metric keys).
    name: str
    #: Relative keys ``<layer>/<metric>`` -> value.
    metrics: Mapping[str, float] = field(default_factory=dict)
    #: Named tables.
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    #: Named matplotlib figures (closed by the engine once reported).
    figures: Mapping[str, Figure] = field(default_factory=dict)
    #: Human-readable remarks (skipped layers, reasons for NaN ...).
    notes: tuple[str, ...] = ()
    #: ``ok``, ``skipped`` (nothing to compute, with a note) or ``failed`` (see ``error``).
    status: Status = "ok"
    #: The exception text when the analysis failed.
    error: str | None = None
    #: Wall-clock seconds the analysis took.
    duration_s: float = 0.0

    def finite_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if math.isfinite(v)}


@dataclass(frozen=True)
class Report:
    """Everything one scheduled run produced."""

    #: Global step, epoch and the event that triggered the run.
    step: int
    epoch: int | None
    event: str | None
    #: ISO-8601 UTC time the run started.
    timestamp: str
    #: Results per analysis name.
    results: Mapping[str, AnalysisResult] = field(default_factory=dict)
    #: SHA-256 of the probe set.
    probe_fingerprint: str = ""
    #: Seconds spent per stage (``capture``, then one entry per analysis).
    timings: Mapping[str, float] = field(default_factory=dict)
    #: Ranked findings (failures, crossed thresholds, significant effects, changes since the
    #: previous run); filled in by the engine, see :mod:`neuronmap.findings`.
    findings: tuple[Finding, ...] = ()
    #: Headline metric patterns per analysis (what trackers chart; see ``neuronmap._headline``).
    headline: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def summary(self, *, limit: int | None = None) -> str:
        """The findings as text: a header line, then one ``- analysis: claim`` line each.

        Example:
            >>> print(Report(3, 0, "validation_end", "").summary())
            NeuronMap step 3 (epoch 0, validation_end): 0 findings
            - No findings: nothing significant, no threshold crossed.
        """
        from neuronmap.findings import findings_of, summary_text

        found = findings_of(self)
        where = ", ".join(str(x) for x in (f"epoch {self.epoch}" if self.epoch is not None else None, self.event)
                          if x is not None)
        header = f"NeuronMap step {self.step}" + (f" ({where})" if where else "") + f": {len(found)} findings"
        return summary_text(found, header=header, limit=limit)

    def done(self) -> bool:
        """Whether every analysis of this run finished (always, except a background run's
        :class:`~neuronmap._executor.PendingReport`)."""
        return True

    def wait(self, timeout: float | None = None) -> Report:
        """The complete report: this one (a background run's pending report waits for its worker).

        Example:
            >>> Report(3, 0, "validation_end", "").wait().step
            3
        """
        return self

    @property
    def metrics(self) -> dict[str, float]:
        """Flat ``neuronmap/<analysis>/<layer>/<metric>`` -> value over every analysis."""
        out: dict[str, float] = {}
        for name, result in self.results.items():
            for rel, value in result.metrics.items():
                out[f"{PREFIX}/{name}/{rel}"] = float(value)
        return out

    @property
    def failed(self) -> dict[str, str]:
        """Analyses that failed, with their error text."""
        return {n: r.error or "" for n, r in self.results.items() if r.status == "failed"}

    def to_frame(self) -> pd.DataFrame:
        """This run's metrics in the long format of :class:`History`."""
        rows = []
        for key, value in self.metrics.items():
            analysis, layer, metric = split_key(key)
            rows.append([self.step, self.epoch, self.event, analysis, layer, metric, value, key])
        return pd.DataFrame(rows, columns=HISTORY_COLUMNS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "event": self.event,
            "timestamp": self.timestamp,
            "probe_fingerprint": self.probe_fingerprint,
            "timings": dict(self.timings),
            "findings": [f.to_dict() for f in self.findings],
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()},
            "analyses": {
                n: {"status": r.status, "error": r.error, "notes": list(r.notes), "duration_s": r.duration_s,
                    "tables": sorted(r.tables), "figures": sorted(r.figures)}
                for n, r in self.results.items()
            },
        }

    def to_json(self, **kwargs: Any) -> str:
        """JSON of :meth:`to_dict` (non-finite values as ``null``)."""
        return json.dumps(self.to_dict(), **kwargs)

    def _repr_html_(self) -> str:
        """Findings, a values table per analysis and the figures (for notebooks)."""
        from neuronmap._notebook import report_html

        return report_html(self)


class History:
    """Every run's metrics as one long-format table.

    Columns: ``step, epoch, event, analysis, layer, metric, value, key``. Gates, model cards and
    drift analyses read it.

    Example:
        >>> h = History()
        >>> len(h.frame)
        0
    """

    def __init__(self, frame: pd.DataFrame | None = None) -> None:
        self._frames: list[pd.DataFrame] = [] if frame is None or frame.empty else [frame[HISTORY_COLUMNS]]
        self._cache: pd.DataFrame | None = None
        # The background executor appends from its completion thread while the training thread may
        # read (gates, drift): one lock makes append + cache invalidation and read + cache fill atomic.
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def append(self, report: Report) -> None:
        frame = report.to_frame()
        with self._lock:
            self._frames.append(frame)
            self._cache = None

    def extend(self, frames: Iterable[pd.DataFrame]) -> None:
        new = [f[HISTORY_COLUMNS] for f in frames]
        with self._lock:
            self._frames.extend(new)
            self._cache = None

    def add_metrics(self, metrics: Mapping[str, float], *, step: int, epoch: int | None = None,
                    event: str | None = None) -> None:
        """Add metrics logged beside a report (gate outcomes) at ``step``."""
        rows = []
        for key, value in metrics.items():
            try:
                analysis, layer, metric = split_key(key)
            except ValueError:
                analysis, layer, metric = "", "", key
            rows.append([int(step), epoch, event, analysis, layer, metric, float(value), key])
        if rows:
            frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
            with self._lock:
                self._frames.append(frame)
                self._cache = None

    @property
    def frame(self) -> pd.DataFrame:
        """The whole history (a copy-free concatenation, cached; safe to read while another thread appends)."""
        with self._lock:
            if self._cache is None:
                frames = [f for f in self._frames if not f.empty]
                self._cache = (
                    pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=HISTORY_COLUMNS)
                )
            return self._cache

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def steps(self) -> list[int]:
        return sorted({int(s) for s in self.frame["step"]})

    def series(self, key: str) -> pd.Series:
        """Values of one metric key indexed by step."""
        f = self.frame
        sel = f[f["key"] == key]
        return pd.Series(sel["value"].to_numpy(dtype=float), index=sel["step"].to_numpy(), name=key)

    def latest(self) -> dict[str, float]:
        """Each key's value at its last step."""
        f = self.frame
        if f.empty:
            return {}
        last = f.drop_duplicates("key", keep="last")
        return dict(zip(last["key"], last["value"].astype(float), strict=True))

    def _repr_html_(self) -> str:
        """The latest value of each headline metric and its trend (for notebooks)."""
        from neuronmap._notebook import history_html

        return history_html(self)

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        self.frame.to_csv(path, index=False)
        return path

    @classmethod
    def from_csv(cls, path: str | Path) -> History:
        frame = pd.read_csv(path, dtype={"event": "string", "layer": "string", "metric": "string"})
        return cls(frame)

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-able rows (for callback ``state_dict``)."""
        f = self.frame.astype(object).where(self.frame.notna(), None)
        return f.to_dict(orient="records")

    @classmethod
    def from_records(cls, records: list[Mapping[str, Any]]) -> History:
        frame = pd.DataFrame(list(records), columns=HISTORY_COLUMNS)
        frame["value"] = frame["value"].astype(float)
        return cls(frame)
