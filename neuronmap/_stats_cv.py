"""Cross-validated accuracies and permutation p-values: their intervals, tests and resolution.

Out-of-fold predictions are not independent trials (Bengio & Grandvalet 2004), so an
accuracy's interval and a comparison of two accuracies need more than the binomial: a Wilson
interval with a design effect (:func:`wilson_interval`), the Nadeau-Bengio corrected
resampled t-test (:func:`corrected_resampled_ttest`). A permutation p-value cannot go below
``1 / (B + 1)``: :func:`permutation_count` chooses ``B`` so that a corrected p can clear
alpha, :func:`sequential_permutation_pvalue` stops early on clear nulls (Besag & Clifford
1991), and :func:`resolution_note` says when the resolution limits a result. Public names are
re-exported by :mod:`neuronmap.stats`; import them from there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

from neuronmap._stats_base import ConfidenceInterval, _sample
from neuronmap.errors import InvalidParameterError

__all__ = [
    "CorrectedTTestResult",
    "corrected_resampled_ttest",
    "permutation_count",
    "resolution_note",
    "sequential_permutation_pvalue",
    "wilson_interval",
]


@dataclass(frozen=True)
class CorrectedTTestResult:
    """Outcome of :func:`corrected_resampled_ttest`."""

    estimate: float
    """Mean of the per-fold values."""
    low: float
    """Lower bound of the corrected-t interval."""
    high: float
    """Upper bound of the corrected-t interval."""
    statistic: float
    """Corrected t statistic of ``mean - null``."""
    pvalue: float
    """Two-sided p-value from Student's t with ``df`` degrees of freedom."""
    df: int
    """Degrees of freedom (folds - 1)."""


def wilson_interval(
    successes: float, n: int, *, confidence: float = 0.95, design_effect: float = 1.0
) -> ConfidenceInterval:
    """Wilson (1927) score interval of a proportion, optionally for correlated trials.

    ``design_effect`` is the ratio of the proportion's actual variance to the binomial
    ``p (1 - p) / n`` (Kish 1965): the interval is the Wilson interval of the same
    proportion observed on ``n / design_effect`` effective trials. Cross-validated accuracy
    needs it, because the held-out predictions of one fold share one fitted model
    (Bengio & Grandvalet 2004); a permutation null gives an estimate (see
    :class:`neuronmap.analyses.probing.Probing`). Computed by
    :func:`statsmodels.stats.proportion.proportion_confint`.

    Args:
        successes: Number of successes (e.g. correct predictions), in ``[0, n]``.
        n: Number of trials, at least 1.
        confidence: Nominal coverage in (0, 1).
        design_effect: Variance inflation, at least 1 (values below 1 are treated as 1:
            the interval is never narrower than the binomial one).

    Returns:
        :class:`ConfidenceInterval` with ``method="wilson"`` and a ``note`` giving the
        design effect when it is above 1.

    Raises:
        InvalidParameterError: ``n < 1``, ``successes`` outside ``[0, n]``, a bad
            confidence or a non-finite design effect.

    Example:
        >>> ci = wilson_interval(240, 300)
        >>> round(ci.low, 3), round(ci.high, 3)
        (0.751, 0.841)
        >>> wilson_interval(240, 300, design_effect=2.0).low < ci.low
        True
    """
    from statsmodels.stats.proportion import proportion_confint

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidParameterError(f"n must be a positive integer; got {n!r}.")
    if not 0.0 <= successes <= n:
        raise InvalidParameterError(f"successes must lie in [0, n={n}]; got {successes!r}.")
    if not 0.0 < confidence < 1.0:
        raise InvalidParameterError(f"confidence must be in (0, 1); got {confidence!r}.")
    if not math.isfinite(design_effect) or design_effect <= 0:
        raise InvalidParameterError(f"design_effect must be a positive number; got {design_effect!r}.")
    deff = max(1.0, float(design_effect))
    n_eff = n / deff
    low, high = proportion_confint(successes / deff, n_eff, alpha=1.0 - confidence, method="wilson")
    note = f"design effect {deff:.2f} (effective n = {n_eff:.0f})" if deff > 1.0 else ""
    return ConfidenceInterval(successes / n, float(low), float(high), confidence, "wilson", note)


