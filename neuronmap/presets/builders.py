"""The domain presets: deterministic probe frames from shipped templates and data, with their analyses.

Every builder is seeded and pure (no download, no tokenizer): call ``.probe_set(tokenizer)`` on
the result to get a :class:`~neuronmap.ProbeSet`. What each finding means is in
``docs/analyses-iv.md`` and in each preset's ``findings``.
"""

from __future__ import annotations

import math as _math
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import pandas as pd

from neuronmap.analyses.params import warn_renamed
from neuronmap.errors import InvalidParameterError
from neuronmap.generate import generate
from neuronmap.presets.base import Preset

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc is 3.11+

__all__ = ["PRESETS", "bracket_depth", "code", "events", "get_preset", "math", "multilingual", "places", "temporal"]

LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it")
_OPEN, _CLOSE = "([{", ")]}"
_MATH_TEMPLATES = ("{a} {op} {b} = {c}", "{a} {op} {b} equals {c}.", "The result of {a} {op} {b} is {c}.",
                   "We know that {a} {op} {b} makes {c}.")  # fmt: skip
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_DATE_TEMPLATES = ("The letter is dated {month} {day}, {year}.", "The house was built in {year}.",
                   "She was born on {day} {month} {year}.", "In {year} the town got its first school.",
                   "The records from {year} were lost in a fire.", "The company was founded in {year}.")  # fmt: skip
_ORDER_TEMPLATES = ("The treaty of {y1} was signed {rel} the war of {y2}.",
                    "The {y1} census took place {rel} the {y2} election.",
                    "The bridge, finished in {y1}, opened {rel} the {y2} flood.")  # fmt: skip
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip
_PERIODS = ((-10_000, "before 1500"), (1500, "1500-1799"), (1800, "1800-1899"), (1900, "1900-1949"),
            (1950, "1950-1999"), (2000, "2000 on"))  # fmt: skip


def _data(name: str) -> Traversable:
    # One child per joinpath: Traversable.joinpath takes a single name on Python 3.10.
    return files("neuronmap.presets").joinpath("data").joinpath(name)


@cache
def _csv(name: str) -> pd.DataFrame:
    with _data(name).open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, keep_default_na=False)


class _Stats(TypedDict):
    n_permutations: int
    n_resamples: int


def _stats(preset: str, n_permutations: int, n_resamples: int, n_bootstrap: int | None) -> _Stats:
    """The statistics settings of a preset's analyses (``n_bootstrap``: the deprecated name of ``n_resamples``)."""
    if n_bootstrap is not None:
        warn_renamed(f"presets.{preset}", "n_bootstrap", "n_resamples", stacklevel=3)
        n_resamples = n_bootstrap
    return {"n_permutations": n_permutations, "n_resamples": n_resamples}


def bracket_depth(text: str) -> int:
    """Deepest nesting of ``()[]{}`` in ``text`` (brackets inside string literals count too).

    Example:
        >>> bracket_depth("f(g[h(x)])")
        3
    """
    depth = best = 0
    for ch in text:
        if ch in _OPEN:
            depth += 1
            best = max(best, depth)
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
    return best


def _check_n(n: int, name: str, maximum: int | None = None) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 10 or (maximum is not None and n > maximum):
        bound = f"an int in [10, {maximum}]" if maximum is not None else "an int >= 10"
        raise InvalidParameterError(f"The 'n' parameter of presets.{name} must be {bound}; got {n!r} instead.")


def code(*, n: int = 240, seed: int = 0, n_permutations: int = 1000, n_resamples: int = 1000,
         n_bootstrap: int | None = None) -> Preset:
    """Code snippets (Python, JavaScript, C) labelled by construct, language and bracket depth.

    Probes: which construct (loop/conditional/definition/call) and language a layer encodes,
    and how deep the brackets nest (regression).

    Example:
        >>> df = code(n=36).frame
        >>> sorted(df["construct"].unique())
        ['call', 'conditional', 'definition', 'loop']
    """
    from neuronmap.analyses import Probing, RegressionProbing

    _check_n(n, "code")
    import yaml

    spec = yaml.safe_load(_data("code.yaml").read_text(encoding="utf-8"))
    frame = generate(spec, n=n, seed=seed)
    frame["bracket_depth"] = frame["text"].map(bracket_depth)
    stats = _stats("code", n_permutations, n_resamples, n_bootstrap)
    return Preset("code", frame, [
        Probing("construct", name="probing_construct", **stats),
        Probing("language", name="probing_language", **stats),
        RegressionProbing("bracket_depth", name="regression_bracket_depth", **stats),
    ], description=str(spec.get("description", "")).strip(), findings={
        "probing_construct": "The layer separates loops, conditionals, definitions and calls linearly; "
                             "selectivity above the control says it is structure, not memorised snippets.",
        "probing_language": "The layer knows which programming language it reads (usually easy: keywords).",
        "regression_bracket_depth": "R² well above the random-feature baseline means nesting depth, a "
                                    "counting task, is linearly available; it typically peaks in middle layers.",
    })  # fmt: skip


