"""Model cards: the public path of :mod:`neuronmap.compliance.cards` (same names, same objects)."""

from __future__ import annotations

from neuronmap.compliance.cards import (
    ANNEX_IV_REQUIRED,
    REQUIRED_FIELDS,
    SECTIONS,
    CardFormat,
    CardIncompleteError,
    ModelCard,
    available_templates,
    card_digest,
    hf_front_matter,
    hub_metadata,
    load_card_data,
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
