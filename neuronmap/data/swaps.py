"""Counterfactual term swaps: replace group terms in a text with their counterparts.

Counterfactual token substitution (Garg et al. 2019, "Counterfactual Fairness in Text
Classification through Robustness", sec. 3; Huang et al. 2020) compares a model's output
on a text with its output on the same text with the group terms exchanged. The built-in
lists are gendered word pairs (pronouns, family and person nouns) and the Equity
Evaluation Corpus first names (Kiritchenko & Mohammad 2018, Table 3), paired by position:
the i-th African American female name with the i-th African American male name for
gender, the i-th African American name with the i-th European American name of the same
gender for race.

Matching is on whole words, simultaneous (``he`` -> ``she`` and ``she`` -> ``he`` in one
pass), and case preserving. A term written in lower case matches any capitalisation and
the replacement copies it (``He`` -> ``She``, ``HIS`` -> ``HER``); a term with a capital
letter (a name) matches only that spelling, so ``ebony`` the wood is left alone.

"her" is both an object (``I saw her``) and a possessive (``her book``); "his" both a
possessive (``his book``) and a pronoun (``it is his``). A term listed in several pairs is
resolved by the next word: ``her`` becomes ``his`` before a word that can follow a
determiner and ``him`` otherwise (end of clause, or a verb, preposition, determiner or
adverb from a fixed list); ``his`` becomes ``her`` before such a word and ``hers``
otherwise. Other ambiguous terms take the partner of their first pair. This heuristic is
not a parser: check the swaps of unusual sentences.

Example:
    >>> swap_terms("He told his sister that I saw her.", GENDER_SWAPS)
    'She told her brother that I saw him.'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import pandas as pd

from neuronmap.data.templates import EEC_NAMES
from neuronmap.errors import InvalidParameterError

__all__ = [
    "BUILTIN_SWAPS",
    "GENDER_NAME_SWAPS",
    "GENDER_SWAPS",
    "GENDER_WORD_SWAPS",
    "RACE_NAME_SWAPS",
    "counterfactual_pairs",
    "swap_terms",
]

Swaps = Sequence[tuple[str, str]] | Mapping[str, str]

GENDER_WORD_SWAPS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("him", "her"), ("his", "her"), ("his", "hers"), ("himself", "herself"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("boys", "girls"),
    ("brother", "sister"), ("brothers", "sisters"), ("son", "daughter"), ("sons", "daughters"),
    ("husband", "wife"), ("husbands", "wives"), ("boyfriend", "girlfriend"),
    ("boyfriends", "girlfriends"), ("father", "mother"), ("fathers", "mothers"),
    ("dad", "mom"), ("dads", "moms"), ("uncle", "aunt"), ("uncles", "aunts"),
    ("nephew", "niece"), ("nephews", "nieces"), ("grandfather", "grandmother"),
    ("grandson", "granddaughter"), ("gentleman", "lady"), ("gentlemen", "ladies"),
    ("male", "female"), ("males", "females"), ("king", "queen"), ("prince", "princess"),
    ("mr", "mrs"), ("sir", "madam"),
)  # fmt: skip
"""Gendered words, male first. ``(his, her)`` and ``(his, hers)`` are resolved in context."""

GENDER_NAME_SWAPS: tuple[tuple[str, str], ...] = tuple(
    pair
    for race in ("African-American", "European-American")
    for pair in zip(EEC_NAMES[(race, "male")], EEC_NAMES[(race, "female")], strict=True)
)
"""EEC first names paired across gender within race, male first."""

GENDER_SWAPS: tuple[tuple[str, str], ...] = GENDER_WORD_SWAPS + GENDER_NAME_SWAPS
"""All built-in gender swaps: words and names."""

RACE_NAME_SWAPS: tuple[tuple[str, str], ...] = tuple(
    pair
    for gender in ("female", "male")
    for pair in zip(
        EEC_NAMES[("African-American", gender)], EEC_NAMES[("European-American", gender)],
        strict=True,
    )
)  # fmt: skip
"""EEC first names paired across race within gender, African American first."""

BUILTIN_SWAPS: dict[str, tuple[tuple[str, str], ...]] = {
    "gender": GENDER_SWAPS,
    "race": RACE_NAME_SWAPS,
}
"""Built-in swap lists by sensitive attribute."""

# Words after which "her" is an object and "his" a standalone pronoun: they cannot be the
# noun (phrase) a possessive determiner introduces.
_OBJECT_FOLLOWERS = (
    "a an the this that these those some any my your our their his her its to in on at for "
    "with from about into onto by of off out up down over under back again yesterday today "
    "tomorrow tonight now then there here and or but nor so because when while if as than "
    "feel feels felt go goes went do does did be is are was were been know knew see saw "
    "think come came get got make made let tell told give gave ask asked too very not all "
    "how what why where who which"
)
_NOT_AFTER_DETERMINER = frozenset(_OBJECT_FOLLOWERS.split())
_FOLLOWING_WORD = re.compile(r"\s+([A-Za-z']+)")


def _freeze(swaps: Swaps) -> tuple[bool, tuple[tuple[str, str], ...]]:
    """A hashable form of ``swaps`` (``True`` for pairs swapped both ways)."""
    if isinstance(swaps, Mapping):
        return False, tuple(swaps.items())
    return True, tuple((a, b) for a, b in swaps)


@lru_cache(maxsize=32)
def _compile(
    frozen: tuple[bool, tuple[tuple[str, str], ...]],
) -> tuple[dict[str, list[str]], re.Pattern[str] | None]:
    """Source term -> candidate replacements, and one regex matching every source term.

    Cached: a probe set swaps thousands of texts with the same list.
    """
    both_ways, pairs = frozen
    items = [p for a, b in pairs for p in ((a, b), (b, a))] if both_ways else list(pairs)
    table: dict[str, list[str]] = {}
    for source, target in items:
        if not isinstance(source, str) or not isinstance(target, str) or not source or not target:
            raise InvalidParameterError(
                f"swaps must be pairs of non-empty strings; got {(source, target)!r}."
            )
        candidates = table.setdefault(source if _has_upper(source) else source.lower(), [])
        if target not in candidates:
            candidates.append(target)
    if not table:
        return table, None
    alternatives = "|".join(re.escape(t) for t in sorted(table, key=len, reverse=True))
    return table, re.compile(rf"\b(?:{alternatives})\b", flags=re.IGNORECASE)


def _has_upper(term: str) -> bool:
    return any(ch.isupper() for ch in term)


def _match_case(found: str, replacement: str) -> str:
    if _has_upper(replacement):  # names keep their own spelling
        return replacement
    if len(found) > 1 and found.isupper():
        return replacement.upper()
    if found[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _choose(source: str, candidates: list[str], next_word: str | None) -> str:
    if len(candidates) == 1:
        return candidates[0]
    before_noun = next_word is not None and next_word.lower() not in _NOT_AFTER_DETERMINER
    preferred = {"her": ("his", "him"), "his": ("her", "hers")}.get(source)
    if preferred and set(preferred) <= set(candidates):
        return preferred[0] if before_noun else preferred[1]
    return candidates[0]


def swap_terms(text: str, swaps: Swaps) -> str:
    """Replace every listed term in ``text`` by its counterpart, in one pass.

    Args:
        text: The text to rewrite.
        swaps: Pairs ``(a, b)`` swapped both ways (e.g. :data:`GENDER_SWAPS`), or a
            mapping ``{source: target}`` applied one way. Multi-word terms are allowed.

    Returns:
        The rewritten text (equal to ``text`` when no term occurs).

    Raises:
        InvalidParameterError: ``swaps`` holds something other than string pairs.

    Example:
        >>> swap_terms("Ebony met HIM; ebony is a wood.", GENDER_SWAPS)
        'Alonzo met HER; ebony is a wood.'
    """
    table, pattern = _compile(_freeze(swaps))
    if pattern is None:
        return text

    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        key = found if found in table and _has_upper(found) else found.lower()
        if key not in table:  # e.g. "ebony" when only the name "Ebony" is listed
            return found
        nxt = _FOLLOWING_WORD.match(text, match.end())
        choice = _choose(key, table[key], nxt.group(1) if nxt else None)
        return _match_case(found, choice)

    return pattern.sub(replace, text)


def counterfactual_pairs(
    texts: Sequence[str] | pd.Series, swaps: Swaps | str = "gender"
) -> pd.DataFrame:
    """Each text next to its counterfactual, for a counterfactual-bias comparison.

    Args:
        texts: The original texts.
        swaps: A key of :data:`BUILTIN_SWAPS` (``"gender"``, ``"race"``) or swaps as in
            :func:`swap_terms`.

    Returns:
        Columns ``original``, ``counterfactual`` and ``changed`` (False where no listed
        term occurs, so the pair says nothing about the model), one row per text.

    Raises:
        InvalidParameterError: Unknown built-in list name or malformed swaps.

    Example:
        >>> counterfactual_pairs(["My son feels glad.", "It rains."])["changed"].tolist()
        [True, False]
    """
    if isinstance(swaps, str):
        if swaps not in BUILTIN_SWAPS:
            raise InvalidParameterError(
                f"Unknown built-in swap list {swaps!r}; available: {sorted(BUILTIN_SWAPS)!r}."
            )
        swaps = BUILTIN_SWAPS[swaps]
    originals = [str(t) for t in texts]
    swapped = [swap_terms(t, swaps) for t in originals]
    return pd.DataFrame(
        {
            "original": originals,
            "counterfactual": swapped,
            "changed": [a != b for a, b in zip(originals, swapped, strict=True)],
        }
    )