def corrected_resampled_ttest(
    values: ArrayLike,
    *,
    test_fraction: float,
    null: float = 0.0,
    confidence: float = 0.95,
    estimate: float | None = None,
) -> CorrectedTTestResult:
    """Nadeau & Bengio's (2003) corrected resampled t-test and interval on per-fold values.

    Fold scores of one cross-validation are correlated (their training sets overlap), so
    the naive variance of their mean is too small (Bengio & Grandvalet 2004). Nadeau &
    Bengio replace ``s^2 / J`` by ``(1 / J + n_test / n_train) s^2`` for ``J`` folds; the
    statistic ``(mean - null) / sqrt(that)`` is referred to Student's t with ``J - 1``
    degrees of freedom (Bouckaert & Frank 2004 for k-fold).

    Args:
        values: One value per fold (e.g. accuracy, or the difference of two accuracies).
        test_fraction: ``n_test / n`` of a fold (``1 / k`` for k-fold).
        null: Value of the mean under the null hypothesis.
        confidence: Coverage of the interval.
        estimate: Centre of the interval, when the overall estimate differs from the mean
            of the folds (pooled out-of-fold predictions with unequal folds).

    Returns:
        :class:`CorrectedTTestResult`. With zero variance over folds the interval has zero
        width and ``pvalue`` is 1 if the mean equals ``null`` and 0 otherwise.

    Raises:
        InvalidParameterError: Fewer than 2 values, or a ``test_fraction`` outside (0, 1).

    Example:
        >>> res = corrected_resampled_ttest([0.1, 0.12, 0.08, 0.11, 0.09], test_fraction=0.2)
        >>> res.pvalue < 0.01, round(res.estimate, 2)
        (True, 0.1)
    """
    v = _sample(values, "values").astype(np.float64)
    if not 0.0 < test_fraction < 1.0:
        raise InvalidParameterError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
    if not 0.0 < confidence < 1.0:
        raise InvalidParameterError(f"confidence must be in (0, 1); got {confidence!r}.")
    j = v.size
    centre = float(v.mean()) if estimate is None else float(estimate)
    se = math.sqrt((1.0 / j + test_fraction / (1.0 - test_fraction)) * float(v.var(ddof=1)))
    if se == 0.0:
        same = math.isclose(centre, null, abs_tol=1e-12)
        return CorrectedTTestResult(centre, centre, centre, 0.0 if same else math.inf,
                                    1.0 if same else 0.0, j - 1)  # fmt: skip
    t = (centre - null) / se
    q = float(scipy.stats.t.ppf(0.5 + confidence / 2, j - 1))
    p = float(2 * scipy.stats.t.sf(abs(t), j - 1))
    return CorrectedTTestResult(centre, centre - q * se, centre + q * se, float(t), p, j - 1)


def permutation_count(n_tests: int, *, alpha: float = 0.05, resolution: float = 10.0) -> int:
    """Permutations needed so that a corrected p-value can fall well below ``alpha``.

    A permutation p-value is at least ``1 / (N + 1)`` (Phipson & Smyth 2010), so after a
    Bonferroni or Holm correction over ``n_tests`` tests the smallest attainable value is
    ``n_tests / (N + 1)``. This returns the smallest ``N`` with
    ``n_tests / (N + 1) <= alpha / resolution``; with :func:`sequential_permutation_pvalue`
    most null tests stop long before ``N``.

    Example:
        >>> permutation_count(12, alpha=0.05)
        2399
    """
    if isinstance(n_tests, bool) or not isinstance(n_tests, (int, np.integer)) or n_tests < 1:
        raise InvalidParameterError(f"n_tests must be a positive integer; got {n_tests!r}.")
    if not 0.0 < alpha < 1.0:
        raise InvalidParameterError(f"alpha must be in (0, 1); got {alpha!r}.")
    return max(1, math.ceil(n_tests * resolution / alpha - 1e-9) - 1)


