"""Declarative constructor validation for analyses (in the manner of scikit-learn's ``_parameter_constraints``).

An analysis declares what each constructor argument may be; :class:`~neuronmap.analyses.Analysis`
checks the arguments before the constructor body runs and raises one
:class:`~neuronmap.errors.InvalidParameterError` per bad argument, always in the same form::

    Probing: cv must be an int in [2, inf); got 1.

The statistics settings every analysis shares (``confidence``, ``alpha``, ``n_resamples``,
``n_permutations``, ``p_adjust``) and ``name`` are declared once, on the base class
(:data:`STATISTICS`), so an analysis that takes them is checked the same way as every other.

Renamed arguments are declared in ``_renamed_parameters`` (``{"old": "new"}``): the old name still
works for one release and warns with a :class:`FutureWarning` naming the new one.

Example:
    >>> from neuronmap.analyses import Analysis, AnalysisResult
    >>> class Window(Analysis):
    ...     name = "window"
    ...     _parameter_constraints = {"size": [Interval(int, 1, None)], "mode": [Options({"mean", "max"})]}
    ...     def __init__(self, size=8, *, mode="mean", name=None):
    ...         super().__init__(name=name)
    ...         self.size, self.mode = size, mode
    ...     def run(self, ctx): return AnalysisResult(self.name)
    >>> Window(0)
    Traceback (most recent call last):
    ...
    neuronmap.errors.InvalidParameterError: Window: size must be an int in [1, inf); got 0.
    >>> Window(mode="median")
    Traceback (most recent call last):
    ...
    neuronmap.errors.InvalidParameterError: Window: mode must be one of ['max', 'mean']; got 'median'.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from neuronmap._stats_base import PVALUE_METHODS
from neuronmap.errors import InvalidParameterError

__all__ = [
    "STATISTICS",
    "Columns",
    "Constraint",
    "Interval",
    "Options",
    "Subset",
    "Type",
    "as_constraint",
    "unchecked",
    "validate_parameters",
    "validates",
    "warn_renamed",
]


class Constraint:
    """One thing a parameter may be: ``__call__`` tests a value, ``str`` says what it allows."""

    def __call__(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __str__(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class Interval(Constraint):
    """A real or integral number in a range (``None`` bounds are open-ended; bools are never numbers).

    Example:
        >>> str(Interval(float, 0, 1, closed="neither")), Interval(float, 0, 1, closed="neither")(1.0)
        ('a float in (0, 1)', False)
    """

    def __init__(self, kind: type, low: float | None, high: float | None, *, closed: str = "both") -> None:
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be 'both', 'left', 'right' or 'neither'; got {closed!r}.")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def __call__(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        wanted = numbers.Integral if self.kind is int else numbers.Real
        if not isinstance(value, wanted) or (isinstance(value, float) and math.isnan(value)):
            return False
        value = float(value)
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not left)):
            return False
        return not (self.high is not None and (value > self.high or (value == self.high and not right)))

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'an int' if self.kind is int else 'a float'} in {left}{low}, {high}{right}"


class Options(Constraint):
    """One of a fixed set of values (usually strings)."""

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = list(values)

    def __call__(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:  # an unhashable value against a set
            return False

    def __str__(self) -> str:
        return f"one of {sorted(self.values, key=str)}"


class Type(Constraint):
    """An instance of one of ``types`` (``callable`` for any callable, ``None`` for ``None``)."""

    def __init__(self, *types: Any, label: str | None = None) -> None:
        self.types = types
        self.label = label

    def __call__(self, value: Any) -> bool:
        for kind in self.types:
            if kind is None or kind is callable:
                ok = value is None if kind is None else callable(value)
            else:  # a bool is no int or float here, as in Interval
                ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float))
            if ok:
                return True
        return False

    def __str__(self) -> str:
        if self.label:
            return self.label
        names = ["None" if k is None else "a callable" if k is callable else _article(k.__name__) for k in self.types]
        return " or ".join(names)


class Columns(Constraint):
    """A probe-set column name or a non-empty list/tuple of them (``groups=True``: items may be tuples of names).

    Example:
        >>> Columns()("gender"), Columns()([]), Columns(groups=True)(["age", ("gender", "race")])
        (True, False, True)
    """

    def __init__(self, *, groups: bool = False) -> None:
        self.groups = groups

    def __call__(self, value: Any) -> bool:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            return False
        return all(_column(c) or (self.groups and isinstance(c, tuple) and bool(c) and all(map(_column, c)))
                   for c in items)

    def __str__(self) -> str:
        tail = " (a tuple of names is one intersectional group)" if self.groups else ""
        return f"a column name or a non-empty list of them{tail}"


class Subset(Constraint):
    """A list or tuple whose every item is one of ``values``."""

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = list(values)

    def __call__(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(Options(self.values)(v) for v in value)

    def __str__(self) -> str:
        return f"a list of items from {sorted(self.values, key=str)}"


class _Name(Constraint):
    """An analysis name: it becomes the ``<analysis>`` part of metric keys."""

    def __call__(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value) and "/" not in value

    def __str__(self) -> str:
        return "a non-empty str without '/'"


def _column(name: Any) -> bool:
    return isinstance(name, str) and bool(name)


def _article(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def as_constraint(spec: Any) -> Constraint:
    """A constraint from its short form: a :class:`Constraint`, ``None``, ``callable``, a type or a literal string."""
    if isinstance(spec, Constraint):
        return spec
    if spec is None or spec is callable or isinstance(spec, type):
        return Type(spec)
    if isinstance(spec, str):
        return Options([spec])
    raise TypeError(f"Not a parameter constraint: {spec!r}.")


#: The statistics settings, ``name``, ``layers`` and the other shared settings, declared once for every
#: analysis that takes them (an analysis overrides an entry where its meaning differs).
STATISTICS: dict[str, list[Any]] = {
    "confidence": [Interval(float, 0, 1, closed="neither")],
    "alpha": [Interval(float, 0, 1, closed="neither")],
    "n_resamples": [Interval(int, 1, None)],
    "n_permutations": [Interval(int, 0, None)],  # 0 skips the permutation test where an analysis allows it
    "p_adjust": [Options(PVALUE_METHODS)],
    "name": [None, _Name()],
    "layers": [None, Type(str, list, tuple, label="a layer selector (str) or a list of them")],
    # not statistics, but the same concept under the same name in many analyses
    "max_examples": [None, Interval(int, 1, None)],
    "top_k": [Interval(int, 1, None)],
    "cv": [Interval(int, 2, None)],
}


def validates(specs: list[Any], value: Any) -> bool:
    """Whether ``value`` meets at least one of a parameter's constraints."""
    return any(as_constraint(spec)(value) for spec in specs)


