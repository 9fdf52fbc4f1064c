"""Parse and validate ``gates.yaml``, keeping the line of every value for error messages.

The file is read with ``yaml.SafeLoader`` only (no Python objects can be constructed), and
the node tree is kept beside the data so that a problem is reported as
``gates.yaml, line 7: 'min' must be a number; got 'high'.`` rather than as a bare key path.

Format (a list of checks, or a mapping with ``gates:`` and optional ``defaults:``)::

    defaults:
      statistic: value        # value | ci_low | ci_high
      when: last              # last | all | any (over steps)
      required: true
    gates:
      - name: probing floor
        metric: neuronmap/probing/*/accuracy     # a key, or a glob (* within a component, ** across)
        min: 0.70
        statistic: ci_low                       # demand the CI bound, not the point estimate
      - metric: neuronmap/fairness/gender/demographic_parity_difference
        max: 0.10
        statistic: ci_high
      - metric: neuronmap/probing/net.3/accuracy
        baseline: {mode: absolute, margin: 0.02}  # non-inferiority against --baseline RUN
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from neuronmap.errors import InvalidParameterError

__all__ = ["BaselineRule", "DeltaMode", "GateCheck", "GateConfig", "GateConfigError", "Statistic", "When",
           "load_gate_config"]

Statistic = Literal["value", "ci_low", "ci_high"]
When = Literal["last", "all", "any"]
DeltaMode = Literal["absolute", "relative"]

_CHECK_KEYS = ("name", "metric", "min", "max", "statistic", "when", "required", "baseline", "description")
_DEFAULT_KEYS = ("statistic", "when", "required")
_BASELINE_KEYS = ("mode", "min_delta", "max_delta", "margin", "higher_is_better", "statistic")
_Path = tuple[Any, ...]


class GateConfigError(InvalidParameterError):
    """``gates.yaml`` is not valid YAML or breaks the gate schema; the message names the line."""


@dataclass(frozen=True)
class BaselineRule:
    """How a metric must compare with the same metric of a baseline run."""

    #: ``absolute``: delta = value - baseline; ``relative``: delta = (value - baseline) / |baseline|.
    mode: DeltaMode = "absolute"
    #: Smallest allowed delta.
    min_delta: float | None = None
    #: Largest allowed delta.
    max_delta: float | None = None
    #: Non-inferiority margin: the candidate may be worse than the baseline by at most this much.
    margin: float | None = None
    #: Direction of "better" for the margin.
    higher_is_better: bool = True
    #: Which number of the baseline run is compared (default its point estimate).
    statistic: Statistic = "value"


@dataclass(frozen=True)
class GateCheck:
    """One check of ``gates.yaml``."""

    #: Display name (the JUnit testcase name).
    name: str
    #: A metric key or a glob over keys.
    metric: str
    #: Lower bound on the chosen statistic, inclusive.
    min: float | None = None
    #: Upper bound on the chosen statistic, inclusive.
    max: float | None = None
    #: Which number is compared: the point estimate or a CI bound (``<key>_ci_low``/``_ci_high``).
    statistic: Statistic = "value"
    #: Over steps: the last one, all of them, or at least one.
    when: When = "last"
    #: A required check whose metric is missing is an error (exit 2); an optional one is skipped.
    required: bool = True
    #: Comparison with a baseline run, if any.
    baseline: BaselineRule | None = None
    #: Free text shown in reports.
    description: str = ""
    #: Line of the check in the config file (``None`` for checks built in Python).
    line: int | None = None


@dataclass(frozen=True)
class GateConfig:
    """All checks of one gates file."""

    #: The checks, in file order.
    checks: tuple[GateCheck, ...]
    #: Where they came from (a path, or ``<python>``).
    source: str = "<python>"


class _Locator:
    """Line numbers of the values in a YAML document, by key path."""

    def __init__(self, source: str, lines: Mapping[_Path, int]) -> None:
        self.source = source
        self.lines = lines

    def error(self, path: _Path, problem: str) -> GateConfigError:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return GateConfigError(f"{self.source}, line {self.lines[path[:cut]]}: {problem}")
        return GateConfigError(f"{self.source}: {problem}")


def _index_lines(node: yaml.Node, path: _Path, out: dict[_Path, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            _index_lines(value_node, key_path, out)
            out[key_path] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), out)


def load_gate_config(config: GateConfig | str | os.PathLike[str] | Mapping[str, Any] | Sequence[Any]) -> GateConfig:
    """Read and validate a gate configuration.

    Args:
        config: A path to ``gates.yaml``, the YAML text itself (anything with a newline), the
            parsed mapping/list, or a ready :class:`GateConfig`.

    Returns:
        The validated :class:`GateConfig`.

    Raises:
        GateConfigError: Invalid YAML or schema; the message gives the line and the problem.

    Example:
        >>> cfg = load_gate_config([{"metric": "neuronmap/probing/*/accuracy", "min": 0.7}])
        >>> cfg.checks[0].name
        'neuronmap/probing/*/accuracy >= 0.7'
    """
    if isinstance(config, GateConfig):
        return config
    if not isinstance(config, (str, os.PathLike)):
        return _build(config, _Locator("<python>", {}))
    text, source = os.fspath(config), "<text>"
    if "\n" not in text:
        path = Path(text)
        if not path.is_file():
            raise GateConfigError(f"Gate config {text!r} does not exist.")
        text, source = path.read_text(encoding="utf-8"), str(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise GateConfigError(f"{source}{where}: invalid YAML: {problem}.") from err
    finally:
        loader.dispose()
    lines: dict[_Path, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return _build(data, _Locator(source, lines))


def _build(data: Any, loc: _Locator) -> GateConfig:
    defaults: Mapping[str, Any] = {}
    base: _Path
    if isinstance(data, Mapping):
        _check_keys(data, ("gates", "defaults"), (), loc)
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, Mapping):
            raise loc.error(("defaults",), f"'defaults' must be a mapping; got {type(defaults).__name__}.")
        _check_keys(defaults, _DEFAULT_KEYS, ("defaults",), loc)
        _choice(defaults, "statistic", "value", get_args(Statistic), ("defaults",), loc)
        _choice(defaults, "when", "last", get_args(When), ("defaults",), loc)
        items, base = data.get("gates"), ("gates",)
    else:  # a bare list of checks
        base = ()
        items = data
    if not isinstance(items, (list, tuple)) or not items:
        raise loc.error(base, "expected a non-empty list of checks (a top-level list, or 'gates:' holding one); "
                              f"got {type(items).__name__ if items is not None else 'nothing'}.")
    checks = [_check(item, (*base, i), defaults, loc) for i, item in enumerate(items)]
    seen: dict[str, int] = {}
    for i, check in enumerate(checks):
        if check.name in seen:
            raise loc.error((*base, i), f"two checks are named {check.name!r}; give each a unique 'name'.")
        seen[check.name] = i
    return GateConfig(tuple(checks), loc.source)


def _check(item: Any, path: _Path, defaults: Mapping[str, Any], loc: _Locator) -> GateCheck:
    if not isinstance(item, Mapping):
        raise loc.error(path, f"each check must be a mapping with at least 'metric'; got {item!r}.")
    _check_keys(item, _CHECK_KEYS, path, loc)
    merged = {**defaults, **item}
    metric = item.get("metric")
    if not isinstance(metric, str) or not metric.strip():
        raise loc.error((*path, "metric"), f"'metric' must be a metric key or glob; got {metric!r}.")
    low, high = _number(item, "min", path, loc), _number(item, "max", path, loc)
    if low is not None and high is not None and low > high:
        raise loc.error((*path, "max"), f"'min' ({low}) is larger than 'max' ({high}); no value could pass.")
    baseline = _baseline(item.get("baseline"), (*path, "baseline"), loc) if "baseline" in item else None
    if low is None and high is None and baseline is None:
        raise loc.error(path, f"check on {metric!r} has no condition; give 'min', 'max' or 'baseline'.")
    statistic = _choice(merged, "statistic", "value", get_args(Statistic), path, loc)
    when = _choice(merged, "when", "last", get_args(When), path, loc)
    required = merged.get("required", True)
    if not isinstance(required, bool):
        raise loc.error((*path, "required"), f"'required' must be true or false; got {required!r}.")
    name = item.get("name", _default_name(metric, low, high, baseline))
    if not isinstance(name, str) or not name:
        raise loc.error((*path, "name"), f"'name' must be a non-empty string; got {name!r}.")
    return GateCheck(name=name, metric=metric.strip(), min=low, max=high, statistic=statistic, when=when,
                     required=required, baseline=baseline, description=str(item.get("description", "")),
                     line=loc.lines.get(path))


def _baseline(value: Any, path: _Path, loc: _Locator) -> BaselineRule:
    if not isinstance(value, Mapping):
        raise loc.error(path, "'baseline' must be a mapping such as {mode: absolute, margin: 0.02}; "
                              f"got {value!r}.")
    _check_keys(value, _BASELINE_KEYS, path, loc)
    mode = _choice(value, "mode", "absolute", get_args(DeltaMode), path, loc)
    statistic = _choice(value, "statistic", "value", get_args(Statistic), path, loc)
    bounds = {k: _number(value, k, path, loc) for k in ("min_delta", "max_delta", "margin")}
    if all(v is None for v in bounds.values()):
        raise loc.error(path, "'baseline' needs 'margin' (non-inferiority), 'min_delta' or 'max_delta'.")
    if bounds["margin"] is not None and bounds["margin"] < 0:
        raise loc.error((*path, "margin"), f"'margin' must be >= 0; got {bounds['margin']}.")
    higher = value.get("higher_is_better", True)
    if not isinstance(higher, bool):
        raise loc.error((*path, "higher_is_better"), f"'higher_is_better' must be true or false; got {higher!r}.")
    return BaselineRule(mode=mode, higher_is_better=higher, statistic=statistic, **bounds)


def _check_keys(mapping: Mapping[str, Any], allowed: Sequence[str], path: _Path, loc: _Locator) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise loc.error((*path, key), f"unknown key {key!r}; {hint}allowed keys: {', '.join(allowed)}.")


def _number(mapping: Mapping[str, Any], key: str, path: _Path, loc: _Locator) -> float | None:
    value = mapping.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise loc.error((*path, key), f"{key!r} must be a number; got {value!r}.")
    return float(value)


def _choice(mapping: Mapping[str, Any], key: str, default: str, allowed: Sequence[str], path: _Path,
            loc: _Locator) -> Any:
    value = mapping.get(key, default)
    if value not in allowed:
        raise loc.error((*path, key), f"{key!r} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def _default_name(metric: str, low: float | None, high: float | None, baseline: BaselineRule | None) -> str:
    parts = [metric]
    if low is not None:
        parts.append(f">= {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    if baseline is not None:
        parts.append("vs baseline")
    return " ".join(parts)
