"""Render a :class:`~neuronmap.cards.ModelCard` with Jinja2 in a sandbox.

Templates come from the package (``neuronmap/model_card_templates/<name>.<format>.j2``) or from
a user path. They always run in an :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`: a
template cannot reach ``__class__``/``__mro__`` or other internals (that raises
:class:`jinja2.exceptions.SecurityError`) nor mutate the card. Values are escaped on output:
HTML templates escape as HTML, Markdown templates escape ``<``, ``>`` and ``&``, and both
neutralise template delimiters, so a name like ``<script>`` or ``{{ 7*7 }}`` is shown, never run. Data are never
compiled as templates. The Hugging Face front matter is YAML written by ``yaml.safe_dump``: its
strings are quoted data, not HTML, and are not escaped ("R&D" stays "R&D").

Public cards leave out user and host names (``identity=True`` keeps them). "Verified" appears
only when :func:`neuronmap.audit.verify` passes with the evidence files checked and at least one
engine run recorded.
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

from neuronmap.compliance.cards._annex_iv import annex_iv_status, sign_off_status, strict_problems
from neuronmap.compliance.cards.data import (
    ANNEX_IV_REQUIRED,
    REQUIRED_FIELDS,
    ModelCard,
    card_digest,
)
from neuronmap.errors import InvalidParameterError, NeuronMapError, ReporterWarning

if TYPE_CHECKING:
    from torch import nn

    from neuronmap.compliance.audit import AuditTrail
    from neuronmap.engine import NeuronMap

__all__ = ["DISCLAIMER", "HUB_LICENSES", "CardFormat", "CardIncompleteError", "available_templates",
           "hf_front_matter", "hub_metadata", "log_model_card", "make_environment", "render_card"]

CardFormat = Literal["md", "html"]
_PACKAGE_DIR = "model_card_templates"
#: License identifiers the Hugging Face Hub accepts in ``license:`` (others become ``other`` + ``license_name``).
HUB_LICENSES = frozenset([
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd",
    "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5",
    "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0",
    "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0",
    "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0",
    "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl",
    "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
    "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3", "llama3.1",
    "llama3.2", "llama3.3", "llama4", "gemma", "unknown", "other",
])
#: Shown at the top of every Annex IV document, and stated in the docs.
DISCLAIMER = ("This document structures technical evidence for the provider. It is not legal advice, and "
              "neither it nor NeuronMap performs a conformity assessment (Article 43 of Regulation (EU) "
              "2024/1689) or establishes that the system conforms.")
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


def make_environment(
    fmt: CardFormat, *, search_path: str | os.PathLike[str] | None = None
) -> ImmutableSandboxedEnvironment:
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


def hub_metadata(card: ModelCard) -> tuple[dict[str, Any], list[str]]:
    """Hugging Face model-card metadata as data, and warnings about it (e.g. an unknown license).

    ``model-index`` holds only the model's own evaluation (:class:`~neuronmap.ModelPerformance`,
    overall): Hub metric ids (``accuracy``, ``f1`` with ``config: macro``, ``ece``, ``r_squared``,
    ``mae``), the value, and the CI in ``args`` (``ci_low``, ``ci_high``, ``confidence_level``,
    ``n``). ``verified`` is never set: the Hub reserves it for its own evaluations.
    """
    details, probe, warn = card.model_details, card.evaluation_data, []
    meta: dict[str, Any] = {}
    license_ = str(details.get("license") or "").strip()
    if license_:
        if license_.lower() in HUB_LICENSES:
            meta["license"] = license_.lower()
        else:
            meta["license"], meta["license_name"] = "other", re.sub(r"[^a-z0-9.-]+", "-", license_.lower()).strip("-")
            if details.get("license_link"):
                meta["license_link"] = str(details["license_link"])
            warn.append(f"license {license_!r} is not a Hugging Face license identifier; written as "
                        f"license: other, license_name: {meta['license_name']}")
    for key in ("language", "library_name", "base_model", "pipeline_tag"):
        if details.get(key):
            meta[key] = details[key]
    meta["tags"] = ["neuronmap", *[str(t) for t in _as_list(details.get("tags")) if str(t) != "neuronmap"]]
    datasets = _as_list(details.get("datasets")) or _as_list(probe.get("dataset_id"))
    if datasets:
        meta["datasets"] = [str(d) for d in datasets]
    overall = [r for r in card.performance.get("overall", []) if r.get("value") is not None]
    if overall:
        meta["metrics"] = sorted({r["hub_id"] for r in overall})
        metrics = []
        for row in overall:
            entry: dict[str, Any] = {"type": row["hub_id"], "value": round(float(row["value"]), 6),
                                     "name": row["label"]}
            if row["metric"] == "f1_macro":
                entry["config"] = "macro"
            if row.get("has_ci"):
                entry["args"] = {"ci_low": round(float(row["ci_low"]), 6), "ci_high": round(float(row["ci_high"]), 6),
                                 "confidence_level": float(card.performance.get("confidence") or 0.95),
                                 "ci_method": "paired bootstrap (BCa)", "n": int(row.get("n") or 0)}
            metrics.append(entry)
        dataset: dict[str, Any] = {"name": str(probe.get("name") or "probe set"),
                                   "type": str(probe.get("dataset_id") or "custom")}
        for key in ("split", "revision", "config"):
            if probe.get(key):
                dataset[key] = str(probe[key])
        task = str(details.get("task") or details.get("pipeline_tag") or
                   ("tabular-regression" if card.performance.get("task") == "regression" else "text-classification"))
        meta["model-index"] = [{"name": str(details.get("name") or "model"),
                                "results": [{"task": {"type": task}, "dataset": dataset, "metrics": metrics}]}]
    return meta, warn


def hf_front_matter(card: ModelCard) -> str:
    """Hugging Face model-card metadata (YAML, see :func:`hub_metadata`).

    Built with ``yaml.safe_dump``, never by string templating, so hostile names stay quoted data.
    """
    meta, _ = hub_metadata(card)
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)


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
    front_matter: bool = True,
    identity: bool = False,
) -> str:
    """Render a card.

    Args:
        card: The card data.
        template: A built-in name (``default``, ``eu_ai_act_annex_iv``) or a path to a ``.j2`` file.
        fmt: ``md`` or ``html`` (HTML is autoescaped and self-contained: figures are embedded).
        strict: Raise :class:`CardIncompleteError` while a required field is empty; for the
            Annex IV template also while an item is missing (or not "not applicable: reason"),
            the trail does not verify, no valid sign-off exists or the last gate failed.
        audit: ``True`` appends a ``card`` entry to the card's run-folder audit trail (if it came
            from a run folder); an :class:`~neuronmap.audit.AuditTrail` appends there; ``False`` never.
        context: Extra template variables.
        front_matter: Start Markdown with the Hugging Face YAML front matter (off for trackers,
            whose Markdown viewers would show it as text).
        identity: Keep user and host names (off for public cards).

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
    digest = card_digest(card)
    annex = "annex_iv" in Path(template).name
    problems = strict_problems(card, digest) if annex else []
    if strict and (missing or problems):
        lines = ([f"{len(missing)} required field(s) still empty: {', '.join(missing)}"] if missing else []) + problems
        raise CardIncompleteError(
            "The model card is incomplete:\n  " + "\n  ".join(lines)
            + "\nFill fields in the card data YAML (--data card.yaml), or write 'not applicable: <reason>'."
        )
    if not identity:
        card = card.without_identity()
    meta, meta_warnings = hub_metadata(card)
    env, name = _resolve(template, fmt)
    try:
        tpl = env.get_template(name)
    except TemplateNotFound as err:
        raise InvalidParameterError(f"Card template {name!r} not found.") from err
    text = tpl.render(card=card.to_dict(),
                      front_matter=Markup(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000))
                      if front_matter else "",
                      missing=missing, required=list(required), fmt=fmt, digest=digest,
                      annex_status=annex_iv_status(card), sign_off=sign_off_status(card, digest),
                      incomplete=problems, metadata_warnings=meta_warnings, disclaimer=DISCLAIMER,
                      stats_note=card.stats_note,
                      **dict(context or {}))
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
        from neuronmap.compliance.audit import AuditTrail

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
    this at train end): ``<name>.html`` (self-contained) and ``<name>.md`` without the Hugging
    Face front matter, which trackers' Markdown viewers would show as text. The Hub-ready
    Markdown comes from ``neuronmap card RUN --out README.md``. Reporter failures warn and never
    raise.

    Returns:
        The rendered text in ``fmt`` (Markdown without front matter for ``md``).
    """
    card = ModelCard.from_monitor(monitor, model=model, data=data)
    texts = {f"{name}.md": render_card(card, template=template, fmt="md", front_matter=False)}
    if template == "default" or fmt == "html":
        texts[f"{name}.html"] = render_card(card, template=template, fmt="html", audit=False)
    publisher = getattr(monitor, "publisher", None)
    for filename, text in texts.items():
        if publisher is not None and hasattr(publisher, "log_text"):
            publisher.log_text(filename, text)  # queued: the trackers never hold up training
            continue
        for reporter in monitor.reporters:
            try:
                reporter.log_text(filename, text)
            except Exception as err:  # a tracker outage must not stop training
                warnings.warn(f"Reporter {reporter!r} could not store the model card ({err}).", ReporterWarning,
                              stacklevel=2)
    return texts[f"{name}.{fmt}"] if f"{name}.{fmt}" in texts else texts[f"{name}.md"]
