"""Probe-set generation: fill Jinja templates from value lists, seeded, into a labelled frame.

A template file (YAML or JSON) names sentence templates, the values of their placeholders and
which columns are labels or groups::

    name: cities
    description: Where people live.
    label: country                 # optional: column that becomes ProbeSet labels
    groups: [gender]               # optional: sensitive-attribute columns
    templates:
      - "{{ person }} lives in {{ city }}."
      - text: "{{ person }} moved to {{ city }} last year."
        tense: past                # extra keys: constant (or Jinja) columns of this template
    values:
      person:
        - {value: Maria, gender: female}   # a mapping: value plus attributes
        - {value: John, gender: male}
      city:
        - {value: Paris, country: France}
        - {value: Lima, country: Peru}
    columns:                       # optional: columns rendered for every row
      country: "{{ city.country }}"
      gender: "{{ person.gender }}"

Rows cycle through the templates (so templates are balanced) and draw each placeholder's
value at random with ``numpy.random.default_rng(seed)``; duplicate texts are redrawn, so the
same text never lands in two cross-validation folds. Every placeholder becomes a column, and
each attribute ``a`` of a placeholder ``p`` the column ``p_a``. Templates render in a Jinja
``SandboxedEnvironment`` with ``StrictUndefined``: a misspelt placeholder is an error, not
an empty string.

The result is ready for ``ProbeSet.from_pandas(df, tokenizer=...)``; the ``neuronmap generate``
command writes it as Parquet, CSV, JSON lines or plain text (one sentence per line, for
``neuronmap extract``).

Example:
    >>> spec = {"templates": ["{{ a }} plus {{ b }}"], "values": {"a": ["one", "two"], "b": ["three"]}}
    >>> sorted(generate(spec, n=2, seed=0)["text"])
    ['one plus three', 'two plus three']
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuronmap.errors import InvalidParameterError, NeuronMapError

__all__ = ["generate", "load_template_file", "write_frame"]

_MAX_TRIES_PER_ROW = 50
#: The built-in presets (``neuronmap.presets.PRESETS``), named here so ``neuronmap --help`` stays light.
PRESET_NAMES: tuple[str, ...] = ("code", "events", "math", "multilingual", "places", "temporal")


class _Value(str):
    """A placeholder value that prints as itself and exposes its attributes to Jinja (``city.country``)."""

    attrs: dict[str, Any]

    def __new__(cls, value: Any, attrs: Mapping[str, Any] | None = None) -> _Value:
        obj = super().__new__(cls, str(value))
        obj.attrs = dict(attrs or {})
        return obj

    def __getattr__(self, name: str) -> Any:
        try:
            return self.attrs[name]
        except KeyError:
            raise AttributeError(name) from None


def load_template_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``yaml.safe_load``) or JSON template file.

    Raises:
        NeuronMapError: The file is missing or not a mapping.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise NeuronMapError(f"Template file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise NeuronMapError(
            f"Template file {str(path)!r} must hold a mapping with 'templates' and 'values'; "
            f"got {type(spec).__name__}."
        )
    return spec


def _values(spec: Mapping[str, Any]) -> dict[str, list[_Value]]:
    raw = spec.get("values") or {}
    if not isinstance(raw, Mapping):
        raise InvalidParameterError(f"'values' must map placeholder names to lists; got {type(raw).__name__}.")
    out = {}
    for key, items in raw.items():
        if not isinstance(items, list) or not items:
            raise InvalidParameterError(f"values[{key!r}] must be a non-empty list; got {items!r}.")
        out[str(key)] = [
            _Value(item["value"], {k: v for k, v in item.items() if k != "value"}) if isinstance(item, Mapping)
            and "value" in item else _Value(item)
            for item in items
        ]
    return out


def _templates(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = spec.get("templates")
    if not isinstance(raw, list) or not raw:
        raise InvalidParameterError(
            f"'templates' must be a non-empty list of strings or mappings with 'text'; got {raw!r}."
        )
    out = []
    for i, t in enumerate(raw):
        if isinstance(t, str):
            out.append({"text": t})
        elif isinstance(t, Mapping) and isinstance(t.get("text"), str):
            out.append(dict(t))
        else:
            raise InvalidParameterError(
                f"templates[{i}] must be a string or a mapping with a 'text' string; got {t!r}."
            )
    return out


def generate(spec: Mapping[str, Any] | str | Path, *, n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Render ``n`` rows from a template spec (a mapping or a template-file path).

    Args:
        spec: The template spec (see the module docstring) or the path of a YAML/JSON file.
        n: Rows to generate; ``None`` gives one row per template per value of its largest list.
        seed: Seed of the value draws.

    Returns:
        A DataFrame with ``text``, ``template_id``, one column per placeholder (and attribute),
        the template's extra keys and the ``columns`` of the spec; ``label`` when the spec names
        a ``label`` column. ``df.attrs`` keeps ``name``, ``description``, ``label`` and ``groups``.

    Raises:
        InvalidParameterError: A malformed spec or a placeholder without values.
    """
    from jinja2 import StrictUndefined, TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    if not isinstance(spec, Mapping):
        spec = load_template_file(spec)
    templates, values = _templates(spec), _values(spec)
    if n is None:
        n = len(templates) * max((len(v) for v in values.values()), default=1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidParameterError(f"The 'n' parameter of generate must be a positive int; got {n!r}.")
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    extra_columns = dict(spec.get("columns") or {})
    try:
        compiled = [{k: env.from_string(str(v)) for k, v in t.items()} for t in templates]
        column_templates = {k: env.from_string(str(v)) for k, v in extra_columns.items()}
    except TemplateError as err:
        raise InvalidParameterError(f"A template does not parse: {err}") from err
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    tries = attempt = 0
    while len(rows) < n and tries < n * _MAX_TRIES_PER_ROW:
        # cycle through the templates; a template whose values are used up hands over to the next
        tid = (len(rows) + attempt // 10) % len(templates)
        tries += 1
        attempt += 1
        chosen = {k: v[int(rng.integers(len(v)))] for k, v in values.items()}
        try:
            rendered = {k: t.render(**chosen) for k, t in compiled[tid].items()}
            rendered |= {k: t.render(**chosen, **rendered) for k, t in column_templates.items()}
        except TemplateError as err:
            raise InvalidParameterError(
                f"Template {tid} ({templates[tid]['text']!r}) failed to render: {err}. "
                f"Placeholders with values: {sorted(values)}."
            ) from err
        if rendered["text"] in seen:
            continue
        seen.add(rendered["text"])
        attempt = 0
        row: dict[str, Any] = {"text": rendered.pop("text"), "template_id": tid}
        for key, value in chosen.items():
            row[key] = str(value)
            row |= {f"{key}_{a}": v for a, v in value.attrs.items()}
        rows.append(row | rendered)
    if len(rows) < n:
        warnings.warn(f"generate: only {len(rows)} distinct texts could be drawn of the {n} asked for; add values "
                      "or templates.", UserWarning, stacklevel=2)  # fmt: skip
    frame = pd.DataFrame(rows)
    label = spec.get("label")
    if label:
        if label not in frame:
            raise InvalidParameterError(
                f"label column {label!r} is not produced by the spec; columns: {list(frame.columns)}."
            )
        frame["label"] = frame[label]
    frame.attrs.update(name=spec.get("name", "generated"), description=spec.get("description", ""),
                       label=label, groups=list(spec.get("groups") or []))  # fmt: skip
    return frame


def write_frame(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write ``frame`` by the suffix of ``out``: ``.parquet``, ``.csv``, ``.jsonl`` or ``.txt`` (texts only).

    Raises:
        NeuronMapError: Another suffix, or Parquet without pyarrow.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    frame = frame.copy()
    frame.attrs = {}
    if suffix == ".parquet":
        try:
            frame.to_parquet(out, index=False)
        except ImportError as err:
            raise NeuronMapError(f"Writing Parquet needs pyarrow ({err}); write .csv or .jsonl instead.") from err
    elif suffix == ".csv":
        frame.to_csv(out, index=False)
    elif suffix == ".jsonl":
        frame.to_json(out, orient="records", lines=True, force_ascii=False)
    elif suffix == ".txt":
        out.write_text("".join(f"{t}\n" for t in frame["text"].astype(str).str.replace("\n", " ")), encoding="utf-8")
    else:
        raise NeuronMapError(f"Unknown output format {suffix!r} for {str(out)!r}; use .parquet, .csv, .jsonl or .txt.")
    return out
