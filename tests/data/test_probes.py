"""ProbeSet builders over the EEC templates: counts, columns, determinism."""

from __future__ import annotations

import pytest

from neuronmap.data import eec_frame, sentiment_frame
from neuronmap.data.probes import eec_probe, sentiment_probe
from neuronmap.errors import InvalidParameterError
from neuronmap.testing import WordTokenizer

TOKENIZER = WordTokenizer(vocab_size=1000)


def test_eec_probe_holds_the_whole_corpus_with_groups_and_labels() -> None:
    probe = eec_probe(TOKENIZER)
    frame = eec_frame()
    assert len(probe) == 8640 == len(frame)  # Kiritchenko & Mohammad (2018): 8,640 sentences
    assert probe.group_columns == ["gender", "race"]
    assert probe.texts == frame["text"].tolist()
    assert probe.labels.tolist() == frame["label"].tolist()
    assert {"pair_id", "template_id", "emotion"} <= set(probe.frame.columns)
    assert probe.inputs["input_ids"].shape[0] == 8640


def test_sentiment_probe_is_deterministic_and_balanced() -> None:
    a = sentiment_probe(TOKENIZER, persons="names", n_per_template=40, seed=3)
    b = sentiment_probe(TOKENIZER, persons="names", n_per_template=40, seed=3)
    c = sentiment_probe(TOKENIZER, persons="names", n_per_template=40, seed=4)
    assert len(a) == 7 * 40 and a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert set(a.labels) == {0, 1}
    assert a.texts == sentiment_frame(persons="names", n_per_template=40, balanced=True, seed=3)["text"].tolist()


def test_bad_template_selection_is_reported() -> None:
    with pytest.raises(InvalidParameterError, match="templates 8-11 are neutral"):
        sentiment_probe(TOKENIZER, template_ids=[9])
