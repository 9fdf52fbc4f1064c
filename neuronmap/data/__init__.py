"""Built-in probe-set data: EEC-style templated sentences, counterfactual term swaps, text perturbations.

Pure data and pandas: nothing here downloads anything, and nothing imports torch, so a
frame can be built anywhere and handed to ``ProbeSet.from_pandas``.

Example:
    >>> from neuronmap.data import eec_frame, swap_terms, GENDER_SWAPS
    >>> df = eec_frame(persons="names", template_ids=[1, 8])
    >>> sorted(df.columns[:3])
    ['label', 'sentiment', 'text']
    >>> swap_terms(df.loc[0, "text"], GENDER_SWAPS)
    'Alonzo feels angry.'
"""

from __future__ import annotations

from neuronmap.data.perturb import (
    PERTURBATIONS,
    SYNONYMS,
    char_swap,
    perturb_texts,
    synonym_swap,
)
from neuronmap.data.swaps import (
    BUILTIN_SWAPS,
    GENDER_NAME_SWAPS,
    GENDER_SWAPS,
    GENDER_WORD_SWAPS,
    RACE_NAME_SWAPS,
    counterfactual_pairs,
    swap_terms,
)
from neuronmap.data.templates import (
    EEC_NAMES,
    EEC_NOUN_PHRASES,
    EEC_PERSONS,
    EEC_TEMPLATES,
    EMOTIONAL_SITUATION_WORDS,
    EMOTIONAL_STATE_WORDS,
    SENTIMENT_LABELS,
    PersonTerm,
    Template,
    eec_frame,
    sentiment_frame,
)

__all__ = [
    "BUILTIN_SWAPS",
    "EEC_NAMES",
    "EEC_NOUN_PHRASES",
    "EEC_PERSONS",
    "EEC_TEMPLATES",
    "EMOTIONAL_SITUATION_WORDS",
    "EMOTIONAL_STATE_WORDS",
    "GENDER_NAME_SWAPS",
    "GENDER_SWAPS",
    "GENDER_WORD_SWAPS",
    "PERTURBATIONS",
    "RACE_NAME_SWAPS",
    "SENTIMENT_LABELS",
    "SYNONYMS",
    "PersonTerm",
    "Template",
    "char_swap",
    "counterfactual_pairs",
    "eec_frame",
    "perturb_texts",
    "sentiment_frame",
    "swap_terms",
    "synonym_swap",
]
