"""Calibration of RSA (Mantel), Information, NeuronStats, TCAV's random-set test and
CounterfactualBias' statistics. Each analysis runs on simulated arrays through
:class:`AnalysisContext` (TCAV and CounterfactualBias, which need a model, here through the very
functions their ``run`` applies to the scores, at sizes a model cannot afford; the same
statistics are checked through ``analysis.run`` in ``test_analysis_runs_calibration.py``)."""

from __future__ import annotations

import numpy as np
import torch
from calibration._record import check_rate

from neuronmap.analyses.base import AnalysisContext
from neuronmap.analyses.counterfactual import CounterfactualBias
from neuronmap.analyses.information import Information
from neuronmap.analyses.neurons import NeuronStats
from neuronmap.analyses.similarity import RSA
from neuronmap.capture.hooks import Activations
from neuronmap.metrics.concepts import tcav_random_set_test
from neuronmap.probe import ProbeSet

ALPHA = 0.05
REPS = {"fast": 40, "full": 400}


def _context(layers: dict[str, np.ndarray], y: np.ndarray, seed: int) -> AnalysisContext:
    probe = ProbeSet(torch.zeros(len(y), 1), labels=y)
    return AnalysisContext(model=torch.nn.Identity(), probe=probe, activations=Activations(layers), step=0,
                           random_state=seed)


def _layers(rng: np.random.Generator, y: np.ndarray, d: int = 8, shift: float = 1.0) -> dict[str, np.ndarray]:
    signal = rng.normal(size=(len(y), d))
    signal[:, 0] += shift * (2 * y - 1)
    return {"noise0": rng.normal(size=(len(y), d)), "noise1": rng.normal(size=(len(y), d)), "signal": signal}