def math(*, n: int = 240, seed: int = 0, n_permutations: int = 1000, n_resamples: int = 1000,
         n_bootstrap: int | None = None) -> Preset:
    """Arithmetic statements ``a op b = c`` (half of them wrong) with operator, magnitude and result.

    Columns: ``operator`` (label), ``a``, ``b``, ``result``, ``shown_result``, ``correct``,
    ``magnitude`` (digits of the larger operand), ``log_magnitude`` (log10 of it),
    ``log_result`` (signed log10(1 + |result|)).
    """
    from neuronmap.analyses import Probing, RegressionProbing

    _check_n(n, "math")
    rng = np.random.default_rng([seed, 31])
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    ops = list(_OPS)
    tries = 0
    while len(rows) < n and tries < 50 * n:
        tries += 1
        i = len(rows)
        op = ops[i % 3]
        digits = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        a, b = (int(rng.integers(10 ** (d - 1), 10**d)) for d in digits)
        result = _OPS[op](a, b)
        correct = i % 2 == 0
        shown = result
        if not correct:  # only wrong rows draw from rng, so a seed keeps giving the same frame
            shown += int(rng.choice([-1, 1])) * max(1, int(abs(result) * rng.uniform(0.05, 0.3)))
        text = _MATH_TEMPLATES[(i // 6) % len(_MATH_TEMPLATES)].format(a=a, op=op, b=b, c=shown)
        if text in seen:
            continue
        seen.add(text)
        big = max(a, b)
        rows.append({"text": text, "operator": op, "a": a, "b": b, "result": result, "shown_result": shown,
                     "correct": "true" if correct else "false", "magnitude": len(str(big)),
                     "log_magnitude": _math.log10(big),
                     "log_result": _math.copysign(_math.log10(1 + abs(result)), result),
                     "label": op})  # fmt: skip
    frame = pd.DataFrame(rows)
    stats = _stats("math", n_permutations, n_resamples, n_bootstrap)
    return Preset("math", frame, [
        Probing("operator", name="probing_operator", **stats),
        Probing("correct", name="probing_correct", **stats),
        RegressionProbing(["log_magnitude", "log_result"], name="regression_magnitude", **stats),
    ], description="Templated arithmetic statements a op b = c with +, -, * on 1-3 digit operands; half show a "
                   "wrong result.", findings={
        "probing_operator": "Which operation is written is nearly always decodable (a surface token).",
        "probing_correct": "Correctness needs the computation: accuracy near 0.5 (chance) is the usual finding for "
                           "small encoders; above chance with selectivity means the layer checks the sum.",
        "regression_magnitude": "log_magnitude R² says how well number size is read from the digits; log_result "
                                "R² beyond it says the layer carries the outcome of the operation.",
    })


def multilingual(*, n: int = 40, languages: tuple[str, ...] = LANGUAGES, n_permutations: int = 1000,
                 n_resamples: int = 1000, seed: int = 0, n_bootstrap: int | None = None) -> Preset:  # fmt: skip
    """Parallel sentences in English, German, French, Spanish and Italian (``n`` per language, at most 40).

    Columns: ``text``, ``language`` (label), ``pair_id`` (shared by the translations of one sentence).
    """
    from neuronmap.analyses import CrossLingualAlignment, Probing

    table = _csv("parallel.csv")
    _check_n(n, "multilingual", maximum=len(table))
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown or len(languages) < 2:
        raise InvalidParameterError(f"languages must be 2+ of {list(LANGUAGES)}; got {list(languages)!r}.")
    part = table.iloc[np.sort(np.random.default_rng([seed, 41]).permutation(len(table))[:n])]
    frame = pd.DataFrame([{"text": row[lang], "language": lang, "pair_id": int(row["pair_id"]), "label": lang}
                          for lang in languages for _, row in part.iterrows()])  # fmt: skip
    stats = _stats("multilingual", n_permutations, n_resamples, n_bootstrap)
    return Preset("multilingual", frame, [
        CrossLingualAlignment(pivot=languages[0], **stats),
        Probing("language", name="probing_language", **stats),
    ], description=f"{n} everyday sentences translated into {', '.join(languages)} (written for NeuronMap).",
        findings={
        "crosslingual": "Retrieval far above chance and high CKA mean translations share a representation "
                        "(language-neutral); for an English-only model it falls to chance on other languages.",
        "probing_language": "Language identity is decodable at every layer of almost any model; a layer where it "
                            "drops while retrieval rises is where meaning takes over from form.",
    })


def temporal(*, n: int = 240, seed: int = 0, n_permutations: int = 1000, n_resamples: int = 1000,
             n_bootstrap: int | None = None) -> Preset:
    """Sentences with explicit years (``year`` regression) and before/after statements (``order_true``).

    Half the rows (``kind="date"``) mention one year; the other half (``kind="order"``) compare
    two years with ``before``/``after``, true or false.
    """
    from neuronmap.analyses import Probing, RegressionProbing

    _check_n(n, "temporal")
    rng = np.random.default_rng([seed, 51])
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    tries = 0
    while len(rows) < n and tries < 50 * n:
        tries += 1
        i = len(rows)
        if i % 2 == 0:
            year = int(rng.integers(1500, 2025))
            text = _DATE_TEMPLATES[(i // 2) % len(_DATE_TEMPLATES)].format(
                year=year, month=_MONTHS[int(rng.integers(12))], day=int(rng.integers(1, 29)))
            row = {"kind": "date", "year": float(year), "order_true": None}
        else:
            y1, y2 = (int(v) for v in rng.choice(np.arange(1600, 2021), size=2, replace=False))
            rel = "before" if (i // 2) % 2 == 0 else "after"
            truth = (y1 < y2) == (rel == "before")
            text = _ORDER_TEMPLATES[(i // 2) % len(_ORDER_TEMPLATES)].format(y1=y1, y2=y2, rel=rel)
            row = {"kind": "order", "year": np.nan, "order_true": "true" if truth else "false", "relation": rel}
        if text in seen:
            continue
        seen.add(text)
        rows.append({"text": text, **row})
    frame = pd.DataFrame(rows)
    stats = _stats("temporal", n_permutations, n_resamples, n_bootstrap)
    return Preset("temporal", frame, [
        RegressionProbing("year", name="regression_year", **stats),
        Probing("order_true", name="probing_order", **stats),
    ], description="Templated sentences with explicit years (1500-2024) and before/after comparisons of two years.",
        findings={
        "regression_year": "R² near 1 means the year is linearly readable from the layer (a parsing result).",
        "probing_order": "Above-chance accuracy means the layer compares the two years with the relation word; "
                         "chance is the common result for sentence encoders.",
    })


def places(*, n: int | None = None, seed: int = 0, n_permutations: int = 1000, n_resamples: int = 1000,
           n_bootstrap: int | None = None) -> Preset:
    """World places (cities) with latitude, longitude, country and region, for ``WorldModelProbe("space")``."""
    from neuronmap.analyses import WorldModelProbe

    stats = _stats("places", n_permutations, n_resamples, n_bootstrap)
    table = _csv("places.csv")
    frame = table.rename(columns={"name": "text"}).copy()
    if n is not None:
        _check_n(n, "places", maximum=len(frame))
        keep = np.sort(np.random.default_rng([seed, 61]).permutation(len(frame))[:n])
        frame = frame.iloc[keep].reset_index(drop=True)
    return Preset("places", frame, [WorldModelProbe("space", **stats)],
                  description=f"{len(frame)} world cities with approximate coordinates "
                              "(public facts, two decimals).",
                  findings={"world_model": "Latitude/longitude R² above the random-feature baseline that holds "
                            "for held-out continents means a linear 'map' in the layer "
                            "(Gurnee & Tegmark 2023)."})  # fmt: skip


def events(*, n: int | None = None, seed: int = 0, n_permutations: int = 1000, n_resamples: int = 1000,
           n_bootstrap: int | None = None) -> Preset:
    """Historical events with their year and period, for ``WorldModelProbe("time")``."""
    from neuronmap.analyses import WorldModelProbe

    stats = _stats("events", n_permutations, n_resamples, n_bootstrap)
    frame = _csv("events.csv").rename(columns={"event": "text"}).copy()
    frame["year"] = frame["year"].astype(float)
    frame["period"] = [next(label for start, label in reversed(_PERIODS) if y >= start) for y in frame["year"]]
    if n is not None:
        _check_n(n, "events", maximum=len(frame))
        keep = np.sort(np.random.default_rng([seed, 71]).permutation(len(frame))[:n])
        frame = frame.iloc[keep].reset_index(drop=True)
    return Preset("events", frame, [WorldModelProbe("time", **stats)],
                  description=f"{len(frame)} historical events from 490 BC to 2022 with their year.",
                  findings={"world_model": "Year R² above baselines, holding for held-out periods, means a linear "
                            "timeline in the layer (Gurnee & Tegmark 2023)."})  # fmt: skip


PRESETS: dict[str, Any] = {"code": code, "events": events, "math": math, "multilingual": multilingual,
                           "places": places, "temporal": temporal}  # fmt: skip
"""Preset name -> builder."""


def get_preset(name: str, *, n: int | None = None, seed: int = 0, **kwargs: Any) -> Preset:
    """Build a preset by name (``n=None`` keeps its default size).

    Raises:
        InvalidParameterError: Unknown name (the message lists the presets).
    """
    if name not in PRESETS:
        raise InvalidParameterError(f"Unknown preset {name!r}; available presets: {sorted(PRESETS)}.")
    if n is not None:
        kwargs["n"] = n
    return PRESETS[name](seed=seed, **kwargs)
