"""The :class:`Preset` a domain preset returns: a probe frame plus the analyses suited to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from neuronmap.analyses.base import Analysis
    from neuronmap.probe import ProbeSet

__all__ = ["Preset"]


@dataclass(frozen=True)
class Preset:
    """A ready probe set (as a frame, tokenizer-independent) and the analyses that read it.

    Example:
        >>> from neuronmap.presets import math
        >>> preset = math(n=40)
        >>> sorted(preset.frame.columns)[:4], [a.name for a in preset.analyses][:2]
        (['a', 'b', 'correct', 'label'], ['probing_operator', 'probing_correct'])
    """

    name: str
    """Preset name (``code``, ``math`` ...), also the ProbeSet's name."""
    frame: pd.DataFrame
    """One row per probe: ``text``, ``label`` (when the preset has one) and metadata columns."""
    analyses: list[Analysis]
    """Fresh analysis instances suited to the frame's columns."""
    description: str
    """What the set is and where it comes from (for the model card)."""
    findings: dict[str, str] = field(default_factory=dict)
    """Analysis name -> what a significant result (or its absence) means."""
    group_columns: tuple[str, ...] = ()
    """Columns that become ProbeSet groups."""
    layers_hint: str = "encoder.layer.*"
    """Layer selector the preset's docs use for BERT-style encoders."""

    def probe_set(self, tokenizer: Any, *, max_length: int = 64) -> ProbeSet:
        """Tokenize the frame into a :class:`~neuronmap.ProbeSet` (labels, groups and metadata kept)."""
        from neuronmap.probe import ProbeSet

        label = "label" if "label" in self.frame else None
        return ProbeSet.from_pandas(self.frame, tokenizer=tokenizer, label_column=label,
                                    group_columns=list(self.group_columns), max_length=max_length,
                                    name=self.name, description=self.description)  # fmt: skip
