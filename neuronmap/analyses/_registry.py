"""The analysis registry: names to classes, for the built-ins and the ``neuronmap.analyses`` entry points.

It imports no neuronmap module but :mod:`neuronmap.errors`, so the modules that look an analysis
up by name (findings of a replayed report, a tracker's headline metrics, ``get_analysis`` for the
CLI) depend on it alone, not on the analyses. The built-ins are registered all the same: importing this module
(or any module of the package) first runs ``neuronmap/analyses/__init__.py``, which imports every
built-in family, and each family's ``@register_analysis`` adds itself here.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from neuronmap.errors import InvalidParameterError

if TYPE_CHECKING:
    from neuronmap.analyses.base import Analysis

__all__ = ["available_analyses", "default_instance", "get_analysis", "register_analysis"]

_REGISTRY: dict[str, type[Analysis]] = {}


def register_analysis(cls: type[Analysis]) -> type[Analysis]:
    """Class decorator adding an analysis to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    for ep in entry_points(group="neuronmap.analyses"):
        if ep.name not in _REGISTRY:
            _REGISTRY[ep.name] = ep.load()


def available_analyses() -> list[str]:
    """Names of every registered analysis, built-in and from entry points."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get_analysis(name: str, **kwargs: Any) -> Analysis:
    """Instantiate a registered analysis by name.

    Raises:
        InvalidParameterError: Unknown name; the message lists the known ones.
    """
    known = available_analyses()
    if name not in _REGISTRY:
        raise InvalidParameterError(f"Unknown analysis {name!r}; known analyses: {known}.")
    return _REGISTRY[name](**kwargs)


def default_instance(name: str) -> Analysis | None:
    """An instance of the registered analysis ``name`` for its findings hook and headline patterns, if any.

    Built without ``__init__``: the hooks read class attributes and the result, not constructor
    state, and a required constructor argument (a target column) is unknown here.
    """
    available_analyses()
    cls = _REGISTRY.get(name)
    return cls.__new__(cls) if cls is not None else None
