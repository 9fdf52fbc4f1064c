"""Concept vectors: CAVs, TCAV scores and their test, concept directions and vector arithmetic.

Pure functions on activation and gradient arrays ``[n, d]`` (one row per example, one
column per unit of a layer's reduced activation).

References:
    Kim, Wattenberg, Gilmer, Cai, Wexler, Viegas & Sayres (2018). Interpretability Beyond
    Feature Attribution: Quantitative Testing with Concept Activation Vectors (TCAV).
    ICML. Section 3.1 (CAVs), eq. 1 (conceptual sensitivity), eq. 2 (TCAV score),
    section 3.5 (statistical significance testing).
    Crawford & Howell (1998). Comparing an individual's test score against norms derived
    from small samples. The Clinical Neuropsychologist 12(4) (single value vs a sample).
    Mikolov, Yih & Zweig (2013). Linguistic Regularities in Continuous Space Word
    Representations. NAACL (vector offsets, ``a - b + c`` answered by cosine neighbours).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import ArrayLike, NDArray

from neuronmap.errors import InvalidParameterError

__all__ = [
    "CAV",
    "CAV_CLASSIFIERS",
    "analogy_query",
    "centroid_direction",
    "cosine_similarity_table",
    "directional_derivatives",
    "nearest_examples",
    "tcav_random_set_test",
    "tcav_score",
    "tcav_ttest",
    "train_cav",
]

Classifier = Literal["logistic", "sgd", "svm"]
CAV_CLASSIFIERS: tuple[str, ...] = ("logistic", "sgd", "svm")
_MIN_EXAMPLES = 4


@dataclass(frozen=True)
class CAV:
    """A concept activation vector (Kim et al. 2018, section 3.1)."""

    direction: NDArray[np.float64]
    """Unit normal of the concept-vs-random decision boundary, pointing toward the concept,
    in the raw activation space (gradients are taken there)."""
    accuracy: float
    """Accuracy of the linear classifier on held-out examples (a CAV near 0.5 means the
    layer does not separate the concept from random examples)."""


def _matrix(x: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        arr = arr.reshape(arr.shape[0], -1) if arr.ndim > 2 else arr.reshape(1, -1)
    if not np.isfinite(arr).all():
        raise InvalidParameterError(
            f"{name} contains NaN or infinite values; got shape {arr.shape}."
        )
    return arr


def _stratified_split(
    n_pos: int, n_neg: int, test_size: float, rng: np.random.Generator
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    # sklearn's train_test_split costs ~4 ms of input validation per call, more than the
    # liblinear fit itself on CAV-sized data (~3 ms); TCAV fits hundreds of CAVs per run.
    test = np.zeros(n_pos + n_neg, dtype=bool)
    for lo, n in ((0, n_pos), (n_pos, n_neg)):
        k = min(max(1, round(test_size * n)), n - 2)
        test[lo + rng.permutation(n)[:k]] = True
    return ~test, test


def train_cav(
    concept: ArrayLike,
    random: ArrayLike,
    *,
    classifier: Classifier = "logistic",
    test_size: float = 0.33,
    random_state: int | None = 0,
) -> CAV:
    """Train a CAV: a linear classifier separating concept from random activations.

    As in Kim et al.'s reference code (and Captum), the classifier is fit on raw
    activations of a stratified ``1 - test_size`` split and scored on the rest; the CAV is
    its unit weight vector, the normal of the boundary, oriented toward the concept.

    Args:
        concept: Activations of concept examples ``[m, d]``.
        random: Activations of random counterexamples ``[r, d]``.
        classifier: ``"logistic"`` (L2 logistic regression, liblinear), ``"sgd"``
            (SGDClassifier with ``alpha=0.01``, the reference implementation's default) or
            ``"svm"`` (LinearSVC).
        test_size: Held-out fraction for the accuracy, in (0, 1).
        random_state: Seed of the split and the classifier.

    Returns:
        :class:`CAV`.

    Raises:
        InvalidParameterError: Fewer than 4 examples on a side, mismatched widths, or an
            unknown classifier.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> cav = train_cav(rng.normal(0, 1, (60, 5)) + [4, 0, 0, 0, 0], rng.normal(0, 1, (60, 5)))
        >>> bool(cav.direction[0] > 0.9), cav.accuracy > 0.85
        (True, True)
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.svm import LinearSVC

    if classifier not in CAV_CLASSIFIERS:
        raise InvalidParameterError(
            f"classifier must be one of {CAV_CLASSIFIERS}; got {classifier!r}."
        )
    if not 0.0 < test_size < 1.0:
        raise InvalidParameterError(f"test_size must be in (0, 1); got {test_size!r}.")
    pos, neg = _matrix(concept, "concept"), _matrix(random, "random")
    if min(len(pos), len(neg)) < _MIN_EXAMPLES:
        raise InvalidParameterError(
            f"A CAV needs at least {_MIN_EXAMPLES} concept and {_MIN_EXAMPLES} random examples; "
            f"got {len(pos)} and {len(neg)}."
        )
    if pos.shape[1] != neg.shape[1]:
        raise InvalidParameterError(
            f"concept and random widths differ: {pos.shape[1]} vs {neg.shape[1]}."
        )
    x = np.vstack([pos, neg])
    y = np.r_[np.ones(len(pos), dtype=int), np.zeros(len(neg), dtype=int)]
    train, test = _stratified_split(
        len(pos), len(neg), test_size, np.random.default_rng(random_state)
    )
    model = {
        "logistic": lambda: LogisticRegression(solver="liblinear"),
        "sgd": lambda: SGDClassifier(
            alpha=0.01, max_iter=1000, tol=1e-3, random_state=random_state
        ),
        "svm": lambda: LinearSVC(C=1.0, random_state=random_state),
    }[classifier]()
    # Inputs are checked above; skipping scikit-learn's re-validation halves the cost of a
    # CAV, which matters because TCAV fits n_runs x (concepts + n_random) of them per layer.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        model.fit(x[train], y[train])
    raw = np.asarray(model.coef_, dtype=np.float64).ravel()
    predicted = (x[test] @ raw + float(np.ravel(model.intercept_)[0])) > 0
    accuracy = float(np.mean(predicted == (y[test] == 1)))
    norm = float(np.linalg.norm(raw))
    return CAV(direction=raw / norm if norm > 0 else raw, accuracy=accuracy)


def directional_derivatives(gradients: ArrayLike, direction: ArrayLike) -> NDArray[np.float64]:
    """Conceptual sensitivity ``S_{C,k,l}(x) = grad h_{l,k}(f_l(x)) . v_C^l`` (Kim et al. 2018, eq. 1).

    Args:
        gradients: Gradient of the class-``k`` logit with respect to layer ``l``'s
            activations, one row per example ``[n, d]``.
        direction: The CAV ``v_C^l`` ``[d]``.

    Returns:
        ``[n]``.
    """
    grads = _matrix(gradients, "gradients")
    v = np.asarray(direction, dtype=np.float64).ravel()
    if grads.shape[1] != v.size:
        raise InvalidParameterError(
            f"gradients have {grads.shape[1]} columns but the direction has {v.size}."
        )
    return grads @ v


def tcav_score(gradients: ArrayLike, direction: ArrayLike) -> float:
    """``TCAV_Q = |{x in X_k : S_{C,k,l}(x) > 0}| / |X_k|`` (Kim et al. 2018, eq. 2).

    The fraction of class-``k`` examples whose class logit rises when the activation moves
    along the concept direction.

    Example:
        >>> tcav_score([[1.0, 0.0], [-1.0, 0.0], [2.0, 1.0]], [1.0, 0.0])
        0.6666666666666666
    """
    s = directional_derivatives(gradients, direction)
    return float(np.mean(s > 0)) if s.size else float("nan")


def tcav_ttest(scores: ArrayLike, random_scores: ArrayLike) -> tuple[float, float]:
    """Kim et al.'s test: concept TCAV scores vs random-concept TCAV scores, run by run.

    Each run trains one CAV against a fresh random counterexample set; the concept's run
    scores are compared with random-vs-random run scores by a two-sided t-test (Kim et al.
    2018, section 3.5; Welch's unequal-variance form of :func:`scipy.stats.ttest_ind`).
    Because every concept run reuses the *same* concept examples, its scores are
    correlated and this test rejects a random concept more often than ``alpha``; prefer
    :func:`tcav_random_set_test`.

    Returns:
        ``(t, p)``; ``p`` is 1.0 when both samples are constant and equal, 0.0 when both are
        constant and differ (the t statistic is then undefined).
    """
    a = np.asarray(scores, dtype=np.float64)
    b = np.asarray(random_scores, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise InvalidParameterError(
            f"The TCAV t-test needs at least 2 runs per side; got {a.size} and {b.size}."
        )
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return _degenerate(float(a[0]), float(b[0]))
    res = scipy.stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def tcav_random_set_test(score: float, random_scores: ArrayLike) -> tuple[float, float]:
    """Two-sided t-test of one concept's mean TCAV score against random concepts' mean scores.

    Under the null hypothesis the concept's examples are one more random set, so its mean
    score over counterexample runs is one more draw from the distribution of random sets'
    mean scores (each averaged over as many runs). Comparing a single value with a small
    sample uses Crawford & Howell's (1998) t-test, ``t = (x - mean) / (s * sqrt(1 + 1/K))``
    with ``K - 1`` degrees of freedom. Unlike :func:`tcav_ttest` it counts the
    between-set variance, so a random concept is rejected at the nominal rate.

    Reference: Crawford & Howell (1998). Comparing an individual's test score against norms
    derived from small samples. The Clinical Neuropsychologist 12(4), 482-486.

    Args:
        score: The concept's mean TCAV score.
        random_scores: Mean TCAV score of each random concept, ``K >= 2`` values.

    Returns:
        ``(t, p)``.

    Example:
        >>> t, p = tcav_random_set_test(0.95, [0.4, 0.6, 0.5, 0.55, 0.45])
        >>> round(t, 3), round(p, 4)
        (5.196, 0.0065)
    """
    b = np.asarray(random_scores, dtype=np.float64)
    if b.size < 2:
        raise InvalidParameterError(
            f"The random-set test needs at least 2 random concepts; got {b.size}."
        )
    sd = float(b.std(ddof=1))
    if sd == 0:
        return _degenerate(float(score), float(b[0]))
    t = (float(score) - float(b.mean())) / (sd * np.sqrt(1.0 + 1.0 / b.size))
    return float(t), float(2.0 * scipy.stats.t.sf(abs(t), df=b.size - 1))


def _degenerate(a: float, b: float) -> tuple[float, float]:
    if a == b:
        return 0.0, 1.0
    return float(np.sign(a - b) * np.inf), 0.0


def centroid_direction(concept: ArrayLike, reference: ArrayLike) -> NDArray[np.float64]:
    """Unit vector from the reference centroid to the concept centroid.

    The difference-of-means concept direction (a CAV without a classifier; it is the
    direction a linear probe converges to for isotropic classes).
    """
    diff = _matrix(concept, "concept").mean(axis=0) - _matrix(reference, "reference").mean(axis=0)
    norm = float(np.linalg.norm(diff))
    return diff / norm if norm > 0 else diff


def cosine_similarity_table(directions: Mapping[str, ArrayLike]) -> pd.DataFrame:
    """Cosine similarity between every pair of concept directions, as a square DataFrame."""
    names = list(directions)
    mat = np.vstack([np.asarray(directions[n], dtype=np.float64).ravel() for n in names])
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    unit = np.divide(mat, norms, out=np.zeros_like(mat), where=norms > 0)
    return pd.DataFrame(unit @ unit.T, index=names, columns=names)


def analogy_query(a: ArrayLike, b: ArrayLike, c: ArrayLike) -> NDArray[np.float64]:
    """The vector-offset query ``a - b + c`` (Mikolov et al. 2013: king - man + woman)."""
    return (
        np.asarray(a, dtype=np.float64)
        - np.asarray(b, dtype=np.float64)
        + np.asarray(c, dtype=np.float64)
    )


def nearest_examples(
    activations: ArrayLike, query: ArrayLike, *, k: int = 5, exclude: ArrayLike | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The ``k`` examples whose activations have the highest cosine similarity to ``query``.

    Args:
        activations: ``[n, d]``.
        query: ``[d]``.
        k: How many to return.
        exclude: Indices never returned (Mikolov et al. exclude the query's own words).

    Returns:
        ``(indices, cosines)``, best first.
    """
    x = _matrix(activations, "activations")
    q = np.asarray(query, dtype=np.float64).ravel()
    if k < 1:
        raise InvalidParameterError(f"k must be a positive int; got {k}.")
    norms = np.linalg.norm(x, axis=1) * max(float(np.linalg.norm(q)), 1e-12)
    cos = np.divide(x @ q, norms, out=np.zeros(len(x)), where=norms > 0)
    ranked = cos.copy()
    if exclude is not None:
        ranked[np.asarray(exclude, dtype=int)] = -np.inf
    order = np.argsort(-ranked, kind="stable")[: min(k, int(np.isfinite(ranked).sum()))]
    return order.astype(np.int64), cos[order]
