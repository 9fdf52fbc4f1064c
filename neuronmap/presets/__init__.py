"""Domain presets: ready probe sets (from shipped templates and data) with the analyses suited to them.

Each builder returns a :class:`Preset`: a deterministic frame (``text``, ``label`` and metadata
columns), fresh analysis instances, a description and what each finding means. Tokenize it with
``preset.probe_set(tokenizer)``; write it to a file with ``neuronmap generate --preset NAME``.

Example:
    >>> import neuronmap as nm
    >>> preset = nm.presets.code(n=40)
    >>> preset.frame[["construct", "language", "bracket_depth"]].shape
    (40, 3)
    >>> [a.name for a in preset.analyses]
    ['probing_construct', 'probing_language', 'regression_bracket_depth']
"""

from neuronmap.presets.base import Preset
from neuronmap.presets.builders import (
    PRESETS,
    bracket_depth,
    code,
    events,
    get_preset,
    math,
    multilingual,
    places,
    temporal,
)

__all__ = [
    "PRESETS",
    "Preset",
    "bracket_depth",
    "code",
    "events",
    "get_preset",
    "math",
    "multilingual",
    "places",
    "temporal",
]
