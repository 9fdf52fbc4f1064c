"""Every built-in analysis keeps the analysis contract (:func:`neuronmap.testing.check_analysis`).

``CASES`` maps each registry name to a factory of ``(analysis, model, probe, layers)``: the
analysis at small settings and what it needs to run (``None``: check_analysis' defaults, a
tiny MLP and a tiny tensor probe set). Each block belongs to one group of analyses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from _synthetic import key_token_pairs

import neuronmap as nm
from neuronmap.analyses import available_analyses
from neuronmap.testing import check_analysis, tiny_bert, tiny_text_probe, tiny_tokenizer

Case = tuple[Any, Any, Any, Any]


def _concept_probe() -> nm.ProbeSet:
    """Concept examples given as a separate probe set (TCAV captures their activations itself)."""
    return nm.ProbeSet(torch.randn(20, 8, generator=torch.Generator().manual_seed(1)) + 1.0, name="concept")


def _world_probe(n: int = 48) -> nm.ProbeSet:
    """tiny_mlp inputs with places (latitude, longitude, region) and sentence pairs (language, pair_id)."""
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    return nm.ProbeSet(x, labels=(x[:, 0] > 0).long().numpy(), name="world", metadata={
        "latitude": (60 * x[:, 0].clamp(-1.4, 1.4)).numpy(), "longitude": (120 * x[:, 1].clamp(-1.4, 1.4)).numpy(),
        "region": np.where(x[:, 2] > 0, "north", "south"), "language": np.where(np.arange(n) < n // 2, "en", "de"),
        "pair_id": np.arange(n) % (n // 2)})  # fmt: skip


CASES: dict[str, Callable[[], Case]] = {
    # --- statistics and bias: probing, regression_probing, world_model, crosslingual,
    #     representation_bias, fairness, performance, counterfactual_bias
    "probing": lambda: (nm.Probing(cv=3, n_permutations=19, n_resamples=50), None, None, None),
    "regression_probing": lambda: (nm.RegressionProbing(cv=3, n_permutations=19, n_resamples=50), None, None, None),
    "world_model": lambda: (nm.WorldModelProbe("space", cv=3, n_permutations=19, n_resamples=50), None,
                            _world_probe(), None),
    "crosslingual": lambda: (nm.CrossLingualAlignment("en", n_permutations=19), None, _world_probe(), None),
    "representation_bias": lambda: (nm.RepresentationBias("group", cv=3, n_permutations=19, max_components=4),
                                    None, None, None),
    "fairness": lambda: (nm.Fairness("group", n_resamples=50, n_permutations=19), None, None, None),
    "performance": lambda: (nm.ModelPerformance(n_resamples=50), None, None, None),
    "counterfactual_bias": lambda: (nm.CounterfactualBias("gender", tokenizer=tiny_tokenizer(), n_resamples=49),
                                    tiny_bert(num_labels=2), tiny_text_probe(), ["bert.pooler"]),
    # --- representations: cka, rsa, information, neuron_stats, activation_stats, concept_algebra,
    #     concept_extraction, projection, tcav
    "activation_stats": lambda: (nm.ActivationStats(), None, None, None),
    "cka": lambda: (nm.CKA(), None, None, None),
    "rsa": lambda: (nm.RSA(n_permutations=19), None, None, None),
    "information": lambda: (nm.Information(n_components=3, n_permutations=19), None, None, None),
    "neuron_stats": lambda: (nm.NeuronStats(top_k=3), None, None, None),
    "projection": lambda: (nm.Projection(methods=["pca", "tsne"], max_examples=40), None, None, None),
    "concept_extraction": lambda: (nm.ConceptExtraction("pca", n_components=3), None, None, None),
    "concept_algebra": lambda: (nm.ConceptAlgebra({"pos": "label=1", "a": "group=a", "b": "group=b"},
                                                  expressions=[("pos", "a", "b")]), None, None, None),
    "tcav": lambda: (nm.TCAV({"pos": "label=1", "extra": _concept_probe()}, target=1, n_runs=2, n_random=2),
                     None, None, None),
    # --- mechanistic: activation_max, activation_patching, circuit_discovery, causal_tracing,
    #     attention, attribution, adversarial
    "activation_max": lambda: (nm.ActivationMaximization("net.2", units=[0, [1.0] * 16], steps=5, top_k=3),
                               None, None, None),
    "activation_patching": lambda: (nm.ActivationPatching(layers="bert.encoder.layer.1",
                                                          heads="bert.encoder.layer.*.attention.output.dense",
                                                          n_resamples=50),
                                    tiny_bert(num_labels=2, vocab_size=16), key_token_pairs(4), ["bert.embeddings"]),
    "circuit_discovery": lambda: (nm.CircuitDiscovery(heads="bert.encoder.layer.*.attention.output.dense",
                                                      max_passes=1, n_resamples=50),
                                  tiny_bert(num_labels=2, vocab_size=16), key_token_pairs(4), ["bert.embeddings"]),
    "causal_tracing": lambda: (nm.CausalTracing(layers="bert.encoder.layer.*", n_samples=2, max_examples=4,
                                                n_resamples=50),
                               tiny_bert(num_labels=2), tiny_text_probe(8), ["bert.encoder.layer.0"]),
    "attention": lambda: (nm.AttentionAnalysis(ablation_examples=4, n_resamples=50, n_permutations=19),
                          tiny_bert(num_labels=2), tiny_text_probe(8), ["bert.encoder.layer.0"]),
    "attribution": lambda: (nm.Attribution("integrated_gradients", n_steps=4, max_examples=8, n_resamples=50),
                            None, None, None),
    "adversarial": lambda: (nm.AdversarialRobustness([0.1, 0.5], pgd_steps=2, bisection_steps=2, max_examples=8,
                                                     n_resamples=50), None, None, None),
}


def test_every_builtin_analysis_has_a_case() -> None:
    assert sorted(CASES) == sorted(available_analyses())


@pytest.mark.parametrize("name", sorted(available_analyses()))
def test_builtin_analysis_keeps_the_contract(name: str) -> None:
    if name not in CASES:
        pytest.fail(f"no contract case for {name!r}; add one to CASES")
    analysis, model, probe, layers = CASES[name]()
    check_analysis(analysis, model, probe, layers=layers)
