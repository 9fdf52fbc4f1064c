"""Tests for neuronmap.data.swaps: counterfactual swaps checked against the EEC's own pairs."""

from __future__ import annotations

import pandas as pd
import pytest

from neuronmap.data import (
    EEC_NAMES,
    EEC_NOUN_PHRASES,
    GENDER_NAME_SWAPS,
    GENDER_SWAPS,
    RACE_NAME_SWAPS,
    counterfactual_pairs,
    eec_frame,
    swap_terms,
)
from neuronmap.data.templates import Gender
from neuronmap.errors import InvalidParameterError


def _counterpart_texts(df: pd.DataFrame, mapping: dict[str, str]) -> pd.Series:
    """For each row, the sentence of the same pair whose person is ``mapping[person]``."""
    by_key = df.set_index(["pair_id", "person"])["text"]
    keys = list(zip(df["pair_id"], df["person"].map(mapping), strict=True))
    return pd.Series(by_key.loc[keys].to_numpy(), index=df.index)


def test_gender_swap_turns_each_eec_noun_phrase_into_its_counterpart() -> None:
    # she/her <-> he/him, this woman <-> this man, my sister <-> my brother, ... in all 11
    # templates, including "her" as an object and "herself" in template 5.
    df = eec_frame(persons="noun_phrases")
    pairs = dict(zip(EEC_NOUN_PHRASES["female"], EEC_NOUN_PHRASES["male"], strict=True))
    mapping = pairs | {m: f for f, m in pairs.items()}
    swapped = df["text"].map(lambda t: swap_terms(t, GENDER_SWAPS))
    pd.testing.assert_series_equal(swapped, _counterpart_texts(df, mapping), check_names=False)


@pytest.mark.parametrize(
    ("swaps", "axis", "templates"),
    [
        (GENDER_NAME_SWAPS, "gender", [1, 3, 8]),  # names only: no "himself" (template 5)
        (GENDER_SWAPS, "gender", [1, 3, 5, 8]),
        (RACE_NAME_SWAPS, "race", [1, 3, 5, 8]),
    ],
)
def test_name_swaps_match_eec_counterparts(
    swaps: tuple[tuple[str, str], ...], axis: str, templates: list[int]
) -> None:
    df = eec_frame(persons="names", template_ids=templates)
    cells: list[tuple[tuple[str, Gender], tuple[str, Gender]]]
    if axis == "gender":
        cells = [(("African-American", "female"), ("African-American", "male")),
                 (("European-American", "female"), ("European-American", "male"))]  # fmt: skip
    else:
        cells = [(("African-American", "female"), ("European-American", "female")),
                 (("African-American", "male"), ("European-American", "male"))]  # fmt: skip
    mapping: dict[str, str] = {}
    for a, b in cells:
        for x, y in zip(EEC_NAMES[a], EEC_NAMES[b], strict=True):
            mapping |= {x: y, y: x}
    swapped = df["text"].map(lambda t: swap_terms(t, swaps))
    pd.testing.assert_series_equal(swapped, _counterpart_texts(df, mapping), check_names=False)


def test_swapping_twice_restores_eec_sentences() -> None:
    texts = eec_frame(template_ids=[2, 5, 9])["text"]
    twice = texts.map(lambda t: swap_terms(swap_terms(t, GENDER_SWAPS), GENDER_SWAPS))
    pd.testing.assert_series_equal(twice, texts)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("he and she", "she and he"),  # simultaneous, not sequential
        ("HE said He was he", "SHE said She was she"),  # case preserved
        ("The theme: heroic mankind, shed.", "The theme: heroic mankind, shed."),  # whole words
        ("The woman's son.", "The man's daughter."),
        ("I gave her a book; her book.", "I gave him a book; his book."),
        ("It is his. His cat.", "It is hers. Her cat."),
        ("Ebony carved ebony.", "Alonzo carved ebony."),  # names match their spelling only
    ],
)
def test_swap_rules(text: str, expected: str) -> None:
    assert swap_terms(text, GENDER_SWAPS) == expected


def test_user_swaps_mapping_and_multiword() -> None:
    assert swap_terms("he met she", {"he": "she"}) == "she met she"  # a mapping is one-way
    assert swap_terms("Ice cream, ice creamery.", [("ice cream", "cake")]) == "Cake, ice creamery."
    assert swap_terms("nothing here", []) == "nothing here"


def test_counterfactual_pairs() -> None:
    table = counterfactual_pairs(["My son feels glad.", "It rains.", "Jamel left."], "race")
    assert table.columns.tolist() == ["original", "counterfactual", "changed"]
    assert table["counterfactual"].tolist() == ["My son feels glad.", "It rains.", "Frank left."]
    assert table["changed"].tolist() == [False, False, True]
    assert counterfactual_pairs(["He left."])["counterfactual"].tolist() == ["She left."]


def test_bad_swaps() -> None:
    with pytest.raises(
        InvalidParameterError, match=r"pairs of non-empty strings; got \('he', ''\)"
    ):
        swap_terms("he", [("he", "")])
    with pytest.raises(
        InvalidParameterError, match=r"Unknown built-in swap list 'age'.*\['gender', 'race'\]"
    ):
        counterfactual_pairs(["x"], "age")