def unchecked(specs: Any) -> bool:
    """Whether a parameter's constraints are ``"no_validation"`` (checked elsewhere, e.g. at run time)."""
    return specs == "no_validation" or specs == ["no_validation"]


def validate_parameters(owner: str, arguments: Mapping[str, Any], constraints: Mapping[str, list[Any]]) -> None:
    """Check each argument that has constraints; raise on the first that meets none of them."""
    for param, value in arguments.items():
        specs = constraints.get(param)
        if specs is None or unchecked(specs):
            continue
        if not validates(specs, value):
            allowed = " or ".join(dict.fromkeys(str(as_constraint(c)) for c in specs))
            raise InvalidParameterError(f"{owner}: {param} must be {allowed}; got {value!r}.")


def merged(cls: type, attribute: str) -> dict[str, Any]:
    """A class attribute dict merged along the MRO (subclasses override)."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get(attribute, {}) or {})
    return out


def warn_renamed(owner: str, old: str, new: str, *, stacklevel: int = 2) -> None:
    """The one deprecation warning of a renamed argument (``owner`` as the caller wrote it)."""
    warnings.warn(f"{owner}({old}=...) is deprecated and will be removed in the next release; use {new}= instead.",
                  FutureWarning, stacklevel=stacklevel + 1)


def contract_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap an analysis ``__init__``: renamed arguments, ``name=`` and declarative validation.

    Only the outermost constructor call (the instance's own class) translates and validates;
    ``super().__init__`` calls inside pass straight through.
    """
    signature = inspect.signature(init)
    accepts_name = "name" in signature.parameters
    accepts_var_kw = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if self.__dict__.get("_nm_constructing"):
            init(self, *args, **kwargs)
            return
        cls = type(self)
        owner = cls.__name__
        for old, new in merged(cls, "_renamed_parameters").items():
            if old not in kwargs:
                continue
            if new in kwargs:
                raise InvalidParameterError(f"{owner}: pass {new}= only; {old}= is its deprecated name, got both.")
            warn_renamed(owner, old, new, stacklevel=2)
            kwargs[new] = kwargs.pop(old)
        name = None if accepts_name or accepts_var_kw else kwargs.pop("name", None)
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as exc:
            allowed = [p for p in signature.parameters if p != "self"]
            if not accepts_name:
                allowed.append("name")
            raise InvalidParameterError(f"{owner}: {exc}; its parameters are {allowed}.") from None
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        if name is not None:
            arguments["name"] = name
        validate_parameters(owner, arguments, merged(cls, "_parameter_constraints"))
        self.__dict__["_nm_constructing"] = True
        try:
            init(self, *args, **kwargs)
        finally:
            self.__dict__.pop("_nm_constructing", None)
        if name is not None:
            self.name = name

    __init__.__nm_contract__ = True  # type: ignore[attr-defined]
    return __init__