def test_rsa_mantel_and_information_permutation_p_values(size: str) -> None:
    rng, reps, n = np.random.default_rng(30), REPS[size] * 2 // 5, 60
    rsa, info = RSA(n_permutations=199), Information(n_permutations=99, n_components=2)
    rsa_null = rsa_power = info_null = info_power = 0
    for rep in range(reps):
        y = rng.permutation(np.repeat([0, 1], n // 2))
        ctx = _context(_layers(rng, y, shift=1.5), y, rep)
        r = rsa.run(ctx).tables["rsa"].set_index("layer")
        i = info.run(ctx).tables["information"].set_index("layer")
        rsa_null += int((r.loc[["noise0", "noise1"], "p"] < ALPHA).sum())
        info_null += int((i.loc[["noise0", "noise1"], "p"] < ALPHA).sum())
        rsa_power += int(r.loc["signal", "p"] < ALPHA)
        info_power += int(i.loc["signal", "p"] < ALPHA)
    common = {"size": size, "scenario": f"noise layers, n={n}, d=8"}
    check_rate(rsa_null, 2 * reps, nominal=ALPHA, kind="null rejection", statistic="RSA rsa p",
               method="Mantel permutation (rows and columns together)", **common)
    check_rate(info_null, 2 * reps, nominal=ALPHA, kind="null rejection", statistic="Information mi_knn p",
               method="label permutation, distances reused", **common)
    planted = {"size": size, "scenario": f"planted layer (shift 1.5 sd on one unit), n={n}"}
    check_rate(rsa_power, reps, nominal=ALPHA, kind="power", statistic="RSA rsa p", method="Mantel permutation",
               minimum=0.8, **planted)
    check_rate(info_power, reps, nominal=ALPHA, kind="power", statistic="Information mi_knn p",
               method="label permutation", minimum=0.8, **planted)


def test_neuron_selectivity_tests_reject_null_neurons_at_alpha(size: str) -> None:
    rng, reps, n, d = np.random.default_rng(31), REPS[size] // 4, 90, 50
    analysis = NeuronStats(p_adjust="fdr_bh")
    rejected = tested = 0
    for _ in range(reps):
        y = np.repeat([0, 1, 2], n // 3)
        x = np.maximum(rng.normal(size=(n, d)), 0.0)  # ReLU units, independent of the class
        res = analysis._selectivity(x, (y, [0, 1, 2]))
        rejected += int((res["p"] < ALPHA).sum())
        tested += int(res["p"].notna().sum())
    check_rate(rejected, tested, nominal=ALPHA, kind="null rejection", statistic="NeuronStats per-neuron p",
               method="Kruskal-Wallis (scipy)", scenario=f"ReLU units independent of 3 classes, n={n}", size=size)


def test_tcav_random_set_test_rejects_a_random_concept_at_alpha(size: str) -> None:
    # a random concept's mean score is one more draw from the random sets' distribution
    rng, reps = np.random.default_rng(32), 10 * REPS[size]
    rejected = power = 0
    for _ in range(reps):
        randoms = rng.beta(8, 8, size=10)
        rejected += tcav_random_set_test(float(rng.beta(8, 8)), randoms)[1] < ALPHA
        power += tcav_random_set_test(0.9, randoms)[1] < ALPHA
    check_rate(rejected, reps, nominal=ALPHA, kind="null rejection", statistic="TCAV p (random_sets)",
               method="Crawford & Howell (1998) t, 10 random concepts", scenario="concept = one more random set",
               size=size)
    check_rate(power, reps, nominal=ALPHA, kind="power", statistic="TCAV p (random_sets)",
               method="Crawford & Howell (1998) t", scenario="concept score 0.9 vs random sets ~0.5", size=size,
               minimum=0.9)


def test_counterfactual_statistics(size: str) -> None:
    rng, reps, pairs = np.random.default_rng(33), REPS[size], 80
    analysis = CounterfactualBias("gender", tokenizer=lambda *a, **k: None, n_resamples=499)
    null = cover = flip_cover = abs_cover = power = 0
    mean_abs = 0.05 * np.sqrt(2 / np.pi)  # E|delta| for delta ~ N(0, 0.05)
    for _ in range(reps):
        original = rng.uniform(0.2, 0.8, pairs)
        delta = rng.normal(0.0, 0.05, pairs)  # symmetric around 0: no counterfactual bias
        flips = (rng.random(pairs) < 0.2).astype(float)
        row = analysis._row("gender", flips, delta, original, rng)
        null += row["mean_delta_score_p"] < ALPHA
        cover += row["mean_delta_score_ci_low"] <= 0.0 <= row["mean_delta_score_ci_high"]
        flip_cover += row["flip_rate_ci_low"] <= 0.2 <= row["flip_rate_ci_high"]
        abs_cover += row["mean_abs_delta_score_ci_low"] <= mean_abs <= row["mean_abs_delta_score_ci_high"]
        shifted = analysis._row("gender", flips, delta + 0.03, original, rng)
        power += shifted["mean_delta_score_p"] < ALPHA
    common = {"size": size, "scenario": f"{pairs} swapped pairs, delta ~ N(0, 0.05)"}
    check_rate(null, reps, nominal=ALPHA, kind="null rejection", statistic="CounterfactualBias mean_delta_score p",
               method="paired sign-flip permutation", **common)
    check_rate(cover, reps, nominal=0.95, kind="coverage", statistic="CounterfactualBias mean_delta_score CI",
               method="BCa bootstrap", **common)
    check_rate(abs_cover, reps, nominal=0.95, kind="coverage", statistic="CounterfactualBias mean_abs_delta_score CI",
               method="BCa bootstrap", **common)
    check_rate(flip_cover, reps, nominal=0.95, kind="coverage", statistic="CounterfactualBias flip_rate CI",
               method="BCa bootstrap", size=size, scenario=f"{pairs} pairs, flip probability 0.2")
    check_rate(power, reps, nominal=ALPHA, kind="power", statistic="CounterfactualBias mean_delta_score p",
               method="paired sign-flip permutation", size=size, scenario=f"{pairs} pairs, mean delta 0.03",
               minimum=0.8)
