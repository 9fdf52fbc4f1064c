"""Calibration of Probing (accuracy CI, permutation p, selectivity) and RepresentationBias.

Each replication draws a fresh probe set with a balanced binary target and several layers:
pure-noise layers (independent of the target: chance accuracy 0.5 is the population value) and
one layer with a planted linear signal. The analyses run on the arrays through
:class:`AnalysisContext`, exactly as the engine calls them.
"""

from __future__ import annotations

import numpy as np
import torch
from calibration._record import check_rate

from neuronmap.analyses.base import AnalysisContext
from neuronmap.analyses.probing import Probing
from neuronmap.analyses.representation_bias import RepresentationBias
from neuronmap.capture.hooks import Activations
from neuronmap.probe import ProbeSet

ALPHA = 0.05
REPS = {"fast": 24, "full": 250}
NOISE = 4  # noise layers per replication


def _context(rng: np.random.Generator, n: int, d: int, seed: int) -> AnalysisContext:
    y = rng.permutation(np.repeat([0, 1], n // 2))
    layers = {f"noise{k}": rng.normal(size=(n, d)) for k in range(NOISE)}
    signal = rng.normal(size=(n, d))
    signal[:, 0] += 1.2 * (2 * y - 1)
    layers["signal"] = signal
    probe = ProbeSet(torch.zeros(n, 1), labels=y, groups={"attr": np.where(y == 1, "a", "b")})
    return AnalysisContext(model=torch.nn.Identity(), probe=probe, activations=Activations(layers), step=0,
                           random_state=seed)


def test_probing_statistics_are_calibrated_on_noise_layers(size: str) -> None:
    rng, reps, n, d = np.random.default_rng(20), REPS[size], 200, 16
    analysis = Probing(n_permutations=199, n_bootstrap=300)
    counts = dict.fromkeys(["acc_cover", "p_reject", "sel_reject", "sel_cover", "f1_cover", "acc_power", "sel_power"], 0)
    for rep in range(reps):
        table = analysis.run(_context(rng, n, d, rep)).tables["probing"].set_index("layer")
        noise = table.loc[[f"noise{k}" for k in range(NOISE)]]
        counts["acc_cover"] += int(((noise.accuracy_ci_low <= 0.5) & (noise.accuracy_ci_high >= 0.5)).sum())
        counts["f1_cover"] += int(((noise.macro_f1_ci_low <= 0.5) & (noise.macro_f1_ci_high >= 0.5)).sum())
        counts["p_reject"] += int((noise.p < ALPHA).sum())
        counts["sel_reject"] += int((noise.selectivity_p < ALPHA).sum())
        counts["sel_cover"] += int(((noise.selectivity_ci_low <= 0) & (noise.selectivity_ci_high >= 0)).sum())
        counts["acc_power"] += int(table.loc["signal", "p_adj"] < ALPHA)
        counts["sel_power"] += int(table.loc["signal", "selectivity_p_adj"] < ALPHA)
    layers, scenario = NOISE * reps, f"noise layers, n={n}, d={d}, 5-fold"
    common = {"size": size, "scenario": scenario}
    check_rate(counts["acc_cover"], layers, nominal=0.95, kind="coverage", statistic="Probing accuracy CI",
               method="Wilson on n / design effect (permutation null)", **common)
    check_rate(counts["f1_cover"], layers, nominal=0.95, kind="coverage", statistic="Probing macro_f1 CI",
               method="BCa bootstrap widened by sqrt(design effect)", **common)
    check_rate(counts["p_reject"], layers, nominal=ALPHA, kind="null rejection", statistic="Probing accuracy p",
               method="within-fold label permutation, ridge CV accuracy", **common)
    check_rate(counts["sel_reject"], layers, nominal=ALPHA, kind="null rejection", statistic="Probing selectivity p",
               method="Nadeau-Bengio corrected resampled t over folds", **common)
    check_rate(counts["sel_cover"], layers, nominal=0.95, kind="coverage", statistic="Probing selectivity CI",
               method="Nadeau-Bengio corrected t interval", **common)
    planted = {"size": size, "scenario": f"planted layer (d' = 2.4 on one unit), n={n}, Holm over 5 layers"}
    check_rate(counts["acc_power"], reps, nominal=ALPHA, kind="power", statistic="Probing accuracy p_adj",
               method="within-fold label permutation", minimum=0.9, **planted)
    check_rate(counts["sel_power"], reps, nominal=ALPHA, kind="power", statistic="Probing selectivity p_adj",
               method="Nadeau-Bengio corrected t", minimum=0.8, **planted)


def test_representation_bias_statistics_are_calibrated_on_noise_layers(size: str) -> None:
    rng, reps, n, d = np.random.default_rng(21), REPS[size], 200, 16
    analysis = RepresentationBias("attr", n_permutations=199, weat_column=None)
    cover = reject = distance_reject = power = 0
    for rep in range(reps):
        table = analysis.run(_context(rng, n, d, rep)).tables["representation_bias"].set_index("layer")
        noise = table.loc[[f"noise{k}" for k in range(NOISE)]]
        cover += int(((noise.decodability_ci_low <= 0.5) & (noise.decodability_ci_high >= 0.5)).sum())
        reject += int((noise.decodability_p < ALPHA).sum())
        distance_reject += int((noise.centroid_distance_p < ALPHA).sum())
        power += int(table.loc["signal", "decodability_p_adj"] < ALPHA)
    layers, common = NOISE * reps, {"size": size, "scenario": f"noise layers, n={n}, d={d}, 5-fold"}
    check_rate(cover, layers, nominal=0.95, kind="coverage", statistic="RepresentationBias decodability CI",
               method="Wilson on n / design effect (permutation null)", **common)
    check_rate(reject, layers, nominal=ALPHA, kind="null rejection", statistic="RepresentationBias decodability p",
               method="within-fold label permutation", **common)
    check_rate(distance_reject, layers, nominal=ALPHA, kind="null rejection",
               statistic="RepresentationBias centroid_distance p", method="group-label permutation", **common)
    check_rate(power, reps, nominal=ALPHA, kind="power", statistic="RepresentationBias decodability p_adj",
               method="within-fold label permutation", minimum=0.9,
               size=size, scenario=f"planted layer, n={n}, Holm over 5 layers")
