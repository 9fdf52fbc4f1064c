"""Render a :class:`~neuronmap.cards.ModelCard` with Jinja2 in a sandbox.

Templates come from the package (``neuronmap/model_card_templates/<name>.<format>.j2``) or from
a user path. They always run in an :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`: a
template cannot reach ``__class__``/``__mro__`` or other internals (that raises
:class:`jinja2.exceptions.SecurityError`) nor mutate the card. Values are escaped on output:
HTML templates escape as HTML, Markdown templates escape ``<``, ``>`` and ``&``, and both
neutralise template delimiters, so a name like ``<script>`` or ``{{ 7*7 }}`` is shown, never run. Data are never
compiled as templates.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from neuronmap.cards.data import ANNEX_IV_REQUIRED, REQUIRED_FIELDS, ModelCard
from neuronmap.errors import InvalidParameterError, NeuronMapError, ReporterWarning

if TYPE_CHECKING:
    from torch import nn

    from neuronmap.audit import AuditTrail
    from neuronmap.engine import NeuronMap

__all__ = ["CardFormat", "CardIncompleteError", "available_templates", "hf_front_matter", "log_model_card",
           "make_environment", "render_card"]

CardFormat = Literal["md", "html"]
_PACKAGE_DIR = "model_card_templates"
_MAX_INDEX_METRICS = 200
_DELIMS = re.compile(r"(\{\{|\}\}|\{%|%\}|\{#|#\})")


class CardIncompleteError(NeuronMapError, ValueError):
    """``strict=True`` and required card fields are still empty (they are listed)."""


def _templates_dir() -> Path:
    return Path(str(files("neuronmap") / _PACKAGE_DIR))


def available_templates(fmt: CardFormat | None = None) -> list[str]:
    """Names of the built-in templates (optionally only those for one format)."""
    names = []
    for path in sorted(_templates_dir().glob("*.j2")):
        stem, _, rest = path.name[: -len(".j2")].rpartition(".")
        if fmt is None or rest == fmt:
            names.append(f"{stem}.{rest}" if fmt is None else stem)
    return names


def _finalize(escape_text: Any) -> Any:
    """A ``finalize`` hook: escape a value once, and neutralise template delimiters in it."""

    def finalize(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, (Markup, bool, int, float)):
            return value
        text = escape_text(str(value))
        return Markup(_DELIMS.sub(lambda m: "".join(f"&#{ord(c)};" for c in m.group(0)), text))

    return finalize


def _escape_md(text: str) -> str:
    # Only what Markdown renderers would treat as HTML; quotes stay readable in the source.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_FINALIZE = {"md": _finalize(_escape_md), "html": _finalize(lambda t: str(escape(t)))}


def _cell(value: Any) -> Markup:
    """A Markdown table cell: escaped, one line, pipes escaped."""
    return Markup(str(_FINALIZE["md"](value)).replace("|", "\\|").replace("\n", " "))


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.{int(digits)}g}"
    except (TypeError, ValueError):
        return str(value)


def _text(value: Any) -> str:
    """Any card value as one line of text: mappings as ``k: v; ...``, lists joined by commas."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items() if v is not None and v != "")
    if isinstance(value, (list, tuple, set)):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def make_environment(fmt: CardFormat, *, search_path: str | os.PathLike[str] | None = None) -> ImmutableSandboxedEnvironment:
    """The sandboxed environment for ``fmt`` (built-in templates, plus ``search_path`` first)."""
    if fmt not in get_args(CardFormat):
        raise InvalidParameterError(f"Card format must be one of {get_args(CardFormat)}; got {fmt!r}.")
    loaders: list[BaseLoader] = [FileSystemLoader(str(_templates_dir()))]
    if search_path is not None:
        loaders.insert(0, FileSystemLoader(str(search_path)))
    env = ImmutableSandboxedEnvironment(
        loader=ChoiceLoader(loaders), undefined=StrictUndefined, autoescape=True, finalize=_FINALIZE[fmt],
        trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=_number, cell=_cell, as_list=_as_list, text=_text)
    return env


def hf_front_matter(card: ModelCard) -> str:
    """Hugging Face model-card metadata (YAML) with ``model-index`` evaluation results.

    Built with ``yaml.safe_dump``, never by string templating, so hostile names stay quoted data.
    """
    details = card.model_details
    name = str(details.get("name") or "model")
    metrics = [
        {"type": row["key"], "value": row["value"], "name": f"{row['analysis']} {row['layer']} {row['metric']}".strip(),
         "verified": False}
        for row in card.quantitative_analyses.get("results", []) if row["value"] is not None
    ][:_MAX_INDEX_METRICS]
    probe = card.evaluation_data
    meta: dict[str, Any] = {}
    for key in ("license", "language", "library_name", "base_model", "pipeline_tag"):
        if details.get(key):
            meta[key] = details[key]
    meta["tags"] = ["neuronmap", *[str(t) for t in _as_list(details.get("tags")) if str(t) != "neuronmap"]]
    if metrics:
        meta["model-index"] = [{
            "name": name,
            "results": [{
                "task": {"type": str(details.get("task") or "other")},
                "dataset": {"name": str(probe.get("name") or "probe set"),
                            "type": str(probe.get("dataset_type") or probe.get("name") or "probe-set")},
                "metrics": metrics,
            }],
        }]
    return yaml.safe_dump(_escape_strings(meta), sort_keys=False, allow_unicode=True, width=1000)