def resolution_note(
    n_permutations: int, n_tests: int, *, alpha: float = 0.05, what: str = "tests", smallest: float | None = None
) -> str | None:
    """A note when permutation p-values are too coarse for any corrected p-value to reach ``alpha``.

    A permutation p-value is at least ``1 / (N + 1)`` (Phipson & Smyth 2010), so after a Holm or
    Bonferroni correction over ``n_tests`` tests the smallest attainable value is
    ``n_tests / (N + 1)``; when that exceeds ``alpha`` no test can come out significant,
    however strong the effect. Analyses record ``p_resolution = 1 / (N + 1)`` in their tables
    and attach this note.

    Args:
        n_permutations: Permutations behind each p-value.
        n_tests: Tests in the corrected family.
        alpha: Significance level.
        what: What the tests are, for the message ("layers").
        smallest: The smallest attainable p-value when it is not ``1 / (N + 1)`` (e.g.
            ``2 / (N + 1)`` for scipy's two-sided permutation p-values).

    Returns:
        The note, or ``None`` when the resolution does not limit the corrected p-values.

    Example:
        >>> resolution_note(19, 12, what="layers")[:45]
        'p-value resolution: with n_permutations=19 no'
        >>> resolution_note(999, 12) is None
        True
    """
    floor = 1.0 / (n_permutations + 1) if smallest is None else float(smallest)
    if n_permutations < 1 or n_tests < 1 or n_tests * floor <= alpha:
        return None
    return (
        f"p-value resolution: with n_permutations={n_permutations} no p-value is below "
        f"{floor:.3g}, so after correcting over {n_tests} "
        f"{what} none can fall below alpha={alpha}; with n_permutations="
        f"{permutation_count(n_tests, alpha=alpha)} a corrected p-value can reach alpha / 10."
    )


def sequential_permutation_pvalue(
    observed: float, null_batches: Iterable[ArrayLike], *, max_exceedances: int = 10
) -> tuple[float, int]:
    """Sequential Monte Carlo p-value (Besag & Clifford 1991) over batches of null statistics.

    Null statistics are drawn batch by batch; once ``max_exceedances`` of them reach the
    observed value the test stops with ``p = h / n`` (``h`` exceedances among the first
    ``n`` draws, Besag & Clifford's exact p-value), so a clearly null test costs about
    ``h / p`` draws. A test that never reaches ``h`` gets ``(1 + k) / (1 + N)`` over all
    ``N`` draws (Phipson & Smyth 2010). Larger statistics are more extreme.

    Returns:
        ``(p, n)``: the p-value and the number of null statistics drawn.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> p, n = sequential_permutation_pvalue(0.0, (rng.normal(size=100) for _ in range(50)))
        >>> p > 0.2, n < 100  # a null statistic: stops after about 20 draws
        (True, True)
        >>> p, n = sequential_permutation_pvalue(5.0, (rng.normal(size=100) for _ in range(50)))
        >>> round(p, 6), n  # never reached: every draw is used
        (0.0002, 5000)
    """
    if isinstance(max_exceedances, bool) or not isinstance(max_exceedances, int) or max_exceedances < 1:
        raise InvalidParameterError(f"max_exceedances must be a positive integer; got {max_exceedances!r}.")
    tol = 1e-12 * max(1.0, abs(observed))
    hits, drawn = 0, 0
    for batch in null_batches:
        null = np.asarray(batch, dtype=np.float64).ravel()
        reached = null >= observed - tol
        total = hits + int(reached.sum())
        if total >= max_exceedances:
            # the draw at which the h-th exceedance occurred
            stop = int(np.flatnonzero(reached)[max_exceedances - hits - 1]) + 1
            return max_exceedances / (drawn + stop), drawn + stop
        hits, drawn = total, drawn + null.size
    return (1 + hits) / (1 + drawn), drawn
