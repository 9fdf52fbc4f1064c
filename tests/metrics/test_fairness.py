"""Tests for neuronmap.metrics.fairness: fairlearn parity, known answers, CI coverage, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, precision_score

from neuronmap.errors import InvalidParameterError
from neuronmap.metrics import fairness as nf
from neuronmap.stats import ConfidenceInterval

flm = pytest.importorskip("fairlearn.metrics")

SHARED = [
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
    "equal_opportunity_ratio",
]


def _data(seed: int, n: int = 600, n_groups: int = 4) -> dict[str, object]:
    """Random binary task whose predictions depend on y and the group (so rates differ)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_groups, n)
    b = rng.choice(["x", "y"], n)
    y = rng.integers(0, 2, n)
    p = (rng.random(n) < 0.2 + 0.5 * y + 0.05 * a).astype(int)
    return {"y": y, "p": p, "a": a, "b": b, "w": rng.uniform(0.2, 3.0, n)}


def _sensitive(kind: str, d: dict[str, object]) -> object:
    a, b = np.asarray(d["a"]), np.asarray(d["b"])
    return {
        "list": [f"g{v}" for v in a],
        "series": pd.Series(a, name="age_band"),
        "frame": pd.DataFrame({"a": a, "b": b}),
        "array2d": np.column_stack([a, b]),
        "dict": {"a": a, "b": b},
    }[kind]


@pytest.mark.parametrize("kind", ["list", "series", "frame", "array2d", "dict"])
@pytest.mark.parametrize("method", ["between_groups", "to_overall"])
def test_matches_fairlearn_on_random_inputs(method: str, kind: str) -> None:
    seed = ["list", "series", "frame", "array2d", "dict"].index(kind)
    d = _data(seed)
    sf = _sensitive(kind, d)
    weights = d["w"] if seed % 2 else None
    for name in SHARED:
        expected = getattr(flm, name)(
            d["y"], d["p"], sensitive_features=sf, method=method, sample_weight=weights
        )
        got = getattr(nf, name)(
            d["y"], d["p"], sensitive_features=sf, method=method, sample_weight=weights
        )
        assert got == pytest.approx(expected, abs=1e-12), name


@pytest.mark.parametrize("agg", ["worst_case", "mean"])
def test_equalized_odds_agg_matches_fairlearn(agg: str) -> None:
    d = _data(7, n_groups=6)
    for name in ("equalized_odds_difference", "equalized_odds_ratio"):
        expected = getattr(flm, name)(d["y"], d["p"], sensitive_features=d["a"], agg=agg)
        got = getattr(nf, name)(d["y"], d["p"], sensitive_features=d["a"], agg=agg)
        assert got == pytest.approx(expected, abs=1e-12)


def test_error_rate_and_precision_differences_match_metricframe() -> None:
    d = _data(3)
    sf = _sensitive("frame", d)
    frame = flm.MetricFrame(
        metrics={
            "fpr": flm.false_positive_rate,
            "fnr": flm.false_negative_rate,
            "precision": precision_score,
        },
        y_true=d["y"],
        y_pred=d["p"],
        sensitive_features=sf,
    )
    diff = frame.difference()
    assert nf.false_positive_rate_difference(
        d["y"], d["p"], sensitive_features=sf
    ) == pytest.approx(diff["fpr"])
    assert nf.false_negative_rate_difference(
        d["y"], d["p"], sensitive_features=sf
    ) == pytest.approx(diff["fnr"])
    assert nf.predictive_parity_difference(d["y"], d["p"], sensitive_features=sf) == pytest.approx(
        diff["precision"]
    )


