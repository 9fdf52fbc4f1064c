"""Calibration of the ``neuronmap.stats`` helpers (bootstrap, permutation test, corrections)."""

from __future__ import annotations

import numpy as np
from calibration._record import check_rate

from neuronmap.stats import (
    adjust_pvalues,
    bootstrap_ci,
    mcnemar,
    permutation_test,
    sequential_permutation_pvalue,
    wilson_interval,
)

ALPHA = 0.05
REPS = {"fast": 120, "full": 1000}


def _diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis) - y.mean(axis=axis)


def test_bootstrap_bca_covers_the_mean_of_a_skewed_population(size: str) -> None:
    rng, reps, n = np.random.default_rng(1), REPS[size], 60
    covered = 0
    for _ in range(reps):
        ci = bootstrap_ci(np.mean, rng.exponential(1.0, n), n_resamples=999, random_state=rng)
        covered += ci.low <= 1.0 <= ci.high
    check_rate(covered, reps, nominal=0.95, kind="coverage", statistic="stats.bootstrap_ci",
               method="BCa bootstrap", scenario=f"mean of Exp(1), n={n}", size=size)


def test_permutation_test_rejects_at_alpha_and_detects_a_shift(size: str) -> None:
    rng, reps, n = np.random.default_rng(2), REPS[size], 25
    null = power = 0
    for _ in range(reps):
        a, b = rng.normal(0, 1, n), rng.normal(0, 1, n)
        null += permutation_test(_diff, a, b, n_resamples=499, random_state=rng).pvalue < ALPHA
        power += permutation_test(_diff, a + 1.0, b, n_resamples=499, random_state=rng).pvalue < ALPHA
    common = {"statistic": "stats.permutation_test", "method": "two-sample permutation (scipy)", "size": size}
    check_rate(null, reps, nominal=ALPHA, kind="null rejection", scenario=f"two N(0,1) samples, n={n}", **common)
    check_rate(power, reps, nominal=ALPHA, kind="power", scenario=f"shift of 1 sd, n={n}", minimum=0.9, **common)


def test_holm_controls_the_familywise_error_rate(size: str) -> None:
    rng, reps, m = np.random.default_rng(3), 4 * REPS[size], 12
    any_rejected = sum(bool((adjust_pvalues(rng.random(m)) < ALPHA).any()) for _ in range(reps))
    # under the global null with independent tests Holm's FWER is 1 - (1 - alpha/m)^m
    nominal = 1 - (1 - ALPHA / m) ** m
    check_rate(any_rejected, reps, nominal=nominal, kind="null rejection", statistic="stats.adjust_pvalues",
               method="Holm (1979) FWER", scenario=f"{m} independent null tests", size=size)


def test_sequential_permutation_pvalue_is_valid(size: str) -> None:
    rng, reps = np.random.default_rng(4), 4 * REPS[size]
    rejected = 0
    for _ in range(reps):
        observed = rng.normal()
        p, _ = sequential_permutation_pvalue(observed, (rng.normal(size=50) for _ in range(40)))
        rejected += p <= ALPHA
    check_rate(rejected, reps, nominal=ALPHA, kind="null rejection (at most alpha)",
               statistic="stats.sequential_permutation_pvalue",
               method="Besag & Clifford (1991), h=10", scenario="statistic exchangeable with its null", size=size)


def test_wilson_interval_covers_a_binomial_proportion(size: str) -> None:
    rng, reps, n = np.random.default_rng(6), 4 * REPS[size], 300
    covered = sum(
        (ci := wilson_interval(float(rng.binomial(n, 0.8)), n)).low <= 0.8 <= ci.high for _ in range(reps)
    )
    check_rate(covered, reps, nominal=0.95, kind="coverage", statistic="stats.wilson_interval",
               method="Wilson (1927)", scenario=f"Binomial({n}, 0.8)", size=size)


def test_mcnemar_mid_p_rejects_at_alpha_and_the_exact_test_at_most_alpha(size: str) -> None:
    rng, reps, n = np.random.default_rng(7), 4 * REPS[size], 60
    exact = mid = power = 0
    for _ in range(reps):
        a, b = rng.random(n) < 0.8, rng.random(n) < 0.8  # equal accuracy: about 19 discordant pairs
        exact += mcnemar(a, b).pvalue < ALPHA
        mid += mcnemar(a, b, mid_p=True).pvalue < ALPHA
        power += mcnemar(a, rng.random(n) < 0.5, mid_p=True).pvalue < ALPHA
    scenario = f"two classifiers right with probability 0.8 each, n={n}"
    # the exact conditional test is valid and, on a discrete statistic, conservative by design
    check_rate(exact, reps, nominal=ALPHA, kind="null rejection (at most alpha)", statistic="stats.mcnemar",
               method="exact binomial (b + c < 25) / continuity-corrected chi-square", scenario=scenario, size=size)
    check_rate(mid, reps, nominal=ALPHA, kind="null rejection", statistic="stats.mcnemar(mid_p=True)",
               method="mid-p McNemar (Fagerland et al. 2013)", scenario=scenario, size=size)
    check_rate(power, reps, nominal=ALPHA, kind="power", statistic="stats.mcnemar(mid_p=True)",
               method="mid-p McNemar", scenario=f"accuracy 0.8 vs 0.5, n={n}", minimum=0.8, size=size)
