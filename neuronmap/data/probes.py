"""Ready-made bias probe sets: the EEC templates tokenized into :class:`~neuronmap.ProbeSet`.

Thin builders over :func:`neuronmap.data.templates.eec_frame` and
:func:`~neuronmap.data.templates.sentiment_frame` (Kiritchenko & Mohammad 2018): the
sentence text goes to the ``text`` column (which :class:`~neuronmap.analyses.counterfactual.CounterfactualBias`
rewrites), ``label`` holds the sentiment, ``gender`` and ``race`` are the sensitive-group
columns, and every other frame column (``emotion``, ``person``, ``template_id``,
``pair_id`` ...) is metadata. ``ProbeSet`` is imported at call time so that
``neuronmap.data`` stays free of torch.

Example:
    >>> from neuronmap.testing import tiny_tokenizer
    >>> probe = sentiment_probe(tiny_tokenizer(), persons="names", template_ids=[1], n_per_template=40)
    >>> len(probe), probe.group_columns
    (40, ['gender', 'race'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from neuronmap.data.templates import Persons, eec_frame, sentiment_frame

if TYPE_CHECKING:
    import pandas as pd

    from neuronmap.probe import ProbeSet

__all__ = ["eec_probe", "sentiment_probe"]

_GROUPS = ("gender", "race")
_PROVENANCE = (
    "Equity Evaluation Corpus templates, person terms and emotion words (Kiritchenko & "
    "Mohammad 2018, *SEM, Tables 1-3), rebuilt by neuronmap.data.templates"
)


def _probe(frame: pd.DataFrame, tokenizer: Any, *, max_length: int, name: str, description: str) -> ProbeSet:
    from neuronmap.probe import ProbeSet

    return ProbeSet.from_pandas(
        frame, text_column="text", tokenizer=tokenizer, label_column="label",
        group_columns=list(_GROUPS), max_length=max_length, name=name, description=description,
    )  # fmt: skip


def eec_probe(
    tokenizer: Any,
    *,
    persons: Persons = "all",
    template_ids: Sequence[int] | None = None,
    n_per_template: int | None = None,
    max_length: int = 64,
    seed: int = 0,
) -> ProbeSet:
    """The EEC sentences (:func:`~neuronmap.data.templates.eec_frame`) as a probe set.

    Labels are :data:`~neuronmap.data.templates.SENTIMENT_LABELS` (0 negative, 1 positive,
    2 neutral); groups ``gender`` and ``race``.

    Args:
        tokenizer: A Hugging Face tokenizer (or anything called like one).
        persons, template_ids, n_per_template, seed: As in :func:`eec_frame`.
        max_length: Truncation length in tokens (EEC sentences need fewer than 32).

    Returns:
        The probe set, deterministic for fixed arguments.

    Raises:
        InvalidParameterError: Bad template selection (see :func:`eec_frame`).
    """
    frame = eec_frame(persons=persons, template_ids=template_ids, n_per_template=n_per_template, seed=seed)
    return _probe(frame, tokenizer, max_length=max_length, name="eec",
                  description=f"{_PROVENANCE}; {len(frame)} sentences, persons={persons!r}.")  # fmt: skip


def sentiment_probe(
    tokenizer: Any,
    *,
    persons: Persons = "all",
    template_ids: Sequence[int] | None = None,
    n_per_template: int | None = None,
    balanced: bool = True,
    max_length: int = 64,
    seed: int = 0,
) -> ProbeSet:
    """Binary-sentiment EEC sentences (:func:`~neuronmap.data.templates.sentiment_frame`) as a probe set.

    Labels are 1 (joy words) and 0 (anger, fear, sadness words); groups ``gender`` and
    ``race``. ``balanced`` defaults to True here so that selection rates are not dominated
    by the 75 % negative share of the full set.

    Args:
        tokenizer: A Hugging Face tokenizer (or anything called like one).
        persons, template_ids, n_per_template, balanced, seed: As in :func:`sentiment_frame`.
        max_length: Truncation length in tokens.

    Returns:
        The probe set, deterministic for fixed arguments.

    Raises:
        InvalidParameterError: Bad template selection (see :func:`sentiment_frame`).
    """
    frame = sentiment_frame(persons=persons, template_ids=template_ids, n_per_template=n_per_template,
                            balanced=balanced, seed=seed)  # fmt: skip
    return _probe(frame, tokenizer, max_length=max_length, name="eec-sentiment",
                  description=f"{_PROVENANCE}; binary sentiment, {len(frame)} sentences, persons={persons!r}.")
