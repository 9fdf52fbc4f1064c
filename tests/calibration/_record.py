"""Measured calibration rates: checked against their tolerance, recorded, rendered into the docs.

Every simulation calls :func:`check_rate` with the count of events (rejections under the null,
intervals covering the truth, detections of a planted effect) out of its replications. The
function asserts the rate lies within the tolerance and records a row. After a full-size run
(``--calibration``) the rows go to ``docs/calibration/results.json`` and the table between the
``calibration-table`` markers of ``docs/statistics-and-similarity.md`` is regenerated from them
by :func:`render_table`; ``test_docs_table.py`` checks (in ``make test``) that the committed
table is the rendering of the committed JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from scipy.stats import binom

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "calibration" / "results.json"
DOC = ROOT / "docs" / "statistics-and-similarity.md"
START, END = "<!-- calibration-table:start -->", "<!-- calibration-table:end -->"
Kind = Literal["null rejection", "null rejection (at most alpha)", "coverage", "power"]

# Coverage tolerance of the issue at full size: nominal +- 3 points.
COVERAGE_POINTS = 0.03


def full_size(config: Any) -> bool:
    """Whether the full-size simulations run (``--calibration`` or NEURONMAP_CALIBRATION=full)."""
    try:
        flag = bool(config.getoption("--calibration"))
    except ValueError:  # the option belongs to tests/calibration/conftest.py, not loaded
        flag = False
    return flag or os.environ.get("NEURONMAP_CALIBRATION", "") == "full"


def binomial_band(nominal: float, reps: int, level: float = 0.99) -> tuple[float, float]:
    """Central ``level`` band of an observed rate ``Binomial(reps, nominal) / reps``."""
    tail = (1.0 - level) / 2.0
    return float(binom.ppf(tail, reps, nominal)) / reps, float(binom.ppf(1.0 - tail, reps, nominal)) / reps


@dataclass(frozen=True)
class Row:
    statistic: str
    method: str
    kind: str
    scenario: str
    nominal: float
    rate: float
    low: float
    high: float
    reps: int
    size: str


class Recorder:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def write_full(self) -> None:
        rows = [asdict(r) for r in self.rows if r.size == "full"]
        if not rows:
            return
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        key = ("statistic", "method", "kind", "scenario")  # chi2 and permutation rows differ in method only
        merged = {tuple(r[k] for k in key): r for r in old}
        merged.update({tuple(r[k] for k in key): r for r in rows})
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        ordered = sorted(merged.values(), key=lambda r: (r["statistic"], r["kind"], r["scenario"], r["method"]))
        RESULTS.write_text(json.dumps(ordered, indent=1) + "\n")
        update_doc(ordered)


RECORDER = Recorder()


def check_rate(
    events: int, reps: int, *, nominal: float, kind: Kind, statistic: str, method: str, scenario: str,
    size: str, minimum: float | None = None,
) -> float:  # fmt: skip
    """Assert ``events / reps`` is calibrated and record it.

    * ``null rejection``: within the binomial 99 % band around ``nominal`` (alpha).
    * ``null rejection (at most alpha)``: below the band's upper end, for procedures that are
      conservative by design (sequential p-values, whose support is ``h / n``).
    * ``coverage``: within nominal +- 3 points at full size; at the fast size within the wider of
      that and the binomial 99 % band (a few dozen replications cannot resolve 3 points).
    * ``power``: at least ``minimum`` (the planted effect is detected).
    """
    rate = events / reps
    if kind == "null rejection":
        low, high = binomial_band(nominal, reps)
    elif kind == "null rejection (at most alpha)":  # valid by construction, conservative by design
        low, high = 0.0, binomial_band(nominal, reps)[1]
    elif kind == "coverage":
        b_low, b_high = binomial_band(nominal, reps)
        low, high = nominal - COVERAGE_POINTS, min(1.0, nominal + COVERAGE_POINTS)
        if size != "full":
            low, high = min(low, b_low), max(high, b_high)
    else:
        low, high = float(minimum if minimum is not None else 0.8), 1.0
    RECORDER.add(Row(statistic, method, kind, scenario, nominal, rate, low, high, reps, size))
    assert low <= rate <= high, (
        f"{statistic} ({method}), {kind} in '{scenario}': {events}/{reps} = {rate:.3f}, "
        f"outside [{low:.3f}, {high:.3f}] (nominal {nominal})"
    )
    return rate


def render_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of the docs, from recorded rows."""
    lines = [
        "| Statistic | Method | Check | Simulation | Nominal | Measured | Accepted range | Replications | Pass |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['statistic']} | {r['method']} | {r['kind']} | {r['scenario']} | {r['nominal']:.2f} | "
            f"**{r['rate']:.3f}** | [{r['low']:.3f}, {r['high']:.3f}] | {r['reps']} | "
            f"{'yes' if r['low'] <= r['rate'] <= r['high'] else '**no**'} |"
        )
    return "\n".join(lines)


def update_doc(rows: list[dict[str, Any]]) -> None:
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{render_table(rows)}\n{END}{tail}")


def doc_table() -> str:
    text = DOC.read_text()
    return text.split(START, 1)[1].split(END, 1)[0].strip()
