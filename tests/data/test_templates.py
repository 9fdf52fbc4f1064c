"""Tests for neuronmap.data.templates: counts from the EEC paper, labels, groups, determinism."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from neuronmap.data import (
    EEC_NAMES,
    EEC_NOUN_PHRASES,
    EEC_TEMPLATES,
    EMOTIONAL_SITUATION_WORDS,
    EMOTIONAL_STATE_WORDS,
    SENTIMENT_LABELS,
    eec_frame,
    sentiment_frame,
)
from neuronmap.data.templates import Persons
from neuronmap.errors import InvalidParameterError

N_EMOTION_TEMPLATES, N_NEUTRAL_TEMPLATES, N_WORDS = 7, 4, 20


@pytest.fixture(scope="module")
def full() -> pd.DataFrame:
    return eec_frame()


def test_published_list_sizes() -> None:
    # Kiritchenko & Mohammad (2018): 11 templates, 4 emotions x 5 words per word kind,
    # 10 names per race x gender cell, 10 noun phrases per gender.
    assert [t.id for t in EEC_TEMPLATES] == list(range(1, 12))
    assert sum(t.word_kind is None for t in EEC_TEMPLATES) == N_NEUTRAL_TEMPLATES
    for words in (EMOTIONAL_STATE_WORDS, EMOTIONAL_SITUATION_WORDS):
        assert sorted(words) == ["anger", "fear", "joy", "sadness"]
        assert all(len(w) == 5 for w in words.values())
    assert {k: len(v) for k, v in EEC_NAMES.items()} == dict.fromkeys(EEC_NAMES, 10)
    assert {k: len(v) for k, v in EEC_NOUN_PHRASES.items()} == {"female": 10, "male": 10}
    names = [n for v in EEC_NAMES.values() for n in v]
    assert len(set(names)) == 40


@pytest.mark.parametrize(
    ("persons", "n_persons"), [("all", 60), ("names", 40), ("noun_phrases", 20)]
)
def test_counts_are_templates_x_persons_x_words(persons: Persons, n_persons: int) -> None:
    df = eec_frame(persons=persons)
    expected = N_EMOTION_TEMPLATES * n_persons * N_WORDS + N_NEUTRAL_TEMPLATES * n_persons
    assert len(df) == expected
    per_template = df.groupby("template_id").size()
    assert (per_template.loc[1:7] == n_persons * N_WORDS).all()
    assert (per_template.loc[8:11] == n_persons).all()
    assert (df.groupby("pair_id").size() == n_persons).all()
    assert df["text"].is_unique


def test_full_corpus_matches_the_published_size(full: pd.DataFrame) -> None:
    assert len(full) == 8640  # the EEC's published size
    assert full.index.tolist() == list(range(8640))
    assert not full.isna().any().any()


def test_labels_follow_the_emotion(full: pd.DataFrame) -> None:
    assert (full["label"] == full["sentiment"].map(SENTIMENT_LABELS)).all()
    expected = {"anger": "negative", "fear": "negative", "sadness": "negative", "joy": "positive",
                "none": "neutral"}  # fmt: skip
    assert (full["sentiment"] == full["emotion"].map(expected)).all()
    counts = full["sentiment"].value_counts()
    assert counts["positive"] == 7 * 60 * 5
    assert counts["negative"] == 7 * 60 * 15
    assert counts["neutral"] == 4 * 60
    neutral = full[full["template_id"] >= 8]
    assert (neutral["emotion"] == "none").all() and (neutral["emotion_word"] == "").all()
    for word, text in zip(full["emotion_word"], full["text"], strict=True):
        assert word in text


def test_group_columns(full: pd.DataFrame) -> None:
    assert full["gender"].value_counts().to_dict() == {"female": 4320, "male": 4320}
    assert full["race"].value_counts().to_dict() == {
        "African-American": 2880, "European-American": 2880, "unspecified": 2880,
    }  # fmt: skip
    names = full[full["person_kind"] == "name"]
    for (race, gender), members in EEC_NAMES.items():
        cell = names[(names["race"] == race) & (names["gender"] == gender)]
        assert set(cell["person"]) == set(members)
    phrases = full[full["person_kind"] == "noun_phrase"]
    assert (phrases["race"] == "unspecified").all()


def test_sentences_of_a_pair_differ_only_in_the_person(full: pd.DataFrame) -> None:
    def blank(row: pd.Series) -> str:
        return re.sub(rf"\b{re.escape(row['term'])}\b", "<P>", row["text"], flags=re.IGNORECASE)

    sample = full[
        full["pair_id"].isin([0, 25, 47, 65, 85, 105, 125, 140, 141, 142, 143])
    ]  # every template
    masked = sample.assign(masked=sample.apply(blank, axis=1))
    masked["masked"] = masked["masked"].str.replace(r"\b(him|her)self\b", "<R>", regex=True)
    assert (masked.groupby("pair_id")["masked"].nunique() == 1).all()


def test_grammar_of_rendered_sentences(full: pd.DataFrame) -> None:
    t5 = full[full["template_id"] == 5]
    assert (t5["text"].str.contains("herself") == (t5["gender"] == "female")).all()
    assert "She found herself in an amazing situation." in set(t5["text"])
    assert "Ryan found himself in a dreadful situation." in set(t5["text"])
    assert "I made her feel happy." in set(full["text"])
    assert "My daughter feels glad." in set(full["text"])
    assert full["text"].str.match(r"^[A-Z]").all()


def test_deterministic_order_and_subsampling(full: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(eec_frame(), full)
    assert full["template_id"].is_monotonic_increasing and full["pair_id"].is_monotonic_increasing
    a = eec_frame(n_per_template=30, seed=5)
    pd.testing.assert_frame_equal(a, eec_frame(n_per_template=30, seed=5))
    assert not a["text"].equals(eec_frame(n_per_template=30, seed=6)["text"])
    assert len(a) == 7 * 30 + 4 * 30
    assert (a.groupby(["template_id", "gender", "race"]).size() == 5).all()
    # kept rows keep the full frame's order
    positions = full.reset_index().set_index("text").loc[a["text"], "index"].to_numpy()
    assert (np.diff(positions) > 0).all()


def test_small_templates_keep_all_rows_when_quota_exceeds() -> None:
    df = eec_frame(persons="noun_phrases", template_ids=[8, 9], n_per_template=1000)
    assert len(df) == 2 * 20


def test_sentiment_frame() -> None:
    df = sentiment_frame()
    assert len(df) == 7 * 60 * 20
    assert set(df["label"]) == {0, 1}
    assert (df["label"] == (df["sentiment"] == "positive")).all()
    balanced = sentiment_frame(balanced=True, seed=3)
    assert balanced.groupby("template_id")["label"].mean().eq(0.5).all()
    assert (balanced.groupby("pair_id").size() == 60).all()
    pd.testing.assert_frame_equal(balanced, sentiment_frame(balanced=True, seed=3))
    small = sentiment_frame(persons="names", template_ids=[1, 2], n_per_template=40, seed=1)
    assert (
        len(small) == 80 and (small.groupby(["template_id", "gender", "race"]).size() == 10).all()
    )


def test_frame_builds_a_probe_set() -> None:
    from neuronmap.probe import ProbeSet
    from neuronmap.testing import tiny_tokenizer

    df = eec_frame(n_per_template=12)
    probe = ProbeSet.from_pandas(
        df, text_column="text", label_column="label", group_columns=["gender", "race"],
        tokenizer=tiny_tokenizer(),
    )  # fmt: skip
    assert len(probe) == len(df) == 132
    assert list(probe.groups.columns) == ["gender", "race"]


def test_bad_options() -> None:
    with pytest.raises(InvalidParameterError, match=r"persons must be one of .*got 'people'"):
        eec_frame(persons="people")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"template_ids must be .* got \[1, 12\]"):
        eec_frame(template_ids=[1, 12])
    with pytest.raises(InvalidParameterError, match="n_per_template must be an int >= 1"):
        eec_frame(n_per_template=0)
    with pytest.raises(InvalidParameterError, match=r"templates 8-11 are neutral"):
        sentiment_frame(template_ids=[1, 9])
