"""neuronmap.stats against known answers, textbook formulas and statsmodels/scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from neuronmap.errors import InvalidParameterError
from neuronmap.stats import (
    PVALUE_METHODS,
    ConfidenceInterval,
    adjust_pvalues,
    bootstrap_ci,
    cles,
    cohens_d,
    hedges_g,
    mcnemar,
    permutation_test,
)


def mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


# --- bootstrap_ci ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bootstrap_ci_covers_known_mean_at_nominal_rate(method):
    rng = np.random.default_rng(0)
    reps, covered = 150, 0
    for _ in range(reps):
        ci = bootstrap_ci(
            np.mean, rng.normal(2.0, 1.0, 40), n_resamples=999, method=method, random_state=rng
        )
        covered += ci.low <= 2.0 <= ci.high
    # 95 % nominal; the bootstrap under-covers slightly at n = 40. 3 binomial SEs is about 0.05.
    assert 0.87 <= covered / reps <= 0.995


def test_bootstrap_ci_unpaired_two_samples_resamples_each_sample():
    rng = np.random.default_rng(1)
    x, y = rng.normal(1.0, 1.0, 120), rng.normal(0.0, 3.0, 45)  # unequal sizes and spreads
    ci = bootstrap_ci(mean_diff, x, y, random_state=0)
    assert isinstance(ci, ConfidenceInterval)
    assert ci.estimate == pytest.approx(x.mean() - y.mean())
    assert ci.method == "bca" and ci.confidence == 0.95 and ci.note == ""
    # width of the normal-theory (Welch) interval: 2 * 1.96 * sqrt(s_x^2/n_x + s_y^2/n_y)
    welch = 2 * 1.96 * np.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    assert ci.high - ci.low == pytest.approx(welch, rel=0.15)


def test_bootstrap_ci_paired_is_narrower_for_correlated_samples():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 5.0, 60)
    y = x + rng.normal(0.3, 0.2, 60)
    paired = bootstrap_ci(mean_diff, x, y, paired=True, random_state=0)
    unpaired = bootstrap_ci(mean_diff, x, y, random_state=0)
    assert paired.low < -0.3 + 0.1 and paired.high > -0.3 - 0.1
    assert (paired.high - paired.low) < 0.1 * (unpaired.high - unpaired.low)


def test_bootstrap_ci_accepts_non_vectorised_statistic():
    x = np.random.default_rng(3).exponential(size=50)
    ci = bootstrap_ci(
        lambda s: float(np.median(s)), x, n_resamples=300, method="percentile", random_state=0
    )
    assert ci.low <= np.median(x) <= ci.high


def test_bootstrap_ci_degenerate_data():
    ci = bootstrap_ci(np.mean, np.full(20, 0.75), random_state=0)
    assert (ci.estimate, ci.low, ci.high, ci.method) == (0.75, 0.75, 0.75, "point")
    assert "identical" in ci.note
    # the median of 19 zeros and one 1 is 0 in every resample
    ci = bootstrap_ci(np.median, np.r_[np.zeros(19), 1.0], random_state=0)
    assert (ci.low, ci.high, ci.method) == (0.0, 0.0, "point")
    # a resample never has more distinct values than the sample: BCa's bias correction is infinite
    x = np.random.default_rng(4).normal(size=30)
    ci = bootstrap_ci(lambda s: float(np.unique(s).size), x, n_resamples=500, random_state=0)
    assert ci.method == "percentile" and "BCa is undefined" in ci.note
    assert np.isfinite([ci.low, ci.high]).all() and ci.low <= ci.high


def test_bootstrap_ci_errors():
    x = np.arange(10.0)
    with pytest.raises(
        InvalidParameterError, match=r"method must be one of \('bca', 'percentile'\); got 'basic'"
    ):
        bootstrap_ci(np.mean, x, method="basic")
    with pytest.raises(InvalidParameterError, match=r"confidence must be in \(0, 1\); got 95"):
        bootstrap_ci(np.mean, x, confidence=95)
    with pytest.raises(
        InvalidParameterError, match=r"n_resamples must be a positive integer; got 0"
    ):
        bootstrap_ci(np.mean, x, n_resamples=0)
    with pytest.raises(InvalidParameterError, match="at least one sample"):
        bootstrap_ci(np.mean)
    with pytest.raises(
        InvalidParameterError, match=r"sample 0 must be one-dimensional; got shape \(2, 5\)"
    ):
        bootstrap_ci(np.mean, x.reshape(2, 5))
    with pytest.raises(InvalidParameterError, match="sample 1 contains NaN"):
        bootstrap_ci(mean_diff, x, np.r_[x[:-1], np.nan])
    with pytest.raises(InvalidParameterError, match=r"equal length; got lengths \[10, 9\]"):
        bootstrap_ci(mean_diff, x, x[:9], paired=True)
    with pytest.raises(InvalidParameterError, match="one finite number"):
        bootstrap_ci(lambda s: np.nan, x)


# --- permutation_test -------------------------------------------------------------------------


def test_permutation_test_exact_known_answers():
    # 20 ways to split 6 values into two groups of 3; [1,2,3] vs [4,5,6] is one of the 2 extremes
    res = permutation_test(mean_diff, [1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert (res.statistic, res.pvalue, res.n_resamples, res.alternative) == (
        -3.0,
        0.1,
        20,
        "two-sided",
    )
    # sign-flip test of 4 positive paired differences: 1 of 16 flips is as large
    res = permutation_test(
        mean_diff,
        [2.0, 3.0, 4.0, 5.0],
        [1.0, 1.0, 1.0, 1.0],
        permutation_type="samples",
        alternative="greater",
    )
    assert res.pvalue == pytest.approx(1 / 16) and res.n_resamples == 16


def test_permutation_test_agrees_with_t_test_on_normal_data():
    rng = np.random.default_rng(5)
    x, y = rng.normal(0.5, 1.0, 40), rng.normal(0.0, 1.0, 40)
    res = permutation_test(mean_diff, x, y, n_resamples=4000, random_state=0)
    assert res.pvalue == pytest.approx(scipy.stats.ttest_ind(x, y).pvalue, abs=0.02)


def test_permutation_test_errors():
    with pytest.raises(
        InvalidParameterError, match=r"permutation_type must be one of .*got 'paired'"
    ):
        permutation_test(mean_diff, [1.0, 2.0], [3.0, 4.0], permutation_type="paired")
    with pytest.raises(InvalidParameterError, match=r"alternative must be one of .*got 'both'"):
        permutation_test(mean_diff, [1.0, 2.0], [3.0, 4.0], alternative="both")


# --- effect sizes ---------------------------------------------------------------------------


def test_effect_sizes_match_textbook_formulas():
    rng = np.random.default_rng(6)
    x, y = rng.normal(1.0, 2.0, 25), rng.normal(0.0, 1.0, 14)
    pooled = np.sqrt(
        ((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2)
    )
    d = (x.mean() - y.mean()) / pooled
    assert cohens_d(x, y) == pytest.approx(d, rel=1e-12)
    assert hedges_g(x, y) == pytest.approx(d * (1 - 3 / (4 * (x.size + y.size) - 9)), rel=1e-12)
    pairs = x[:, None] - y[None, :]
    assert cles(x, y) == pytest.approx(np.mean((pairs > 0) + 0.5 * (pairs == 0)))
    assert cles([1, 2, 2], [2]) == pytest.approx((0 + 0.5 + 0.5) / 3)  # ties count one half
    z = x[:14]
    d_av = (z.mean() - y.mean()) / np.sqrt((z.var(ddof=1) + y.var(ddof=1)) / 2)
    assert cohens_d(z, y, paired=True) == pytest.approx(d_av, rel=1e-12)


def test_effect_size_errors():
    with pytest.raises(InvalidParameterError, match=r"y needs at least 2 values; got 1"):
        cohens_d([1.0, 2.0], [1.0])
    with pytest.raises(InvalidParameterError, match=r"equal length; got 3 and 2"):
        hedges_g([1.0, 2.0, 3.0], [1.0, 2.0], paired=True)


# --- McNemar --------------------------------------------------------------------------------


def test_mcnemar_exact_and_chi_square_match_definitions():
    rng = np.random.default_rng(7)
    a = rng.random(200) < 0.8
    b = np.where(rng.random(200) < 0.15, ~a, a)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    res = mcnemar(a, b)
    assert (res.only_a_correct, res.only_b_correct) == (only_a, only_b)
    assert res.exact == (only_a + only_b < 25)
    exact = mcnemar(a, b, exact=True)
    assert exact.pvalue == pytest.approx(scipy.stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    chi = mcnemar(a.astype(int), b.astype(int), exact=False)
    stat = (abs(only_a - only_b) - 1) ** 2 / (only_a + only_b)
    assert chi.statistic == pytest.approx(stat)
    assert chi.pvalue == pytest.approx(scipy.stats.chi2.sf(stat, df=1))


def test_mcnemar_mid_p_is_the_exact_p_less_the_observed_point_probability():
    # Fagerland, Lydersen & Laake (2013): mid-p = exact two-sided p - P(X = b), X ~ Bin(b + c, 1/2)
    a = np.array([1] * 30 + [1] * 9 + [0] * 3 + [0] * 8, bool)
    b = np.array([1] * 30 + [0] * 9 + [1] * 3 + [0] * 8, bool)
    exact = scipy.stats.binomtest(9, 12, 0.5).pvalue
    assert mcnemar(a, b, mid_p=True).pvalue == pytest.approx(exact - scipy.stats.binom.pmf(9, 12, 0.5))
    assert mcnemar(a, a, mid_p=True).pvalue == 1.0
    assert mcnemar([1, 0], [0, 1], mid_p=True).pvalue == pytest.approx(1.0)  # b = c: capped at 1


def test_mcnemar_without_discordant_pairs_and_errors():
    res = mcnemar([1, 0, 1], [1, 0, 1], exact=False)
    assert (res.pvalue, res.exact, res.only_a_correct, res.only_b_correct) == (1.0, True, 0, 0)
    with pytest.raises(InvalidParameterError, match=r"equal length; got 3 and 2"):
        mcnemar([1, 0, 1], [1, 0])
    with pytest.raises(InvalidParameterError, match=r"correct_b must be boolean or 0/1.*\[0 1 2\]"):
        mcnemar([1, 0, 1], [1, 2, 0])


# --- adjust_pvalues -----------------------------------------------------------------------


@pytest.mark.parametrize("method", PVALUE_METHODS)
def test_adjust_pvalues_equals_statsmodels_without_nan(method):
    p = np.random.default_rng(8).uniform(0, 0.2, 30) ** 2
    expected = multipletests(p, alpha=0.1, method=method)[1]
    np.testing.assert_array_equal(adjust_pvalues(p, method=method, alpha=0.1), expected)


def test_adjust_pvalues_known_answer():
    # Holm (1979) by hand: sorted 0.01, 0.03, 0.04 times 3, 2, 1, then running maximum
    np.testing.assert_allclose(adjust_pvalues([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(
        adjust_pvalues([0.01, 0.04, 0.5], method="bonferroni"), [0.03, 0.12, 1.0]
    )
    ties = np.array([0.02, 0.01, 0.02, 0.5, 0.01, 0.3])  # our Holm (no gc.collect) vs statsmodels
    np.testing.assert_array_equal(adjust_pvalues(ties), multipletests(ties, method="holm")[1])


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "hommel"])
def test_adjust_pvalues_nan_stays_nan_and_is_not_counted(method):
    p = np.array([[0.01, np.nan, 0.2], [np.nan, 0.03, 0.04]])
    out = adjust_pvalues(p, method=method)
    assert out.shape == (2, 3)
    assert np.array_equal(np.isnan(out), np.isnan(p))
    np.testing.assert_array_equal(
        out[~np.isnan(p)], multipletests(p[~np.isnan(p)], method=method)[1]
    )


def test_adjust_pvalues_empty_all_nan_and_pandas():
    assert adjust_pvalues([]).shape == (0,)
    assert adjust_pvalues(np.empty((0, 3))).shape == (0, 3)
    assert np.isnan(adjust_pvalues([np.nan, np.nan])).all()
    series = pd.Series([0.01, np.nan, 0.04], index=["l1", "l2", "l3"], name="p")
    adjusted = adjust_pvalues(series)
    assert isinstance(adjusted, pd.Series) and adjusted.name == "p"
    assert list(adjusted.index) == ["l1", "l2", "l3"] and np.isnan(adjusted["l2"])
    assert adjusted["l3"] == pytest.approx(0.04) and adjusted["l1"] == pytest.approx(0.02)
    frame = pd.DataFrame({"a": [0.01, 0.02], "b": [0.03, np.nan]}, index=["x", "y"])
    out = adjust_pvalues(frame, method="bonferroni")
    assert isinstance(out, pd.DataFrame) and out.loc["x", "b"] == pytest.approx(0.09)


def test_adjust_pvalues_errors():
    with pytest.raises(
        InvalidParameterError, match=r"method must be one of \('bonferroni', .*'lfdr'\); got 'bh'"
    ):
        adjust_pvalues([0.1], method="bh")
    with pytest.raises(
        InvalidParameterError, match=r"p-values must lie in \[0, 1\].*\[1.5, -0.1\]"
    ):
        adjust_pvalues([0.1, 1.5, -0.1])
    with pytest.raises(InvalidParameterError, match=r"alpha must be in \(0, 1\); got 0"):
        adjust_pvalues([0.1], alpha=0)


def test_adjust_pvalues_lfdr_failure_on_ties_is_an_invalid_parameter_error():
    with pytest.raises(InvalidParameterError, match=r"method='lfdr'.*ties.*Use 'fdr_bh'"):
        adjust_pvalues([0.0, 0.0, 0.5], method="lfdr")
