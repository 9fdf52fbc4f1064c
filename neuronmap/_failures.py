"""NeuronMap's failure policy in one place: what fails is recorded, warned about, and training goes on.

An analysis that raises becomes a ``failed`` :class:`~neuronmap.results.AnalysisResult`
(its error text kept for the report, ``failures.json`` and the audit trail) and one
:class:`~neuronmap.errors.AnalysisFailedWarning` points at the caller's line; a findings
summary or a listener (audit trail, gates) that raises warns the same way. ``strict=True``
raises instead. The engine, and the background executor's worker (which records without
warning: its warnings would not reach the user), both go through :func:`run_analysis`.
"""

from __future__ import annotations

import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap.errors import AnalysisError, AnalysisFailedWarning

if TYPE_CHECKING:
    from neuronmap.analyses.base import Analysis, AnalysisContext
    from neuronmap.results import AnalysisResult

__all__ = ["caller_stacklevel", "guarded", "run_analysis"]

_PACKAGE = str(Path(__file__).resolve().parent)


def caller_stacklevel() -> int:
    """``stacklevel`` of the first frame outside NeuronMap: the training loop that made the call."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def run_analysis(
    analysis: Analysis, ctx: AnalysisContext, *, strict: bool = False, warn: bool = True
) -> AnalysisResult:
    """Run ``analysis`` on ``ctx``, timed, with the model's training mode restored afterwards.

    Raises:
        AnalysisError: The analysis raised and ``strict`` is true.
    """
    from neuronmap.results import AnalysisResult

    t0 = time.perf_counter()
    was_training = ctx.model.training
    try:
        result = analysis.run(ctx)
    except Exception as err:
        if strict:
            raise AnalysisError(f"Analysis {analysis.name!r} failed at step {ctx.step}: {err}") from err
        if warn:
            warnings.warn(
                f"NeuronMap analysis {analysis.name!r} failed at step {ctx.step} and was skipped "
                f"({type(err).__name__}: {err}); training goes on. Pass strict=True to raise.",
                AnalysisFailedWarning,
                stacklevel=caller_stacklevel(),
            )
        error = traceback.format_exception_only(type(err), err)[-1].strip()
        return AnalysisResult(analysis.name, status="failed", error=error, duration_s=time.perf_counter() - t0)
    finally:
        ctx.model.train(was_training)
    return AnalysisResult(
        result.name, metrics=result.metrics, tables=result.tables, figures=result.figures, notes=result.notes,
        status=result.status, error=result.error, duration_s=time.perf_counter() - t0,
    )


def guarded(what: str, fn: Callable[..., Any], *args: Any, strict: bool = False, default: Any = None) -> Any:
    """``fn(*args)``; a failure warns and returns ``default`` (``strict=True`` raises)."""
    try:
        return fn(*args)
    except Exception as err:
        if strict:
            raise
        warnings.warn(
            f"NeuronMap's {what} failed ({type(err).__name__}: {err}); the run's results are kept and training "
            "goes on. Pass strict=True to raise.",
            AnalysisFailedWarning,
            stacklevel=caller_stacklevel(),
        )
        return default
