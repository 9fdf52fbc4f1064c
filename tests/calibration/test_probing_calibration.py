"""Calibration of Probing (accuracy CI, permutation p, selectivity) and RepresentationBias.

Each replication draws a fresh probe set with a balanced binary target and several layers:
pure-noise layers (independent of the target: chance accuracy 0.5 is the population value),
two *weak* planted layers (a shift of +-0.6 sd on one unit, so the probe's accuracy is about 0.69,
its population value computed by Monte Carlo below) and one layer with a strong planted signal.
The analyses run on the arrays through :class:`AnalysisContext`, exactly as the engine calls them.

Independence: every layer has its own activations and (since each analysis draws its
permutations per layer) its own permutations, so given the labels and folds of a replication
the layers' tests are independent, each exact (the statistic is continuous); the rejections
counted over layers are therefore binomial and the 99 % band is honest.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from calibration._record import check_rate
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neuronmap.analyses.base import AnalysisContext
from neuronmap.analyses.probing import Probing
from neuronmap.analyses.representation_bias import RepresentationBias
from neuronmap.capture.hooks import Activations
from neuronmap.probe import ProbeSet
from neuronmap.stats import adjust_pvalues

ALPHA = 0.05
REPS = {"fast": 24, "full": 250}
NOISE = 4  # noise layers per replication
WEAK = 2  # weak planted layers per replication (coverage at a planted effect)
WEAK_SHIFT = 0.6


def _planted(rng: np.random.Generator, y: np.ndarray, d: int, shift: float) -> np.ndarray:
    x = rng.normal(size=(len(y), d))
    x[:, 0] += shift * (2 * y - 1)
    return x


@functools.cache
def _population_accuracy(probe: str, n_train: int, d: int) -> float:
    """Expected accuracy of the probe trained on ``n_train`` examples of a weak planted layer.

    This is what cross-validated accuracy estimates (the accuracy of the procedure at the training
    size of a fold; Bengio & Grandvalet 2004): the mean over 200 training sets of the accuracy on
    20 000 fresh examples (Monte Carlo error about 0.001, against intervals about 0.13 wide). The
    probes are those of the analyses: Probing's standardised logistic regression, RepresentationBias'
    standardised ridge classifier.
    """
    rng = np.random.default_rng(7)
    y_test = np.repeat([0, 1], 10_000)
    x_test = _planted(rng, y_test, d, WEAK_SHIFT)
    accuracies = []
    for _ in range(200):
        y = rng.permutation(np.repeat([0, 1], n_train // 2))
        estimator = LogisticRegression() if probe == "logistic" else RidgeClassifier(alpha=1.0)
        model = make_pipeline(StandardScaler(), estimator).fit(_planted(rng, y, d, WEAK_SHIFT), y)
        accuracies.append(float((model.predict(x_test) == y_test).mean()))
    return float(np.mean(accuracies))


def _context(rng: np.random.Generator, n: int, d: int, seed: int) -> AnalysisContext:
    y = rng.permutation(np.repeat([0, 1], n // 2))
    layers = {f"noise{k}": rng.normal(size=(n, d)) for k in range(NOISE)}
    layers |= {f"weak{k}": _planted(rng, y, d, WEAK_SHIFT) for k in range(WEAK)}
    signal = rng.normal(size=(n, d))
    signal[:, 0] += 1.2 * (2 * y - 1)
    layers["signal"] = signal
    probe = ProbeSet(torch.zeros(n, 1), labels=y, groups={"attr": np.where(y == 1, "a", "b")})
    return AnalysisContext(model=torch.nn.Identity(), probe=probe, activations=Activations(layers), step=0,
                           random_state=seed)


def test_probing_statistics_are_calibrated_on_noise_layers(size: str) -> None:
    rng, reps, n, d = np.random.default_rng(20), REPS[size], 200, 16
    analysis = Probing(n_permutations=199, n_resamples=300)
    truth = _population_accuracy("logistic", n * 4 // 5, d)
    counts = dict.fromkeys(["acc_cover", "p_reject", "sel_reject", "sel_cover", "f1_cover", "acc_power", "sel_power",
                            "weak_cover"], 0)  # fmt: skip
    for rep in range(reps):
        table = analysis.run(_context(rng, n, d, rep)).tables["probing"].set_index("layer")
        noise = table.loc[[f"noise{k}" for k in range(NOISE)]]
        weak = table.loc[[f"weak{k}" for k in range(WEAK)]]
        counts["weak_cover"] += int(((weak.accuracy_ci_low <= truth) & (weak.accuracy_ci_high >= truth)).sum())
        counts["acc_cover"] += int(((noise.accuracy_ci_low <= 0.5) & (noise.accuracy_ci_high >= 0.5)).sum())
        counts["f1_cover"] += int(((noise.macro_f1_ci_low <= 0.5) & (noise.macro_f1_ci_high >= 0.5)).sum())
        counts["p_reject"] += int((noise.p < ALPHA).sum())
        counts["sel_reject"] += int((noise.selectivity_p < ALPHA).sum())
        counts["sel_cover"] += int(((noise.selectivity_ci_low <= 0) & (noise.selectivity_ci_high >= 0)).sum())
        # the analysis corrects over all 7 layers; power is read over the noise and strong layers
        # (Holm over 5, as the analysis would report without the weak layers)
        family = table.loc[[*noise.index, "signal"]]
        counts["acc_power"] += int(adjust_pvalues(family["p"].to_numpy())[-1] < ALPHA)
        counts["sel_power"] += int(adjust_pvalues(family["selectivity_p"].to_numpy())[-1] < ALPHA)
    layers, scenario = NOISE * reps, f"noise layers, n={n}, d={d}, 5-fold"
    common = {"size": size, "scenario": scenario}
    check_rate(counts["acc_cover"], layers, nominal=0.95, kind="coverage", statistic="Probing accuracy CI",
               method="Wilson on n / design effect (permutation null)", **common)
    check_rate(counts["f1_cover"], layers, nominal=0.95, kind="coverage", statistic="Probing macro_f1 CI",
               method="BCa bootstrap widened by sqrt(design effect)", **common)
    check_rate(counts["p_reject"], layers, nominal=ALPHA, kind="null rejection", statistic="Probing accuracy p",
               method="within-fold label permutation, ridge CV accuracy, ties broken by held-out margin", **common)
    check_rate(counts["sel_reject"], layers, nominal=ALPHA, kind="null rejection", statistic="Probing selectivity p",
               method="Nadeau-Bengio corrected resampled t over folds", **common)
    check_rate(counts["sel_cover"], layers, nominal=0.95, kind="coverage", statistic="Probing selectivity CI",
               method="Nadeau-Bengio corrected t interval", **common)
    check_rate(counts["weak_cover"], WEAK * reps, nominal=0.95, kind="coverage", statistic="Probing accuracy CI",
               method="Wilson on n / design effect (permutation null)", size=size,
               scenario=f"weak planted layers (shift {WEAK_SHIFT} sd, accuracy {truth:.3f}), n={n}, d={d}, 5-fold")
    planted = {"size": size, "scenario": f"planted layer (d' = 2.4 on one unit), n={n}, Holm over {NOISE + 1} layers"}
    check_rate(counts["acc_power"], reps, nominal=ALPHA, kind="power", statistic="Probing accuracy p_adj",
               method="within-fold label permutation", minimum=0.9, **planted)
    check_rate(counts["sel_power"], reps, nominal=ALPHA, kind="power", statistic="Probing selectivity p_adj",
               method="Nadeau-Bengio corrected t", minimum=0.8, **planted)


def test_representation_bias_statistics_are_calibrated_on_noise_layers(size: str) -> None:
    rng, reps, n, d = np.random.default_rng(21), REPS[size], 200, 16
    analysis = RepresentationBias("attr", n_permutations=199, weat_column=None)
    truth = _population_accuracy("ridge", n * 4 // 5, d)
    cover = reject = distance_reject = power = weak_cover = 0
    for rep in range(reps):
        table = analysis.run(_context(rng, n, d, rep)).tables["representation_bias"].set_index("layer")
        noise = table.loc[[f"noise{k}" for k in range(NOISE)]]
        weak = table.loc[[f"weak{k}" for k in range(WEAK)]]
        weak_cover += int(((weak.decodability_ci_low <= truth) & (weak.decodability_ci_high >= truth)).sum())
        cover += int(((noise.decodability_ci_low <= 0.5) & (noise.decodability_ci_high >= 0.5)).sum())
        reject += int((noise.decodability_p < ALPHA).sum())
        distance_reject += int((noise.centroid_distance_p < ALPHA).sum())
        power += int(adjust_pvalues(table.loc[[*noise.index, "signal"], "decodability_p"].to_numpy())[-1] < ALPHA)
    layers, common = NOISE * reps, {"size": size, "scenario": f"noise layers, n={n}, d={d}, 5-fold"}
    check_rate(cover, layers, nominal=0.95, kind="coverage", statistic="RepresentationBias decodability CI",
               method="Wilson on n / design effect (permutation null)", **common)
    check_rate(weak_cover, WEAK * reps, nominal=0.95, kind="coverage", statistic="RepresentationBias decodability CI",
               method="Wilson on n / design effect (permutation null)", size=size,
               scenario=f"weak planted layers (shift {WEAK_SHIFT} sd, accuracy {truth:.3f}), n={n}, d={d}, 5-fold")
    check_rate(reject, layers, nominal=ALPHA, kind="null rejection", statistic="RepresentationBias decodability p",
               method="within-fold label permutation, accuracy ties broken by held-out margin", **common)
    check_rate(distance_reject, layers, nominal=ALPHA, kind="null rejection",
               statistic="RepresentationBias centroid_distance p", method="group-label permutation", **common)
    check_rate(power, reps, nominal=ALPHA, kind="power", statistic="RepresentationBias decodability p_adj",
               method="within-fold label permutation", minimum=0.9,
               size=size, scenario=f"planted layer, n={n}, Holm over {NOISE + 1} layers")
