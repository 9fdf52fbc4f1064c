"""Calibration of Fairness' tests and of the disparity intervals of ``fairness_report``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from calibration._record import check_rate

from neuronmap.analyses.base import AnalysisContext
from neuronmap.analyses.fairness import Fairness
from neuronmap.capture.hooks import Activations
from neuronmap.metrics.fairness import fairness_report
from neuronmap.probe import ProbeSet

ALPHA = 0.05
REPS = {"fast": 80, "full": 1000}
INTERVAL_REPS = {"fast": 100, "full": 1000}


_HYPOTHESES = {"equal_opportunity_difference": "true_positive_rate",
               "false_positive_rate_difference": "false_positive_rate",
               "equalized_odds_difference": "equalized_odds"}


def _run(analysis: Fairness, y: np.ndarray, y_pred: np.ndarray, group: np.ndarray, seed: int) -> dict:
    """The p-value of each metric, from the test ``Fairness.run`` applies to every attribute."""
    codes = np.unique(group, return_inverse=True)[1].astype(np.intp)
    rng = np.random.default_rng(seed)
    return {m: analysis._test(h, codes, y_pred == 1, y == 1, rng) for m, h in _HYPOTHESES.items()}


def test_the_simulated_test_is_the_one_the_analysis_reports() -> None:
    rng = np.random.default_rng(0)
    y, y_pred, group = _data(rng, 200, [0.3, 0.6])
    analysis = Fairness("g", test="chi2", n_resamples=20)
    logits = np.stack([1.0 - y_pred, y_pred.astype(float)], axis=1)
    probe = ProbeSet(torch.zeros(len(y), 1), labels=y, groups={"g": group})
    ctx = AnalysisContext(model=torch.nn.Identity(), probe=probe, step=0, activations=Activations({}, outputs=logits))
    table = analysis.run(ctx).tables["summary"].set_index("metric")
    for metric, p in _run(analysis, y, y_pred, group, seed=0).items():
        assert table.loc[metric, "p"] == pytest.approx(p)


def _data(rng: np.random.Generator, n: int, base_rates: list[float]) -> tuple[np.ndarray, ...]:
    """Predictions depend on the true label only: TPR and FPR are equal across groups."""
    group = rng.integers(0, len(base_rates), n)
    y = rng.random(n) < np.asarray(base_rates)[group]
    y_pred = rng.random(n) < np.where(y, 0.7, 0.2)
    return y.astype(int), y_pred.astype(int), np.array(["abc"[g] for g in group])


@pytest.mark.parametrize("test", ["chi2", "permutation"])
@pytest.mark.parametrize(
    ("scenario", "base_rates"),
    [("2 groups, base rates 0.2 / 0.6", [0.2, 0.6]), ("3 groups, one without positives", [0.3, 0.6, 0.0])],
)
def test_fairness_tests_reject_true_nulls_at_alpha(
    size: str, test: str, scenario: str, base_rates: list[float]
) -> None:
    rng, reps = np.random.default_rng(10), REPS[size]
    analysis = Fairness("g", test=test, n_permutations=199, n_resamples=50, min_group_size=5)
    metrics = ("equal_opportunity_difference", "false_positive_rate_difference", "equalized_odds_difference")
    rejected = dict.fromkeys(metrics, 0)
    for rep in range(reps):
        p = _run(analysis, *_data(rng, 240, base_rates), seed=rep)
        for m in metrics:
            rejected[m] += p[m] < ALPHA
    for m, k in rejected.items():
        check_rate(k, reps, nominal=ALPHA, kind="null rejection", statistic=f"Fairness {m}",
                   method=f"test='{test}'" + (" (within-subset permutation)" if test == "permutation" else ""),
                   scenario=f"n=240, {scenario}", size=size)


@pytest.mark.parametrize("test", ["chi2", "permutation"])
def test_fairness_tests_detect_a_planted_tpr_gap(size: str, test: str) -> None:
    rng, reps = np.random.default_rng(11), REPS[size] // 2
    analysis = Fairness("g", test=test, n_permutations=199, n_resamples=50)
    detected = 0
    for rep in range(reps):
        y, _, group = _data(rng, 400, [0.5, 0.5])
        y_pred = (rng.random(400) < np.where(y == 1, np.where(group == "a", 0.85, 0.6), 0.2)).astype(int)
        detected += _run(analysis, y, y_pred, group, seed=rep)["equal_opportunity_difference"] < ALPHA
    check_rate(detected, reps, nominal=ALPHA, kind="power", statistic="Fairness equal_opportunity_difference",
               method=f"test='{test}'", scenario="n=400, TPR 0.85 vs 0.60", size=size, minimum=0.8)


@pytest.mark.parametrize(
    ("scenario", "rates"),
    [("2 equal groups (0.4)", [0.4, 0.4]), ("3 equal groups (0.4)", [0.4, 0.4, 0.4]),
     ("3 groups 0.3 / 0.45 / 0.6", [0.3, 0.45, 0.6]), ("2 groups 0.4 / 0.5", [0.4, 0.5])],
)  # fmt: skip
def test_disparity_intervals_cover_the_population_gap(size: str, scenario: str, rates: list[float]) -> None:
    rng, reps, n = np.random.default_rng(12), INTERVAL_REPS[size], 200
    r = np.asarray(rates)
    truth = {"demographic_parity_difference": r.max() - r.min(), "demographic_parity_ratio": r.min() / r.max()}
    group = np.repeat(np.arange(len(r)), n)
    covered = dict.fromkeys(truth, 0)
    for rep in range(reps):
        y_pred = (rng.random(len(group)) < r[group]).astype(int)
        summary = fairness_report(None, y_pred, sensitive_features=group, n_resamples=500, random_state=rep).summary()
        for name, value in truth.items():
            covered[name] += summary.loc[name, "low"] <= value <= summary.loc[name, "high"]
    for name, k in covered.items():
        check_rate(k, reps, nominal=0.95, kind="coverage", statistic=f"fairness_report {name} CI",
                   method="max-|t| bootstrap band of pairwise gaps", scenario=f"{scenario}, n={n} per group",
                   size=size)


def test_equalized_odds_interval_covers_zero_for_equal_groups(size: str) -> None:
    rng, reps, n = np.random.default_rng(13), INTERVAL_REPS[size] * 3 // 5, 300
    metrics = ("equalized_odds_difference", "equal_opportunity_difference", "false_positive_rate_difference")
    covered = dict.fromkeys(metrics, 0)
    for rep in range(reps):
        y, y_pred, group = _data(rng, n, [0.5, 0.5])
        summary = fairness_report(y, y_pred, sensitive_features=group, n_resamples=300, random_state=rep).summary()
        for metric in metrics:
            covered[metric] += summary.loc[metric, "low"] <= 0.0
    for metric, k in covered.items():
        method = "max-|t| band over TPR and FPR pairs" if metric == "equalized_odds_difference" else \
            "max-|t| bootstrap band of pairwise gaps"
        check_rate(k, reps, nominal=0.95, kind="coverage", statistic=f"fairness_report {metric} CI",
                   method=method, scenario=f"2 equal groups, n={n}", size=size)
