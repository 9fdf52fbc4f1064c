"""Input checking, sensitive-group coding and group-wise sufficient statistics.

Every group fairness metric in :mod:`neuronmap.metrics.fairness` is a function of a few
per-group *sums* (examples, predicted positives, actual positives, true positives, and
for calibration the per-bin confidence and hit totals). This module turns raw inputs into
those sums once, so the point estimates and every bootstrap replicate share one code path:

1. :func:`_as_labels` / :func:`_as_weights` validate arrays (labels, not scores; equal
   lengths, both lengths in the message).
2. :func:`_encode_groups` combines one or several sensitive columns into integer group
   codes (intersectional groups are the observed combinations, sorted like pandas
   ``groupby``).
3. :func:`_row_statistics` builds an ``[n, K]`` matrix of per-example contributions and
   :func:`_group_sums` adds it up per group.
4. :func:`_stratified_bootstrap_sums` draws the bootstrap: within each group, resampling
   ``n_g`` rows with replacement makes the multiplicity of every *distinct* row
   multinomial, ``Multinomial(n_g, m_u / n_g)`` (Efron & Tibshirani 1993, ch. 6), so the
   resampled sums are ``draws @ unique_rows``. For label-only inputs a group has at most
   ``C**2`` distinct rows, which makes thousands of resamples cost microseconds.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from neuronmap.errors import InvalidParameterError

__all__: list[str] = []

_STANDARD_BINARY = (frozenset({0, 1}), frozenset({-1, 1}))
# Above this many distinct rows per group, counting resampled indices beats the multinomial.
_MULTINOMIAL_MAX_ROWS = 64


@dataclass(frozen=True)
class _Groups:
    """Integer-coded sensitive groups."""

    codes: np.ndarray
    """``[n]`` group code of every example, in ``range(len(index))``."""
    index: pd.Index
    """Group labels (an ``Index``, or a ``MultiIndex`` for intersectional groups)."""
    sizes: np.ndarray
    """``[G]`` number of examples per group."""

    def key(self, i: int) -> Hashable:
        """Label of group ``i`` with numpy scalars made plain (readable in messages)."""
        value = self.index[i]
        if isinstance(value, tuple):
            return tuple(v.item() if isinstance(v, np.generic) else v for v in value)
        return value.item() if isinstance(value, np.generic) else value


def _as_labels(y: Any, name: str, *, n: int | None = None, reference: str = "y_pred") -> np.ndarray:
    """Return ``y`` as a 1-D label array, rejecting continuous scores."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InvalidParameterError(
            f"{name} must be a 1-D array of class labels; got an array of shape {arr.shape}."
        )
    if arr.size == 0:
        raise InvalidParameterError(f"{name} is empty; at least one example is required.")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            example = arr[np.argmax(bad)].item()
            raise InvalidParameterError(
                f"{name} must hold class labels, but it holds continuous values (e.g. "
                f"{example!r}); threshold scores into labels first, or pass them as y_score "
                "to calibration_error_by_group."
            )
        arr = arr.astype(np.int64)
    _check_length(arr, name, n, reference=reference)
    return arr


def _as_weights(sample_weight: Any, n: int, *, reference: str = "y_pred") -> np.ndarray:
    """Return non-negative float weights (ones when ``sample_weight`` is None)."""
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=float).reshape(-1)
    _check_length(w, "sample_weight", n, reference=reference)
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise InvalidParameterError(
            "sample_weight must be finite and non-negative; got min "
            f"{float(np.nanmin(w))!r} with {int((~np.isfinite(w)).sum())} non-finite values."
        )
    return w


def _check_length(arr: Any, name: str, n: int | None, *, reference: str = "y_pred") -> None:
    if n is not None and len(arr) != n:
        raise InvalidParameterError(
            f"{name} has {len(arr)} entries but {reference} has {n}; every input must have "
            "one entry per example."
        )


