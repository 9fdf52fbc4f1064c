"""Fan one stream of results out to several reporters, each guarded on its own.

Each child is wrapped in its own :class:`~neuronmap.reporters._spool.SpooledReporter`, so a
tracker that is down (or a ``wandb.init`` that fails) spools only its own calls while the
other children keep receiving theirs, and nothing is sent twice to a child that did
answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronmap.errors import InvalidParameterError, ReporterError
from neuronmap.reporters._spool import guard_reporters
from neuronmap.reporters.base import BaseReporter, Reporter, RunStatus, log_metrics_at

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from neuronmap.results import Report

__all__ = ["CompositeReporter"]


class CompositeReporter(BaseReporter):
    """Send every call to each of ``reporters``.

    Args:
        reporters: The children: :class:`~neuronmap.reporters.base.Reporter` objects or
            registry names (``"local"``, ``"mlflow"``, ...). Required: the registry name
            ``"composite"`` alone (``get_reporter("composite")``) has nothing to fan out to
            and raises :class:`~neuronmap.errors.InvalidParameterError`; inside
            ``NeuronMap(reporters=[...])`` a plain list already fans out.
        spool_dir: Parent of the children's spool folders (default: the first
            ``LocalReporter`` child's ``run_dir/spool``, else a new folder under
            ``neuronmap-runs/``, created only if something fails).
        strict: Raise :class:`~neuronmap.errors.ReporterError` after every child had the call
            when one of them failed.
        retry_after: Seconds before a failed child is tried again (doubling per failure).
        max_retry_after: Longest wait between tries.

    Example:
        >>> import tempfile
        >>> from neuronmap.reporters import CompositeReporter, LocalReporter
        >>> root = tempfile.mkdtemp()
        >>> both = CompositeReporter([LocalReporter(root, "a"), LocalReporter(root, "b")])
        >>> both.log_metrics({"neuronmap/x/layer/m": 1.0}, step=0)
        >>> both.close()
        >>> len(both)
        2
    """

    name = "composite"
    #: Each child is spooled separately, so the engine must not wrap this reporter again.
    guards_itself = True

    def __init__(
        self,
        reporters: Sequence[Reporter | str] | None = None,
        *,
        spool_dir: str | Path | None = None,
        strict: bool = False,
        retry_after: float = 1.0,
        max_retry_after: float = 60.0,
    ) -> None:
        if reporters is None or isinstance(reporters, str) or not reporters:
            raise InvalidParameterError(
                "CompositeReporter needs the reporters to send each call to, e.g. "
                "CompositeReporter(['local', 'mlflow']) or get_reporter('composite', reporters=['local', 'mlflow']); "
                f"got {reporters!r}. In NeuronMap(reporters=[...]) list them directly: reporters=['local', 'mlflow']."
            )
        from neuronmap.reporters import get_reporter

        children = [get_reporter(child) if isinstance(child, str) else child for child in reporters]
        for child in children:
            if not isinstance(child, Reporter):
                missing = [m for m in _METHODS if not callable(getattr(child, m, None))]
                raise InvalidParameterError(
                    f"CompositeReporter needs Reporter objects; {type(child).__name__} lacks {missing}. "
                    "See neuronmap.reporters.Reporter for the methods a reporter implements."
                )
        self.strict = strict
        self.reporters = guard_reporters(
            children, spool_root=spool_dir, strict=strict, retry_after=retry_after, max_retry_after=max_retry_after
        )

    def __repr__(self) -> str:
        return f"CompositeReporter([{', '.join(repr(getattr(r, 'reporter', r)) for r in self.reporters)}])"

    def __len__(self) -> int:
        return len(self.reporters)

    def __iter__(self) -> Iterator[Reporter]:
        """The children as given (unwrapped)."""
        return (getattr(r, "reporter", r) for r in self.reporters)

    def _each(self, method: str, *args: Any) -> None:
        self._each_call(lambda child: getattr(child, method)(*args))

    def _each_call(self, call: Callable[[Any], object]) -> None:
        errors: list[ReporterError] = []
        for child in self.reporters:
            try:
                call(child)
            except ReporterError as err:  # only with strict=True: every child still gets the call
                errors.append(err)
        if errors:
            raise errors[0]

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, timestamp: float | None = None) -> None:
        # the publisher's timestamp goes to every child, so a retried payload is one point in each tracker
        self._each_call(lambda child: log_metrics_at(child, metrics, step, timestamp=timestamp))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._each("log_params", params)

    def log_figure(self, name: str, figure: Figure, step: int) -> None:
        self._each("log_figure", name, figure, step)

    def log_table(self, name: str, dataframe: pd.DataFrame, step: int) -> None:
        self._each("log_table", name, dataframe, step)

    def log_text(self, name: str, text: str) -> None:
        self._each("log_text", name, text)

    def log_artifact(self, path: str | Path) -> None:
        self._each("log_artifact", path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._each("set_tags", tags)

    def log_report(self, report: Report) -> None:
        """Each child logs the report its own way (a local folder keeps epoch and event)."""
        self._each("log_report", report)

    def flush(self) -> None:
        self._each("flush")

    def close(self, status: RunStatus = "FINISHED") -> None:
        self._each("close", status)


_METHODS = ("log_metrics", "log_params", "log_figure", "log_table", "log_text",
            "log_artifact", "set_tags", "flush", "close")