def _escape_strings(value: Any) -> Any:
    """Escape every string in the metadata as in the body: the Hub shows it next to the card."""
    if isinstance(value, str):
        return str(_FINALIZE["md"](value))
    if isinstance(value, dict):
        return {k: _escape_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_strings(v) for v in value]
    return value


def _required_for(template: str) -> tuple[str, ...]:
    return REQUIRED_FIELDS + (ANNEX_IV_REQUIRED if "annex_iv" in Path(template).name else ())


def _resolve(template: str, fmt: CardFormat) -> tuple[ImmutableSandboxedEnvironment, str]:
    path = Path(template)
    if path.suffix in (".j2", ".jinja", ".jinja2", ".md", ".html") or os.sep in template or "/" in template:
        if not path.is_file():
            raise InvalidParameterError(f"Card template file {template!r} does not exist.")
        # An HTML template is autoescaped whatever format was asked for: escaping is not optional.
        html = path.name.endswith((".html", ".html.j2", ".htm"))
        return make_environment("html" if html else fmt, search_path=path.resolve().parent), path.name
    names = available_templates(fmt)
    if template not in names:
        raise InvalidParameterError(
            f"No built-in {fmt} card template named {template!r}; built-in {fmt} templates: {names} "
            f"(all: {available_templates()}). Or pass a path to your own .j2 file."
        )
    return make_environment(fmt), f"{template}.{fmt}.j2"


def render_card(
    card: ModelCard,
    *,
    template: str = "default",
    fmt: CardFormat = "md",
    strict: bool = False,
    audit: bool | AuditTrail = True,
    context: Mapping[str, Any] | None = None,
) -> str:
    """Render a card.

    Args:
        card: The card data.
        template: A built-in name (``default``, ``eu_ai_act_annex_iv``) or a path to a ``.j2`` file.
        fmt: ``md`` or ``html`` (HTML is autoescaped and self-contained: figures are embedded).
        strict: Raise :class:`CardIncompleteError` while a required field is empty.
        audit: ``True`` appends a ``card`` entry to the card's run-folder audit trail (if it came
            from a run folder); an :class:`~neuronmap.audit.AuditTrail` appends there; ``False`` never.
        context: Extra template variables.

    Returns:
        The rendered text.

    Raises:
        CardIncompleteError: ``strict`` and fields are missing.
        jinja2.exceptions.SecurityError: The template reached for an unsafe attribute.
        InvalidParameterError: Unknown template name or format.
    """
    if fmt not in get_args(CardFormat):
        raise InvalidParameterError(f"Card format must be one of {get_args(CardFormat)}; got {fmt!r}.")
    required = _required_for(template)
    missing = card.missing_fields(required)
    if strict and missing:
        raise CardIncompleteError(
            f"The model card has {len(missing)} required field(s) still empty: {', '.join(missing)}. "
            "Fill them in the card data YAML (--data card.yaml)."
        )
    env, name = _resolve(template, fmt)
    try:
        tpl = env.get_template(name)
    except TemplateNotFound as err:
        raise InvalidParameterError(f"Card template {name!r} not found.") from err
    text = tpl.render(card=card.to_dict(), front_matter=Markup(hf_front_matter(card)), missing=missing,
                      required=list(required), fmt=fmt, **dict(context or {}))
    trail = _trail(audit, card)
    if trail is not None:
        trail.record_card(text, template=template, fmt=fmt, data=card.user_data,
                          probe_fingerprint=card.evaluation_data.get("fingerprint"))
    return text


def _trail(audit: bool | AuditTrail, card: ModelCard) -> AuditTrail | None:
    if audit is False:
        return None
    if audit is True:
        folder = card.run.get("folder")
        if not folder:
            return None
        from neuronmap.audit import AuditTrail

        return AuditTrail(folder)
    return audit


def log_model_card(
    monitor: NeuronMap,
    *,
    model: nn.Module | None = None,
    data: Any = None,
    template: str = "default",
    fmt: CardFormat = "md",
    name: str = "model_card",
) -> str:
    """Render the monitor's card and send it to every reporter with ``log_text`` (callbacks call
    this at train end). Reporter failures warn and never raise.

    Returns:
        The rendered text.
    """
    card = ModelCard.from_monitor(monitor, model=model, data=data)
    text = render_card(card, template=template, fmt=fmt)
    filename = f"{name}.{fmt}"
    for reporter in monitor.reporters:
        try:
            reporter.log_text(filename, text)
        except Exception as err:  # a tracker outage must not stop training
            warnings.warn(f"Reporter {reporter!r} could not store the model card ({err}).", ReporterWarning,
                          stacklevel=2)
    return text
