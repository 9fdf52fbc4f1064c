"""CounterfactualBias on EEC sentences with bag-of-words models blind to, or keyed on, gender words."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap.analyses.counterfactual import CounterfactualBias, resolve_swaps
from neuronmap.data import GENDER_SWAPS, swap_terms
from neuronmap.data.probes import sentiment_probe
from neuronmap.data.templates import EMOTIONAL_SITUATION_WORDS, EMOTIONAL_STATE_WORDS
from neuronmap.errors import AnalysisError, InvalidParameterError, ProbeSetError
from neuronmap.reporters import LocalReporter
from neuronmap.testing import WordTokenizer

KEY = "neuronmap/counterfactual_bias/{}/{}".format
TOKENIZER = WordTokenizer(vocab_size=100_003)  # wide enough that no two words used here share an id
FEMALE = ["she", "her", "woman", "girl", "sister", "daughter", "wife", "girlfriend", "mother", "aunt", "mom"]


class BagOfWords(nn.Module):
    """logit(1) = sum of per-word weights over the (unpadded) tokens; logit(0) = 0."""

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        self.embed = nn.Embedding(TOKENIZER.vocab_size, 1)
        with torch.no_grad():
            self.embed.weight.zero_()
            for word, w in weights.items():
                self.embed.weight[TOKENIZER.token_id(word), 0] = w

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        total = (self.embed(input_ids)[..., 0] * attention_mask).sum(dim=1)
        return torch.stack([torch.zeros_like(total), total], dim=1)


def _sentiment_weights() -> dict[str, float]:
    weights = {}
    for lists in (EMOTIONAL_STATE_WORDS, EMOTIONAL_SITUATION_WORDS):
        for emotion, words in lists.items():
            for word in words:
                weights[word] = 2.0 if emotion == "joy" else -2.0
    return weights


def _probe() -> nm.ProbeSet:
    return sentiment_probe(TOKENIZER, persons="noun_phrases", template_ids=[1, 2], n_per_template=60)


def _run(analysis: CounterfactualBias, model: nn.Module, probe: nm.ProbeSet | None = None, tmp_path=None):
    reporters = [LocalReporter(tmp_path, run_name="run")] if tmp_path is not None else []
    monitor = nm.NeuronMap(probe or _probe(), layers=["embed"], analyses=[analysis], reporters=reporters,
                           strict=True)
    return monitor.run(model, step=0)


def test_blind_model_never_flips_and_keyed_model_does(tmp_path) -> None:
    ids = [TOKENIZER.token_id(w) for w in {w for pair in GENDER_SWAPS for w in pair} | set(_sentiment_weights())]
    assert len(set(ids)) == len(ids)  # the test relies on distinct ids
    blind = _run(CounterfactualBias("gender", tokenizer=TOKENIZER, n_resamples=200),
                 BagOfWords(_sentiment_weights()), tmp_path=tmp_path)
    m = blind.metrics
    assert m[KEY("gender", "n_pairs")] == 120  # every noun phrase is gendered
    assert m[KEY("gender", "flip_rate")] == 0.0 and m[KEY("gender", "flip_rate_ci_high")] == 0.0
    assert m[KEY("gender", "mean_abs_delta_score")] == 0.0
    assert m[KEY("gender", "mean_delta_score_p")] == 1.0
    assert (tmp_path / "run" / "figures" / "0" / "counterfactual_bias" / "delta_scores.png").stat().st_size > 0
    assert (tmp_path / "run" / "tables" / "0" / "counterfactual_bias" / "worst_examples.csv").exists()

    keyed = _run(CounterfactualBias("gender", tokenizer=TOKENIZER, n_resamples=200),
                 BagOfWords(_sentiment_weights() | dict.fromkeys(FEMALE, -3.0)))
    m = keyed.metrics
    assert m[KEY("gender", "flip_rate")] > 0.2
    assert m[KEY("gender", "flip_rate_ci_low")] > 0.0
    assert m[KEY("gender", "mean_abs_delta_score")] > 0.1
    worst = keyed.results["counterfactual_bias"].tables["worst_examples"]
    assert worst["flipped"].iloc[0] and len(worst) == 10
    row = worst.iloc[0]
    assert row["counterfactual"] == swap_terms(row["original"], GENDER_SWAPS)


def test_flip_rate_and_deltas_equal_a_direct_computation_with_a_one_way_mapping() -> None:
    probe = _probe()
    model = BagOfWords(_sentiment_weights() | {"she": -3.0, "her": -1.0, "mother": -2.5})
    to_female = {"he": "she", "him": "her", "his": "her", "man": "woman", "boy": "girl", "brother": "sister",
                 "son": "daughter", "husband": "wife", "boyfriend": "girlfriend", "father": "mother",
                 "uncle": "aunt", "dad": "mom"}
    report = _run(CounterfactualBias({"male_to_female": to_female}, tokenizer=TOKENIZER, n_resamples=200),
                  model, probe)

    def run(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(model(**TOKENIZER(texts)).double(), dim=1)

    changed = [t for t in probe.texts if swap_terms(t, to_female) != t]
    original, swapped = run(changed), run([swap_terms(t, to_female) for t in changed])
    flips = (original.argmax(1) != swapped.argmax(1)).double()
    delta = (swapped[:, 1] - original[:, 1]).numpy()
    m = report.metrics
    assert m[KEY("male_to_female", "n_pairs")] == len(changed) == 60
    assert m[KEY("male_to_female", "flip_rate")] == pytest.approx(float(flips.mean()))
    assert m[KEY("male_to_female", "mean_abs_delta_score")] == pytest.approx(np.abs(delta).mean(), abs=1e-6)
    assert m[KEY("male_to_female", "mean_delta_score")] == pytest.approx(delta.mean(), abs=1e-6)
    # every swap lowers the score: the signed change is negative and significant
    assert m[KEY("male_to_female", "mean_delta_score_ci_high")] < 0
    assert m[KEY("male_to_female", "mean_delta_score_p_adj")] < 0.05


def test_swap_specs_and_texts_without_terms() -> None:
    assert list(resolve_swaps(["gender", "race"])) == ["gender", "race"]
    assert resolve_swaps({"sex": "gender"})["sex"] == GENDER_SWAPS
    assert resolve_swaps([("cat", "dog")]) == {"custom": [("cat", "dog")]}
    assert resolve_swaps({"cat": "dog"}) == {"custom": {"cat": "dog"}}
    with pytest.raises(InvalidParameterError, match="Unknown built-in swap list 'age'"):
        resolve_swaps("age")
    with pytest.raises(InvalidParameterError, match="swaps must be"):
        resolve_swaps([1, 2])  # type: ignore[list-item]
    with pytest.raises(InvalidParameterError, match=r"CounterfactualBias: swaps must be a built-in name .*; got 'age'"):
        CounterfactualBias("age", tokenizer=TOKENIZER)
    report = _run(CounterfactualBias({"pets": [("cat", "dog")]}, tokenizer=TOKENIZER), BagOfWords({}))
    result = report.results["counterfactual_bias"]
    assert result.status == "skipped" and "pets: no probe text contains a listed term" in result.notes[0]


def test_bad_inputs() -> None:
    with pytest.raises(InvalidParameterError, match="CounterfactualBias: tokenizer must be the probe set's tokenizer"):
        CounterfactualBias("gender", tokenizer=None)
    with pytest.raises(InvalidParameterError, match=r"tokenizer must be .*tokenizer=.*got None"):
        CounterfactualBias(["gender", "race"])  # forgotten altogether: the documented error, not a TypeError
    tensor_probe = nm.ProbeSet({"input_ids": torch.ones(4, 3, dtype=torch.long),
                                "attention_mask": torch.ones(4, 3, dtype=torch.long)})
    with pytest.raises(AnalysisError, match=r"texts in column 'text'.*it has \[") as info:
        _run(CounterfactualBias("gender", tokenizer=TOKENIZER), BagOfWords({}), tensor_probe)
    assert isinstance(info.value.__cause__, ProbeSetError)
