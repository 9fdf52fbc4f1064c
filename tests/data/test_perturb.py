"""Text perturbations: character swaps and synonym swaps, seeded per text."""

from __future__ import annotations

import pytest

from neuronmap.data import SYNONYMS, char_swap, perturb_texts, synonym_swap
from neuronmap.errors import InvalidParameterError


def test_char_swap_exchanges_two_inner_letters_and_keeps_word_ends():
    text = "interpretability matters greatly"
    out = char_swap(text, rate=1.0, seed=3)
    assert out != text
    for a, b in zip(text.split(), out.split(), strict=True):
        assert (a[0], a[-1], sorted(a)) == (b[0], b[-1], sorted(b))
        assert sum(x != y for x, y in zip(a, b, strict=True)) in (0, 2)
    assert char_swap("a cat is", rate=1.0) == "a cat is"  # no word of 4+ letters
    assert char_swap(text, rate=0.0) == text


def test_synonym_swap_uses_the_list_and_keeps_capitalisation():
    out = synonym_swap("Good movie, BAD ending.", rate=1.0, seed=0)
    first, second = out.split(" ", 1)
    assert first in {w.capitalize() for w in SYNONYMS["good"]}
    assert second.split(",")[0] in SYNONYMS["movie"]
    assert any(w.upper() in out for w in SYNONYMS["bad"])
    assert synonym_swap("blue sky", rate=1.0, synonyms={"sky": ["heavens"]}) == "blue heavens"


def test_perturbations_are_deterministic_per_seed_and_position():
    texts = ["the movie was wonderful", "the movie was wonderful"]
    a, b = perturb_texts(texts, "synonym_swap", seed=1), perturb_texts(texts, "synonym_swap", seed=1)
    assert a == b
    many = perturb_texts(texts * 10, "synonym_swap", seed=1)
    assert len(set(many)) > 1  # equal texts at different positions are perturbed independently


def test_errors():
    with pytest.raises(InvalidParameterError,
                       match=r"Unknown perturbation 'typo'; allowed: \['char_swap', 'synonym_swap'\]"):
        perturb_texts(["x"], "typo")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"'rate' parameter must be a probability in \[0, 1\]; got 2"):
        char_swap("word", rate=2)
