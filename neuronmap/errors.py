"""Exception hierarchy of NeuronMap.

Every error NeuronMap raises derives from :class:`NeuronMapError`; leaves also derive
from the built-in exception a caller would naturally catch (``KeyError`` for a missing
layer, ``ValueError`` for a bad parameter), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "AnalysisError",
    "AnalysisFailedWarning",
    "CorruptFileError",
    "ForwardError",
    "InvalidParameterError",
    "LayerNotFoundError",
    "MemoryBudgetError",
    "MissingDependencyError",
    "NeuronMapError",
    "NeuronMapWarning",
    "PreflightError",
    "ProbeSetError",
    "ReporterError",
    "ReporterWarning",
    "RunSkippedWarning",
    "TornLineWarning",
]


class NeuronMapError(Exception):
    """Root of every error raised by NeuronMap."""


class InvalidParameterError(NeuronMapError, ValueError):
    """A parameter has a value outside the allowed set or range."""


class LayerNotFoundError(NeuronMapError, KeyError):
    """A layer selector names no module of the model."""

    def __str__(self) -> str:  # KeyError would repr() the message and add quotes
        return str(self.args[0]) if self.args else ""


class ProbeSetError(NeuronMapError, ValueError):
    """A probe set is empty or its columns disagree in length."""


class CorruptFileError(NeuronMapError, ValueError):
    """A saved file (activations, probe set) is truncated, corrupt or not in NeuronMap's format."""


class MemoryBudgetError(NeuronMapError, MemoryError):
    """A capture would exceed its memory budget (``max_bytes``)."""


class ForwardError(NeuronMapError, RuntimeError):
    """The model raised while running on the probe set."""


class PreflightError(NeuronMapError, ValueError):
    """The set-up cannot work (found before training starts); the message lists every problem.

    Attributes:
        problems: One line per problem found.
    """

    def __init__(self, problems: list[str], *, owner: str = "NeuronMap") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{owner} preflight found {len(self.problems)} problem(s) before training started:\n{lines}"
        )


class AnalysisError(NeuronMapError, RuntimeError):
    """An analysis failed; raised only with ``strict=True``."""


class ReporterError(NeuronMapError, RuntimeError):
    """A reporter failed to write; raised only with ``strict=True``."""


class MissingDependencyError(NeuronMapError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class NeuronMapWarning(UserWarning):
    """Base category of NeuronMap's warnings (filter them with ``-W ignore::...``)."""


class AnalysisFailedWarning(NeuronMapWarning):
    """An analysis raised; the run went on and the failure is in the report."""


class RunSkippedWarning(NeuronMapWarning):
    """A scheduled run could not capture activations after training started; it was skipped."""


class ReporterWarning(NeuronMapWarning):
    """A reporter could not write; the payload is kept and retried."""


class TornLineWarning(NeuronMapWarning):
    """A run-folder file held unreadable records (cut short by a crash); they were skipped."""