def test_group_report_matches_metricframe() -> None:
    d = _data(11)
    sf = _sensitive("frame", d)
    report = nf.fairness_report(
        d["y"], d["p"], sensitive_features=sf, sample_weight=d["w"], n_resamples=50,
        random_state=0,
    )  # fmt: skip
    metrics = {
        "selection_rate": flm.selection_rate,
        "true_positive_rate": flm.true_positive_rate,
        "false_positive_rate": flm.false_positive_rate,
        "false_negative_rate": flm.false_negative_rate,
        "true_negative_rate": flm.true_negative_rate,
        "precision": precision_score,
        "accuracy": accuracy_score,
    }
    frame = flm.MetricFrame(
        metrics=metrics,
        y_true=d["y"],
        y_pred=d["p"],
        sensitive_features=sf,
        sample_params={k: {"sample_weight": d["w"]} for k in metrics},
    )
    pd.testing.assert_frame_equal(report.by_group, frame.by_group[list(metrics)], atol=1e-12)
    pd.testing.assert_series_equal(
        report.overall, frame.overall[list(metrics)], check_names=False, atol=1e-12
    )
    for method in ("between_groups", "to_overall"):
        pd.testing.assert_series_equal(
            report.difference(method), frame.difference(method)[list(metrics)], atol=1e-12
        )
        pd.testing.assert_series_equal(
            report.ratio(method), frame.ratio(method)[list(metrics)], atol=1e-12
        )
    summary = report.summary()
    expected = flm.equalized_odds_difference(
        d["y"], d["p"], sensitive_features=sf, sample_weight=d["w"]
    )
    assert summary.loc["equalized_odds_difference", "estimate"] == pytest.approx(expected)


def test_multiclass_is_one_vs_rest_per_class() -> None:
    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    g = rng.choice(["a", "b", "c"], 500)
    per_class = nf.equalized_odds_difference(y, p, sensitive_features=g, average=None)
    expected = [
        flm.equalized_odds_difference(y == c, p == c, sensitive_features=g) for c in range(3)
    ]
    np.testing.assert_allclose(per_class.to_numpy(), expected, atol=1e-12)
    assert per_class.index.tolist() == [0, 1, 2]
    worst = nf.equalized_odds_difference(y, p, sensitive_features=g)
    macro = nf.equalized_odds_difference(y, p, sensitive_features=g, average="macro")
    assert worst == pytest.approx(max(expected))
    assert macro == pytest.approx(np.mean(expected))
    dp_ratio = nf.demographic_parity_ratio(None, p, sensitive_features=g)
    expected_ratio = [
        flm.demographic_parity_ratio(y, p == c, sensitive_features=g) for c in (0, 1, 2)
    ]
    assert dp_ratio == pytest.approx(min(expected_ratio))
    # pos_label picks one class one-vs-rest
    assert nf.equal_opportunity_difference(
        y, p, sensitive_features=g, pos_label=2
    ) == pytest.approx(flm.equal_opportunity_difference(y == 2, p == 2, sensitive_features=g))


def test_hand_computed_three_groups() -> None:
    # group a: y=[1,1,0,0] p=[1,0,1,0]  TPR 1/2 FPR 1/2 sel 2/4 precision 1/2
    # group b: y=[1,1,1,0] p=[1,1,1,0]  TPR 1   FPR 0   sel 3/4 precision 1
    # group c: y=[1,0,0,0] p=[0,0,0,1]  TPR 0   FPR 1/3 sel 1/4 precision 0
    y = [1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0]
    p = [1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 1]
    g = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert nf.demographic_parity_difference(y, p, sensitive_features=g) == pytest.approx(0.5)
    assert nf.demographic_parity_ratio(y, p, sensitive_features=g) == pytest.approx(1 / 3)
    assert nf.equal_opportunity_difference(y, p, sensitive_features=g) == pytest.approx(1.0)
    assert nf.false_positive_rate_difference(y, p, sensitive_features=g) == pytest.approx(0.5)
    assert nf.equalized_odds_difference(y, p, sensitive_features=g) == pytest.approx(1.0)
    assert nf.equalized_odds_ratio(y, p, sensitive_features=g) == pytest.approx(0.0)
    assert nf.predictive_parity_difference(y, p, sensitive_features=g) == pytest.approx(1.0)
    # overall selection rate is 6/12; the furthest group (b or c) is 1/4 away
    assert nf.demographic_parity_difference(
        y, p, sensitive_features=g, method="to_overall"
    ) == pytest.approx(0.25)
    assert nf.selection_rate(y, p) == pytest.approx(0.5)


