"""One console/log line per scheduled run: how long it took, what it found, where it went.

The line goes to the ``neuronmap`` logger at INFO. When nobody configured logging (no
handler on the logger or the root), it is printed to stderr instead, so a plain script
shows it; ``NEURONMAP_QUIET=1`` silences it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from neuronmap.findings import findings_of

if TYPE_CHECKING:
    from neuronmap.results import Report

__all__ = ["announce_run", "run_line", "where_results_go"]

logger = logging.getLogger("neuronmap")


def where_results_go(reporters: Sequence[Any]) -> list[str]:
    """Each reporter's own description of where to look (``where()``), in order, without repeats."""
    places: list[str] = []
    for reporter in reporters:
        inner = getattr(reporter, "reporter", reporter)
        where = getattr(inner, "where", None)
        try:
            text = where() if callable(where) else None
        except Exception:  # describing a location must never fail a run
            text = None
        if text and text not in places:
            places.append(text)
    return places


def run_line(report: Report, reporters: Sequence[Any], *, seconds: float | None = None) -> str:
    """``neuronmap: step 120 (epoch 1) in 3.2 s, 4 findings (top: ...); results: ...``."""
    found = findings_of(report)
    failed = [n for n, r in report.results.items() if r.status == "failed"]
    parts = [f"neuronmap: step {report.step}" + ("" if report.epoch is None else f" (epoch {report.epoch})")]
    if seconds is not None:
        parts[0] += f" in {seconds:.1f} s"
    parts.append(f"{len(found)} finding{'s' if len(found) != 1 else ''}")
    if failed:
        parts.append(f"{len(failed)} failed ({', '.join(failed)})")
    if found:
        parts.append(f"top: {found[0].line()}")
    places = where_results_go(reporters)
    line = ", ".join(parts)
    return line + (f"; results: {'; '.join(places)}" if places else "")


def announce_run(report: Report, reporters: Sequence[Any], *, started: float | None = None) -> None:
    """Log (or print) :func:`run_line` for a finished run; never raises."""
    if os.environ.get("NEURONMAP_QUIET", "").strip() not in ("", "0"):
        return
    try:
        seconds = None if started is None else time.perf_counter() - started
        line = run_line(report, reporters, seconds=seconds)
    except Exception as err:  # the console line is a courtesy, never a failure
        line = f"neuronmap: step {report.step} finished ({type(err).__name__} while summarising)"
    if logger.hasHandlers():
        logger.info(line)
    else:
        print(line, file=sys.stderr)
