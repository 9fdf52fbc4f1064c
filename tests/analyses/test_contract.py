"""Every built-in analysis keeps the analysis contract (:func:`neuronmap.testing.check_analysis`).

``CASES`` maps each registry name to a factory of ``(analysis, model, probe, layers)``: the
analysis at small settings and what it needs to run (``None``: check_analysis' defaults, a
tiny MLP and a tiny tensor probe set). Each block belongs to one group of analyses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import neuronmap as nm
from neuronmap.analyses import available_analyses
from neuronmap.testing import check_analysis

Case = tuple[Any, Any, Any, Any]
CASES: dict[str, Callable[[], Case]] = {
    # --- statistics and bias: probing, regression_probing, world_model, crosslingual,
    #     representation_bias, fairness, performance, counterfactual_bias
    "fairness": lambda: (nm.Fairness("group", n_resamples=50, n_permutations=19), None, None, None),
    "probing": lambda: (nm.Probing(cv=3, n_permutations=19, n_bootstrap=50), None, None, None),
    # --- representations: cka, rsa, information, neuron_stats, activation_stats, concept_algebra,
    #     concept_extraction, projection, tcav
    "activation_stats": lambda: (nm.ActivationStats(), None, None, None),
    "cka": lambda: (nm.CKA(), None, None, None),
    "rsa": lambda: (nm.RSA(n_permutations=19), None, None, None),
    "information": lambda: (nm.Information(n_components=3, n_permutations=19), None, None, None),
    "neuron_stats": lambda: (nm.NeuronStats(top_k=3), None, None, None),
    "projection": lambda: (nm.Projection(methods=["pca", "tsne"], max_examples=40), None, None, None),
    # --- mechanistic: activation_max, activation_patching, circuit_discovery, causal_tracing,
    #     attention, attribution, adversarial
}


def test_every_builtin_analysis_has_a_case() -> None:
    assert sorted(CASES) == sorted(available_analyses())


@pytest.mark.parametrize("name", sorted(available_analyses()))
def test_builtin_analysis_keeps_the_contract(name: str) -> None:
    if name not in CASES:
        pytest.fail(f"no contract case for {name!r}; add one to CASES")
    analysis, model, probe, layers = CASES[name]()
    check_analysis(analysis, model, probe, layers=layers)