def test_invariant_to_row_order_and_group_names() -> None:
    d = _data(2)
    perm = np.random.default_rng(0).permutation(len(d["y"]))
    renamed = np.asarray(["zz", "aa", "mm", "bb"])[np.asarray(d["a"])]
    base = nf.equalized_odds_difference(d["y"], d["p"], sensitive_features=d["a"])
    shuffled = nf.equalized_odds_difference(
        d["y"][perm], d["p"][perm], sensitive_features=renamed[perm]
    )
    assert shuffled == pytest.approx(base, abs=1e-12)


def _ece_reference(y_true: np.ndarray, prob: np.ndarray, n_bins: int) -> float:
    """ECE from scikit-learn's reliability curve, weighting each bin by its share."""
    frac_pos, mean_prob = calibration_curve(y_true, prob, n_bins=n_bins)
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], prob))
    counts = counts[counts > 0]
    return float(np.sum(counts / len(prob) * np.abs(frac_pos - mean_prob)))


def test_calibration_error_matches_sklearn_curve() -> None:
    rng = np.random.default_rng(4)
    prob = rng.random(800)
    y = (rng.random(800) < prob**1.5).astype(int)
    g = rng.choice(["a", "b"], 800)
    for n_bins in (5, 10, 15):
        assert nf.expected_calibration_error(y, prob, n_bins=n_bins) == pytest.approx(
            _ece_reference(y, prob, n_bins)
        )
    by_group = nf.calibration_error_by_group(y, prob, sensitive_features=g)
    for name in ("a", "b"):
        mask = g == name
        assert by_group[name] == pytest.approx(_ece_reference(y[mask], prob[mask], 10))
    diff = nf.calibration_error_difference(y, prob, sensitive_features=g)
    assert diff == pytest.approx(abs(by_group["a"] - by_group["b"]))
    # a perfectly calibrated constant forecaster: every score equals its bin's hit rate
    assert nf.expected_calibration_error([1, 0, 1, 0], [0.5] * 4) == pytest.approx(0.0)


def test_top_label_calibration_error_by_hand() -> None:
    # confidences 0.7 (right), 0.6 (wrong), 0.9 (right), 0.8 (right) in 2 bins [0,.5],(.5,1]
    proba = np.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.05, 0.05, 0.9], [0.1, 0.8, 0.1]])
    y = np.array([0, 0, 2, 1])
    expected = abs(3 - (0.7 + 0.6 + 0.9 + 0.8)) / 4
    assert nf.expected_calibration_error(y, proba, n_bins=2) == pytest.approx(expected)


