"""Model cards: data (Mitchell et al. 2019 sections, filled from a run and a YAML file) and a
sandboxed Jinja2 renderer with Markdown (Hugging Face), self-contained HTML and EU AI Act
Annex IV templates.

Example:
    >>> import neuronmap as nm
    >>> from neuronmap.cards import ModelCard, render_card
    >>> from neuronmap.testing import tiny_mlp, tiny_probe
    >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()], reporters=[])
    >>> _ = monitor.run(tiny_mlp(), step=0)
    >>> text = render_card(ModelCard.from_monitor(monitor, data={"model_details": {"name": "tiny"}}))
    >>> text.startswith("---")
    True
"""

from __future__ import annotations

from neuronmap.compliance.cards.data import (
    ANNEX_IV_REQUIRED,
    REQUIRED_FIELDS,
    SECTIONS,
    ModelCard,
    card_digest,
    load_card_data,
)
from neuronmap.compliance.cards.render import (
    CardFormat,
    CardIncompleteError,
    available_templates,
    hf_front_matter,
    hub_metadata,
    log_model_card,
    make_environment,
    render_card,
)

__all__ = [
    "ANNEX_IV_REQUIRED",
    "REQUIRED_FIELDS",
    "SECTIONS",
    "CardFormat",
    "CardIncompleteError",
    "ModelCard",
    "available_templates",
    "card_digest",
    "hf_front_matter",
    "hub_metadata",
    "load_card_data",
    "log_model_card",
    "make_environment",
    "render_card",
]
