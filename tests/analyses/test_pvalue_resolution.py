"""Every analysis with a permutation p-value records its resolution and says when it limits the
corrected p-values (RSA/Mantel, Information, Fairness' permutation test, CounterfactualBias;
Probing and RepresentationBias are covered in their own tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _planted import LAYERS, planted_model, planted_probe
from torch import nn

import neuronmap as nm
from neuronmap.analyses.base import AnalysisContext
from neuronmap.analyses.counterfactual import CounterfactualBias
from neuronmap.analyses.fairness import Fairness
from neuronmap.analyses.information import Information
from neuronmap.analyses.representation_bias import RepresentationBias
from neuronmap.analyses.similarity import RSA
from neuronmap.capture.hooks import Activations
from neuronmap.stats import resolution_note
from neuronmap.testing import WordTokenizer


def _run(analysis: nm.analyses.Analysis) -> nm.analyses.AnalysisResult:
    monitor = nm.NeuronMap(planted_probe(n=60), layers=LAYERS, analyses=[analysis], reporters=[], strict=True)
    return monitor.run(planted_model(), step=0).results[analysis.name]


@pytest.mark.parametrize(("analysis", "table"), [(RSA(n_permutations=19), "rsa"),
                                                 (Information(n_permutations=19), "information")])
def test_layer_permutation_tests_record_resolution_and_say_when_it_limits(analysis, table: str) -> None:
    result = _run(analysis)
    frame = result.tables[table]
    assert np.allclose(frame["p_resolution"], 1 / 20) and (frame["n_permutations"] == 19).all()
    assert (frame["p"] >= 1 / 20).all()
    note = [n for n in result.notes if n.startswith("p-value resolution")]
    assert note == [resolution_note(19, 3, what="layers")]
    assert "correcting over 3 layers" in note[0] and "1/20" not in note[0] and "0.05" in note[0]


def test_no_resolution_note_when_enough_permutations() -> None:
    result = _run(RSA(n_permutations=199))
    assert not any(n.startswith("p-value resolution") for n in result.notes)
    assert np.allclose(result.tables["rsa"]["p_resolution"], 1 / 200)


def test_fairness_permutation_records_its_step_and_chi2_has_none() -> None:
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    group = rng.choice(["a", "b"], n)
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    probe = nm.ProbeSet(torch.zeros(n, 1), labels=y, groups={"g": group})
    ctx = AnalysisContext(model=nn.Identity(), probe=probe, step=0,
                          activations=Activations({}, outputs=np.eye(2)[pred]))
    coarse = Fairness("g", test="permutation", n_permutations=9, n_resamples=20).run(ctx)
    summary = coarse.tables["summary"]
    tested = summary["p"].notna()
    assert np.allclose(summary.loc[tested, "p_resolution"], 0.1)
    assert summary.loc[~tested, "p_resolution"].isna().all()
    assert any(n.startswith("p-value resolution: with n_permutations=9") for n in coarse.notes)
    chi2 = Fairness("g", test="chi2", n_resamples=20).run(ctx)
    assert (chi2.tables["summary"].loc[tested, "p_resolution"] == 0).all()
    assert not any(n.startswith("p-value resolution") for n in chi2.notes)


class _HeBoost(nn.Module):
    """``logit_1`` grows with 'he' and with a per-text noise word."""

    def __init__(self, tokenizer: WordTokenizer) -> None:
        super().__init__()
        self.embed = nn.Embedding(tokenizer.vocab_size, 1)
        with torch.no_grad():
            self.embed.weight.zero_()
            self.embed.weight[tokenizer.token_id("he"), 0] = 1.0
            for k in range(20):
                self.embed.weight[tokenizer.token_id(f"w{k}"), 0] = 0.1 * k

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        total = (self.embed(input_ids)[..., 0] * attention_mask).sum(dim=1)
        return torch.stack([torch.zeros_like(total), total], dim=1)


def test_counterfactual_records_the_two_sided_resolution() -> None:
    tokenizer = WordTokenizer(vocab_size=100_003)
    texts = [f"{'he' if k % 2 else 'she'} w{k % 20}" for k in range(40)]
    probe = nm.ProbeSet.from_texts(texts, tokenizer)
    analysis = CounterfactualBias({"gender": [("he", "she")]}, tokenizer=tokenizer, n_resamples=19)
    result = nm.NeuronMap(probe, layers=["embed"], analyses=[analysis], reporters=[], strict=True).run(
        _HeBoost(tokenizer), step=0).results["counterfactual_bias"]
    row = result.tables["summary"].iloc[0]
    assert row["mean_delta_score_p_resolution"] == pytest.approx(2 / 20)  # scipy: two-sided = 2 x one-sided
    assert row["mean_delta_score_p"] >= row["mean_delta_score_p_resolution"] - 1e-12
    # even one test cannot reach alpha = 0.05 when the smallest two-sided p is 0.1
    assert any(n.startswith("p-value resolution: with n_permutations=19 no p-value is below 0.1") for n in result.notes)


def test_weat_rows_record_their_resolution_too() -> None:
    rng = np.random.default_rng(0)
    tags = np.repeat(["target_x", "target_y", "attr_a", "attr_b"], 6)
    probe = nm.ProbeSet(torch.zeros(len(tags), 1), groups={"attr": np.tile(["u", "v"], 12)}, metadata={"weat": tags})
    ctx = AnalysisContext(model=nn.Identity(), probe=probe, step=0,
                          activations=Activations({"layer": rng.normal(size=(len(tags), 8))}))
    table = RepresentationBias("attr", n_permutations=49, min_group_size=5).run(ctx).tables["representation_bias"]
    assert np.allclose(table["p_resolution"], 1 / 50) and len(table) == 2  # decodability and WEAT rows