def _check_min_group_size(min_group_size: int) -> None:
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int | np.integer):
        raise InvalidParameterError(f"min_group_size must be an int >= 1; got {min_group_size!r}.")
    if min_group_size < 1:
        raise InvalidParameterError(f"min_group_size must be an int >= 1; got {min_group_size}.")


def _sensitive_frame(sensitive_features: Any, n: int, reference: str) -> pd.DataFrame:
    """Turn any supported sensitive-feature container into a DataFrame of columns."""
    if isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features.reset_index(drop=True)
    elif isinstance(sensitive_features, pd.Series):
        name = sensitive_features.name if sensitive_features.name is not None else 0
        frame = pd.DataFrame({name: sensitive_features.to_numpy()})
        if sensitive_features.name is None:
            frame.columns = ["sensitive_feature_0"]
    elif isinstance(sensitive_features, Mapping):
        frame = pd.DataFrame({k: np.asarray(v) for k, v in sensitive_features.items()})
    else:
        arr = np.asarray(sensitive_features, dtype=object)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise InvalidParameterError(
                "sensitive_features must be 1-D, 2-D, a DataFrame or a dict of columns; got "
                f"an array of shape {arr.shape}."
            )
        frame = pd.DataFrame(arr, columns=[f"sensitive_feature_{i}" for i in range(arr.shape[1])])
    if frame.shape[1] == 0:
        raise InvalidParameterError("sensitive_features has no columns; give at least one.")
    _check_length(frame, "sensitive_features", n, reference=reference)
    missing = frame.isna().sum()
    if missing.any():
        col = missing.index[np.argmax(missing.to_numpy() > 0)]
        raise InvalidParameterError(
            f"sensitive_features column {col!r} has {int(missing[col])} missing values; "
            "give them an explicit group label (e.g. 'unknown') so that they are counted."
        )
    return frame


def _encode_groups(sensitive_features: Any, n: int, *, reference: str = "y_pred") -> _Groups:
    """Code the (combined) sensitive groups as integers, sorted like ``groupby``."""
    frame = _sensitive_frame(sensitive_features, n, reference)
    grouped = frame.groupby(list(frame.columns), sort=True, observed=True)
    codes = grouped.ngroup().to_numpy()
    sizes = grouped.size()
    return _Groups(codes=codes, index=sizes.index, sizes=sizes.to_numpy())


def _resolve_classes(
    arrays: Sequence[np.ndarray], pos_label: Hashable | None
) -> tuple[list[Hashable], bool]:
    """Return the classes to evaluate one-vs-rest and whether the task is multiclass.

    ``pos_label=None`` follows fairlearn: labels within {0, 1} or {-1, 1} are binary with
    positive class 1; more than two distinct labels are multiclass (every class in turn);
    any other pair of labels needs an explicit ``pos_label``.
    """
    if pos_label is not None:
        return [pos_label], False
    labels = np.unique(np.concatenate([np.asarray(a) for a in arrays]))
    as_set = frozenset(labels.tolist())
    if any(as_set <= allowed for allowed in _STANDARD_BINARY):
        return [1], False
    if len(labels) > 2:
        return labels.tolist(), True
    raise InvalidParameterError(
        "pos_label is required when labels are not within {0, 1} or {-1, 1}; got labels "
        f"{labels.tolist()!r}. Pass pos_label=<the positive class>."
    )


