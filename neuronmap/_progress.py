"""One progress-bar helper for the analyses that take more than a few seconds.

A bar is shown only where someone can watch it: on a terminal (stderr is a TTY) and unless
disabled with ``NEURONMAP_PROGRESS=0`` (``1`` forces it on, e.g. in a notebook). Anywhere
else (CI logs, the background publisher, tests) the helper returns the iterable untouched, so
an analysis pays nothing for it and its results never depend on it. tqdm is a core dependency.

Example:
    >>> from neuronmap._progress import progress
    >>> sum(progress(range(4), desc="demo", enabled=False))
    6
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress", "progress_enabled"]

T = TypeVar("T")

ENV = "NEURONMAP_PROGRESS"


def progress_enabled() -> bool:
    """Whether progress bars show: ``NEURONMAP_PROGRESS`` if set (0/1), else whether stderr is a TTY."""
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    enabled: bool | None = None,
) -> Iterator[T]:
    """Iterate over ``iterable``, with a tqdm bar when :func:`progress_enabled` (or ``enabled``).

    Args:
        iterable: What to iterate over.
        desc: The bar's label, e.g. ``"attention: head ablations"``.
        total: Number of items when ``iterable`` has no ``len``.
        unit: The unit shown on the bar.
        enabled: Force the bar on or off; ``None`` decides by :func:`progress_enabled`.
    """
    if not (progress_enabled() if enabled is None else enabled):
        yield from iterable
        return
    from tqdm.auto import tqdm

    # leave=False: the bar disappears when done, so a scheduled run's log keeps one line per run.
    yield from tqdm(iterable, desc=desc, total=total, unit=unit, leave=False)