def test_report_intervals_match_binomial_standard_error() -> None:
    rng = np.random.default_rng(8)
    n = 2000
    g = np.repeat(["a", "b"], n // 2)
    p = (rng.random(n) < np.where(g == "a", 0.3, 0.6)).astype(int)
    report = nf.fairness_report(None, p, sensitive_features=g, n_resamples=4000, random_state=1)
    for name in ("a", "b"):
        rate = report.by_group.loc[name, "selection_rate"]
        half = (report.by_group_ci.loc[name, ("selection_rate", "high")]
                - report.by_group_ci.loc[name, ("selection_rate", "low")]) / 2  # fmt: skip
        assert half == pytest.approx(1.96 * np.sqrt(rate * (1 - rate) / (n // 2)), rel=0.1)


def test_weighted_intervals_match_delta_method_standard_error() -> None:
    # With weights every row is distinct, which exercises the index-resampling path; the
    # weighted mean r = sum(w y) / sum(w) has var ~ sum(w^2 (y - r)^2) / sum(w)^2.
    rng = np.random.default_rng(21)
    n = 3000
    g = np.repeat(["a", "b"], n // 2)
    p = (rng.random(n) < 0.4).astype(int)
    w = rng.exponential(1.0, n)
    report = nf.fairness_report(
        None, p, sensitive_features=g, sample_weight=w, n_resamples=3000, random_state=2
    )
    for name in ("a", "b"):
        m = g == name
        r = np.sum(w[m] * p[m]) / np.sum(w[m])
        se = np.sqrt(np.sum(w[m] ** 2 * (p[m] - r) ** 2)) / np.sum(w[m])
        ci = report.by_group_ci.loc[name, "selection_rate"]
        assert report.by_group.loc[name, "selection_rate"] == pytest.approx(r)
        assert (ci["high"] - ci["low"]) / 2 == pytest.approx(1.96 * se, rel=0.1)


def test_intervals_cover_truth_at_nominal_rate() -> None:
    rng = np.random.default_rng(123)
    rates, n, reps = np.array([0.3, 0.45, 0.6]), 250, 300
    truth = {
        "group": rates[0],
        "overall": rates.mean(),
        "difference": rates.max() - rates.min(),
        "ratio": rates.min() / rates.max(),
    }
    g = np.repeat(["a", "b", "c"], n)
    covered = dict.fromkeys(truth, 0)
    for rep in range(reps):
        p = (rng.random(3 * n) < np.repeat(rates, n)).astype(int)
        r = nf.fairness_report(None, p, sensitive_features=g, n_resamples=400, random_state=rep)
        intervals = {
            "group": r.by_group_ci.loc["a", "selection_rate"],
            "overall": r.overall_ci.loc["selection_rate"],
            "difference": r.difference_ci().loc["selection_rate"],
            "ratio": r.ratio_ci().loc["selection_rate"],
        }
        for key, ci in intervals.items():
            covered[key] += ci["low"] <= truth[key] <= ci["high"]
    # 300 replications: the binomial sd of an observed coverage is about 0.013 at 0.95
    for key, hits in covered.items():
        assert 0.91 <= hits / reps <= 0.985, (key, hits / reps)


def test_report_summary_interval_and_long_table() -> None:
    d = _data(9)
    prob = np.clip(0.25 + 0.5 * d["p"] + 0.1 * np.random.default_rng(0).random(600), 0, 1)
    report = nf.fairness_report(
        d["y"], d["p"], sensitive_features=_sensitive("dict", d), y_score=prob,
        n_resamples=200, random_state=3,
    )  # fmt: skip
    summary = report.summary()
    assert "calibration_error_difference" in summary.index
    assert (summary["low"] <= summary["high"]).all()
    ci = report.interval("demographic_parity_difference")
    assert isinstance(ci, ConfidenceInterval)
    assert ci.estimate == pytest.approx(
        flm.demographic_parity_difference(d["y"], d["p"], sensitive_features=_sensitive("dict", d))
    )
    table = report.to_frame()
    assert set(table["scope"]) == {"overall", "group", "difference", "ratio", "summary"}
    assert len(table[table["scope"] == "group"]) == report.by_group.size
    again = nf.fairness_report(
        d["y"], d["p"], sensitive_features=_sensitive("dict", d), y_score=prob,
        n_resamples=200, random_state=3,
    )  # fmt: skip
    pd.testing.assert_frame_equal(again.by_group_ci, report.by_group_ci)
    with pytest.raises(InvalidParameterError, match=r"has \['demographic_parity_difference'"):
        report.interval("no_such_metric")


def test_small_groups_are_excluded_and_named() -> None:
    d = _data(1, n_groups=3)
    a = np.asarray(d["a"]).astype(object)
    a[:4] = "tiny"
    with pytest.warns(nf.FairnessWarning, match="'tiny': 4"):
        got = nf.demographic_parity_difference(
            d["y"], d["p"], sensitive_features=a, min_group_size=5
        )
    keep = a != "tiny"
    assert got == pytest.approx(
        flm.demographic_parity_difference(d["y"][keep], d["p"][keep], sensitive_features=a[keep])
    )
    report = nf.fairness_report(
        d["y"], d["p"], sensitive_features=a, n_resamples=20, random_state=0
    )
    assert report.excluded_groups == {"tiny": 4}
    assert "tiny" not in report.by_group.index
    assert report.group_sizes["tiny"] == 4
    assert report.overall["selection_rate"] == pytest.approx(np.mean(d["p"]))


def test_single_class_group_gives_nan_with_reason() -> None:
    d = _data(6, n_groups=3)
    y, a = d["y"].copy(), d["a"]
    y[a == 0] = 1
    report = nf.fairness_report(y, d["p"], sensitive_features=a, n_resamples=20, random_state=0)
    assert np.isnan(report.by_group.loc[0, "false_positive_rate"])
    assert "y_true has one class" in report.undefined["false_positive_rate"][0]
    with pytest.warns(nf.FairnessWarning, match="false_positive_rate is undefined for 1 group"):
        got = nf.false_positive_rate_difference(y, d["p"], sensitive_features=a)
    rest = a != 0
    assert got == pytest.approx(
        flm.MetricFrame(
            metrics=flm.false_positive_rate, y_true=y[rest], y_pred=d["p"][rest],
            sensitive_features=a[rest],
        ).difference()
    )  # fmt: skip


def test_bad_input_errors() -> None:
    y, p, g = [0, 1, 1, 0], [0, 1, 0, 0], ["a", "a", "b", "b"]
    with pytest.raises(InvalidParameterError, match="y_true has 3 entries but y_pred has 4"):
        nf.equal_opportunity_difference(y[:3], p, sensitive_features=g)
    with pytest.raises(
        InvalidParameterError, match="sensitive_features has 2 entries but y_pred has 4"
    ):
        nf.demographic_parity_difference(None, p, sensitive_features=g[:2])
    with pytest.raises(InvalidParameterError, match=r"continuous values \(e.g. 0.7\)"):
        nf.equalized_odds_difference(y, [0.7, 0.2, 0.9, 0.1], sensitive_features=g)
    with pytest.raises(InvalidParameterError, match=r"pos_label is required .* \['neg', 'pos'\]"):
        nf.equal_opportunity_difference(["neg", "pos"] * 2, ["pos"] * 4, sensitive_features=g)
    with pytest.raises(InvalidParameterError, match=r"method must be one of .* got 'worst'"):
        nf.demographic_parity_ratio(None, p, sensitive_features=g, method="worst")
    with pytest.raises(InvalidParameterError, match="average must be one of"):
        nf.demographic_parity_ratio(None, p, sensitive_features=g, average="micro")
    with pytest.raises(InvalidParameterError, match="column 'race' has 1 missing values"):
        nf.demographic_parity_difference(
            None, p, sensitive_features={"race": ["a", None, "b", "b"]}
        )
    with pytest.raises(InvalidParameterError, match="equalized_odds_difference needs y_true"):
        nf.equalized_odds_difference(None, p, sensitive_features=g)
    with pytest.raises(InvalidParameterError, match="min_group_size must be an int >= 1; got 0"):
        nf.demographic_parity_difference(None, p, sensitive_features=g, min_group_size=0)
    with pytest.raises(
        InvalidParameterError, match=r"probabilities in \[0, 1\].*got values in \[-2"
    ):
        nf.expected_calibration_error(y, [-2.0, 0.5, 0.5, 3.0])
    with pytest.raises(InvalidParameterError, match="y_score has 3 entries but y_true has 4"):
        nf.calibration_error_by_group(y, [0.1, 0.2, 0.3], sensitive_features=g)
    with pytest.raises(InvalidParameterError, match=r"integer labels 0\.\.n_classes-1"):
        nf.expected_calibration_error([0, 5, 1, 0], np.full((4, 3), 1 / 3))
    with pytest.raises(InvalidParameterError, match="n_resamples must be an int >= 0; got -1"):
        nf.fairness_report(y, p, sensitive_features=g, n_resamples=-1)
    with pytest.raises(
        InvalidParameterError, match=r"confidence_level must be in \(0, 1\); got 95"
    ):
        nf.fairness_report(y, p, sensitive_features=g, confidence_level=95)


def test_no_warning_on_clean_input() -> None:
    d = _data(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nf.fairness_report(
            d["y"], d["p"], sensitive_features=d["a"], n_resamples=50, random_state=0
        )
        nf.equalized_odds_ratio(d["y"], d["p"], sensitive_features=_sensitive("frame", d))