def _bin_ids(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Uniform-width bin of each confidence, as ``sklearn.calibration.calibration_curve``."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], confidence)


def _row_statistics(
    y_true: np.ndarray | None,
    y_pred: np.ndarray,
    classes: Sequence[Hashable],
    weights: np.ndarray,
    *,
    confidence: np.ndarray | None = None,
    hit: np.ndarray | None = None,
    n_bins: int = 0,
) -> np.ndarray:
    """Per-example contributions to every group sum, ``[n, 2 + 3C + 3B]``.

    Layout: weight, weight x correct, then per evaluated class ``c``: weight x [pred == c],
    weight x [true == c], weight x [both]; then per calibration bin: weight, weight x
    confidence, weight x hit (see :func:`_layout`).
    """
    n = len(y_pred)
    cols = [weights, weights * (y_true == y_pred) if y_true is not None else np.zeros(n)]
    for c in classes:
        pred_c = (y_pred == c).astype(float)
        true_c = (y_true == c).astype(float) if y_true is not None else np.zeros(n)
        cols += [weights * pred_c, weights * true_c, weights * pred_c * true_c]
    if confidence is not None and hit is not None and n_bins > 0:
        onehot = np.eye(n_bins)[_bin_ids(confidence, n_bins)] * weights[:, None]
        cols += list(onehot.T) + list((onehot * confidence[:, None]).T)
        cols += list((onehot * hit[:, None]).T)
    return np.column_stack(cols)


def _layout(n_classes: int, n_bins: int) -> dict[str, Any]:
    """Column positions in the matrix built by :func:`_row_statistics`."""
    base = 2 + 3 * n_classes
    return {
        "n": 0,
        "correct": 1,
        "pred": slice(2, base, 3),
        "true": slice(3, base, 3),
        "tp": slice(4, base, 3),
        "bin_n": slice(base, base + n_bins),
        "bin_conf": slice(base + n_bins, base + 2 * n_bins),
        "bin_hit": slice(base + 2 * n_bins, base + 3 * n_bins),
    }


def _group_sums(stats: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the rows of ``stats`` per group, ``[G, K]``."""
    return np.stack(
        [
            np.bincount(codes, weights=stats[:, k], minlength=n_groups)
            for k in range(stats.shape[1])
        ],
        axis=1,
    )


def _stratified_bootstrap_sums(
    stats: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    *,
    n_resamples: int,
    rng: np.random.Generator,
    max_cells: int = 4_000_000,
) -> np.ndarray:
    """Group sums of ``n_resamples`` bootstrap samples drawn within each group, ``[B, G, K]``.

    Each group keeps its size in every resample (stratified bootstrap), so no group ever
    vanishes from a replicate. A group with few distinct rows (labels only) draws their
    multiplicities from the multinomial directly; one with many (scores, weights) draws row
    indices and counts them, which is the same distribution at a fraction of the cost of
    ``U`` binomial draws per resample. Draws are chunked to keep ``B x n_g`` under
    ``max_cells`` integers.
    """
    out = np.zeros((n_resamples, n_groups, stats.shape[1]))
    for g in range(n_groups):
        rows = stats[codes == g]
        n_g = len(rows)
        if n_g == 0:
            continue
        unique, inverse = _distinct_rows(rows)
        n_unique = len(unique)
        multiplicity = np.bincount(inverse, minlength=n_unique)
        step = max(1, max_cells // n_g)
        for start in range(0, n_resamples, step):
            m = min(n_resamples, start + step) - start
            if n_unique <= _MULTINOMIAL_MAX_ROWS:
                draws = rng.multinomial(n_g, multiplicity / n_g, size=m)
            else:
                picked = inverse[rng.integers(0, n_g, size=(m, n_g))]
                flat = (np.arange(m)[:, None] * n_unique + picked).reshape(-1)
                draws = np.bincount(flat, minlength=m * n_unique).reshape(m, n_unique)
            out[start : start + m, g] = draws.astype(float) @ unique
    return out


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows and, per row, the index of its distinct row.

    A random projection makes this a 1-D sort instead of ``np.unique(axis=0)``'s slow
    row-wise sort; the result is verified exactly and falls back on a collision.
    """
    key = rows @ np.random.default_rng(0).standard_normal(rows.shape[1])
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    unique = rows[first]
    if np.array_equal(unique[inverse], rows):
        return unique, inverse.reshape(-1)
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)
