"""``check_analysis``: the conformance check of the analysis contract (re-exported by :mod:`neuronmap.testing`)."""

from __future__ import annotations

import inspect
import json
import logging
import math
import warnings
from typing import Any

from neuronmap._keys import SIBLINGS
from neuronmap.errors import AnalysisError, InvalidParameterError

__all__ = ["check_analysis"]

_RENAMED = "check_renamed"


def constructor_params(analysis: Any) -> dict[str, Any]:
    """The constructor arguments that rebuild ``analysis`` (each read from the attribute of the same name)."""
    signature = inspect.signature(type(analysis).__init__)
    out: dict[str, Any] = {}
    missing: list[str] = []
    for param in list(signature.parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name == "name":
            continue
        for attr in (param.name, f"_{param.name}"):
            if attr in vars(analysis):
                out[param.name] = vars(analysis)[attr]
                break
        else:
            missing.append(param.name)
    if missing:
        raise AnalysisError(f"check_analysis: {type(analysis).__name__} does not keep constructor argument(s) "
                            f"{missing} as attributes of the same name (or '_'-prefixed), so it cannot be rebuilt "
                            "with another name= or cloned.")
    return out


def _bad_value(constraints: list[Any]) -> Any:
    """A value none of ``constraints`` accepts (``None`` when every probe value is accepted)."""
    from neuronmap.analyses.params import validates

    return next((c for c in (-7, "no-such-option", 3.5, object()) if not validates(constraints, c)), None)


def _check_constructor(analysis: Any, params: dict[str, Any]) -> list[str]:
    from neuronmap.analyses.params import STATISTICS, merged, unchecked, validates

    cls, kind = type(analysis), type(analysis).__name__
    problems: list[str] = []
    signature = inspect.signature(cls.__init__)
    name = getattr(analysis, "name", None)
    if name is None or not validates(STATISTICS["name"], name):
        problems.append(f"name must be a non-empty str without '/'; got {name!r}")
    try:
        json.dumps(analysis.config(), allow_nan=True)
    except (TypeError, ValueError) as err:
        problems.append(f"config() is not JSON-able: {err}")
    for arg in list(signature.parameters.values())[1:]:
        if arg.kind is arg.POSITIONAL_OR_KEYWORD and arg.default is arg.empty:
            continue
        if arg.kind is arg.POSITIONAL_OR_KEYWORD and arg.name not in _leading_allowed(signature):
            problems.append(f"parameter {arg.name!r} can be passed by position; make it keyword-only "
                            "(after '*'), as every analysis' settings are")
    constraints = merged(cls, "_parameter_constraints")
    undeclared = [name for name in params if name not in constraints]
    if undeclared:
        problems.append(f"constructor argument(s) {undeclared} have no entry in _parameter_constraints (declare "
                        "what each may be, or 'no_validation' for a value checked elsewhere)")
    for param, specs in constraints.items():
        if param not in params or param == "name" or unchecked(specs):
            continue
        bad = _bad_value(specs)
        if bad is None:
            continue
        try:
            cls(**params | {param: bad})
        except InvalidParameterError as err:
            if not str(err).startswith(f"{kind}: {param} must be"):
                problems.append(f"{param}={bad!r} raised an InvalidParameterError not in the one format "
                                f"'{kind}: {param} must be ...; got ...': {err}")
        except Exception as err:
            problems.append(f"{param}={bad!r} raised {type(err).__name__} instead of InvalidParameterError: {err}")
        else:
            problems.append(f"{param}={bad!r} was accepted, although its constraints {specs} reject it")
    for old, new in merged(cls, "_renamed_parameters").items():
        if new not in params:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rebuilt = cls(**{k: v for k, v in params.items() if k != new}, **{old: params[new]})
        if not any(issubclass(w.category, FutureWarning) and new in str(w.message) for w in caught):
            problems.append(f"the deprecated name {old}= did not warn with a FutureWarning naming {new}=")
        if constructor_params(rebuilt).get(new) != params[new]:
            problems.append(f"the deprecated name {old}= did not set {new}")
    try:
        renamed = cls(**params, name=_RENAMED)
        if renamed.name != _RENAMED:
            problems.append(f"name={_RENAMED!r} was accepted but the instance is named {renamed.name!r}")
    except Exception as err:
        problems.append(f"name={_RENAMED!r} is not accepted: {type(err).__name__}: {err}")
    try:
        cls(**params, name="a/b")
        problems.append("name='a/b' was accepted (a '/' breaks metric keys)")
    except InvalidParameterError:
        pass
    return problems


def _leading_allowed(signature: inspect.Signature) -> set[str]:
    """Positional parameters allowed: those before the first with a default, plus one 'main' argument."""
    params = list(signature.parameters.values())[1:]
    allowed = {p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty}
    first = next((p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD), None)
    if first is not None:
        allowed.add(first.name)  # the analysis' subject (target, method, epsilons ...) may come first
    return allowed


def _check_result(analysis: Any, report: Any, name: str) -> list[str]:
    import pandas as pd
    from matplotlib.figure import Figure

    from neuronmap.findings import Finding
    from neuronmap.results import AnalysisResult

    problems: list[str] = []
    result = report.results.get(name)
    if not isinstance(result, AnalysisResult):
        return [f"the report has no AnalysisResult under {name!r}; it has {sorted(report.results)}"]
    if result.status != "ok":
        return [f"the run ended with status {result.status!r}: {result.error or '; '.join(result.notes)}"]
    if result.name != name:
        problems.append(f"the result is named {result.name!r}, not the instance's name {name!r}")
    for key, value in result.metrics.items():
        if not isinstance(key, str) or "/" not in key:
            problems.append(f"metric key {key!r} is not '<layer>/<metric>'")
            break
        if not isinstance(value, (float, int)) or isinstance(value, bool):
            problems.append(f"metric {key!r} is {type(value).__name__}, not a float")
            break
        if key.endswith(SIBLINGS):
            base = next(key[: -len(s)] for s in SIBLINGS if key.endswith(s))
            if base not in result.metrics:
                problems.append(f"statistic {key!r} has no metric {base!r} beside it")
                break
    if result.metrics and not any(math.isfinite(v) for v in result.metrics.values()) and not result.notes:
        problems.append("every metric is NaN and no note says why")
    for label, items, wanted in (("table", result.tables, pd.DataFrame), ("figure", result.figures, Figure)):
        for key, item in items.items():
            if not isinstance(item, wanted):
                problems.append(f"{label} {key!r} is a {type(item).__name__}, not a {wanted.__name__}")
    try:
        found = analysis.findings(result)
        if not isinstance(found, list) or not all(isinstance(f, Finding) for f in found):
            problems.append(f"findings() returned {type(found).__name__}, not a list of Finding")
    except Exception as err:
        problems.append(f"findings() raised {type(err).__name__}: {err}")
    return problems


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    if a.keys() != b.keys():
        return False
    return all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def check_analysis(analysis: Any, model: Any = None, probe: Any = None, *, layers: Any = None) -> None:
    """Check that ``analysis`` keeps the analysis contract, the way :func:`check_reporter` checks reporters.

    It checks the constructor (keyword-only settings kept as attributes of the same name, a
    JSON-able ``config()``, declared constraints that reject bad values with an
    ``InvalidParameterError`` in the one format ``"<Class>: <param> must be ...; got ..."``,
    deprecated names that warn and still work, ``name=``), then runs it in a real
    :class:`~neuronmap.NeuronMap` on ``model`` and ``probe`` (default: :func:`tiny_mlp` and
    :func:`tiny_probe`): twice in a row, twice side by side under two names, and once more in a
    fresh monitor. The result must be ``ok``, keyed ``<layer>/<metric>`` with float values (NaN
    only with a note), statistics only beside their metric, tables as DataFrames, figures as
    matplotlib Figures, ``findings()`` a list of :class:`~neuronmap.findings.Finding`,
    ``check_probe`` a list of strings and ``state_dict()`` JSON-able; the same seed must give
    the same metrics.

    Args:
        analysis: The analysis under test, with the settings to run it at (keep them small).
        model: Model to run (default: ``tiny_mlp()``).
        probe: Probe set (default: ``tiny_probe()``).
        layers: Layer selectors to capture (default: ``["net.0", "net.2"]`` for the default model).

    Raises:
        AnalysisError: Every broken part of the contract, one per line.

    Example:
        >>> from neuronmap.analyses import ActivationStats
        >>> check_analysis(ActivationStats())
    """
    import neuronmap as nm
    from neuronmap._tiny import tiny_mlp, tiny_probe

    kind = type(analysis).__name__
    model = tiny_mlp() if model is None else model
    probe = tiny_probe() if probe is None else probe
    layers = ["net.0", "net.2"] if layers is None else layers
    params = constructor_params(analysis)
    problems = _check_constructor(analysis, params)
    problems += [f"check_probe(): {p}" for p in ([] if isinstance(analysis.check_probe(probe), list)
                                                 else ["did not return a list"])]

    def run(*instances: Any, steps: tuple[int, ...] = (0,)) -> list[Any]:
        monitor = nm.NeuronMap(probe, layers=layers, analyses=list(instances), reporters=[], strict=False)
        quiet = logging.NullHandler()  # no console line per run
        logging.getLogger("neuronmap").addHandler(quiet)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reports = [monitor.run(model, step=step) for step in steps]
            monitor.close()
        finally:
            logging.getLogger("neuronmap").removeHandler(quiet)
        return reports

    try:
        first, second = run(analysis, steps=(0, 1))
        problems += _check_result(analysis, first, analysis.name)
        problems += _check_result(analysis, second, analysis.name)
        fresh = type(analysis)(**params, name=analysis.name) if "name" in vars(analysis) else type(analysis)(**params)
        again = run(fresh)[0]
        if not problems and not _same(first.results[analysis.name].metrics, again.results[analysis.name].metrics):
            problems.append("a fresh instance with the same settings and seed gave different metrics")
        twin = type(analysis)(**params, name=_RENAMED)
        both = run(type(analysis)(**params), twin)[0]
        problems += [f"run beside a twin named {_RENAMED!r}: {p}" for p in _check_result(twin, both, _RENAMED)]
        json.dumps(analysis.state_dict(), allow_nan=True)
        analysis.load_state_dict(analysis.state_dict())
    except AnalysisError:
        raise
    except Exception as err:
        problems.append(f"running it raised {type(err).__name__}: {err}")
    if problems:
        lines = "\n".join(f"  - {p}" for p in dict.fromkeys(problems))
        raise AnalysisError(f"check_analysis: {kind} breaks the analysis contract:\n{lines}")
