"""Fairness analysis: end to end, equal to neuronmap.metrics.fairness and fairlearn, planted bias."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fairlearn.metrics import demographic_parity_difference as fl_dpd
from fairlearn.metrics import equalized_odds_difference as fl_eod
from scipy.stats import chi2_contingency
from torch import nn

import neuronmap as nm
from neuronmap.analyses.fairness import Fairness
from neuronmap.errors import AnalysisError, InvalidParameterError, ProbeSetError
from neuronmap.metrics.fairness import fairness_report
from neuronmap.reporters import LocalReporter

KEY = "neuronmap/fairness/{}/{}".format


class GroupKeyed(nn.Module):
    """logit(class 1) = 3 * x0 + bias * x1: x0 carries the label, x1 is the group indicator."""

    def __init__(self, bias: float) -> None:
        super().__init__()
        self.body = nn.Linear(3, 2)
        with torch.no_grad():
            self.body.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [3.0, bias, 0.0]]))
            self.body.bias.copy_(torch.tensor([0.0, -0.5 * bias]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _probe(n: int = 400, *, seed: int = 0, small_group: int = 0) -> nm.ProbeSet:
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    group = rng.integers(0, 2, n)
    x = np.stack([x0, group.astype(float), rng.normal(size=n)], axis=1)
    labels = (x0 + 0.5 * rng.normal(size=n) > 0).astype(int)
    names = np.where(group == 1, "b", "a").astype(object)
    names[:small_group] = "tiny"
    region = np.where(rng.random(n) < 0.5, "north", "south")
    return nm.ProbeSet(torch.tensor(x, dtype=torch.float32), labels=labels,
                       groups={"group": names, "region": region}, name="planted-groups")


def _run(analysis: Fairness, probe: nm.ProbeSet, model: nn.Module, tmp_path=None) -> nm.Report:
    reporters = [LocalReporter(tmp_path, run_name="run")] if tmp_path is not None else []
    monitor = nm.NeuronMap(probe, layers=["body"], analyses=[analysis], reporters=reporters, strict=True)
    return monitor.run(model, step=0)


def _predictions(model: nn.Module, probe: nm.ProbeSet) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        logits = model(probe.inputs["input"])
    return logits.argmax(1).numpy(), torch.softmax(logits.double(), 1)[:, 1].numpy()


def test_values_equal_metrics_module_and_fairlearn_with_figure_and_tables(tmp_path) -> None:
    probe, model = _probe(), GroupKeyed(bias=1.0)
    report = _run(Fairness(["group", ("group", "region")], n_resamples=300), probe, model, tmp_path)
    pred, score = _predictions(model, probe)
    y, group = probe.labels, probe.column("group")
    expected = fairness_report(y, pred, sensitive_features=group, y_score=score, pos_label=1,
                               n_resamples=300, random_state=np.random.default_rng([0, 0])).summary()
    m = report.metrics
    for metric, row in expected.iterrows():
        assert m[KEY("group", metric)] == pytest.approx(row["estimate"], nan_ok=True)
        assert m[KEY("group", metric + "_ci_low")] == pytest.approx(row["low"], nan_ok=True)
    assert m[KEY("group", "demographic_parity_difference")] == pytest.approx(fl_dpd(y, pred, sensitive_features=group))
    assert m[KEY("group", "equalized_odds_difference")] == pytest.approx(fl_eod(y, pred, sensitive_features=group))
    inter = pd.DataFrame({"g": group, "r": probe.column("region")})
    assert m[KEY("group+region", "demographic_parity_difference")] == pytest.approx(
        fl_dpd(y, pred, sensitive_features=inter))
    result = report.results["fairness"]
    assert set(result.tables["by_group"]["attribute"]) == {"group", "group+region"}
    run_dir = tmp_path / "run"
    assert (run_dir / "figures" / "0" / "fairness" / "by_group.png").stat().st_size > 0
    assert (run_dir / "tables" / "0" / "fairness" / "summary.csv").exists()


@pytest.mark.parametrize("test", ["chi2", "permutation"])
def test_planted_group_dependence_is_flagged_after_correction_and_a_fair_model_is_not(test: str) -> None:
    probe = _probe()
    biased = _run(Fairness(["group", "region"], n_resamples=50, test=test), probe, GroupKeyed(bias=3.0)).metrics
    fair = _run(Fairness(["group", "region"], n_resamples=50, test=test), probe, GroupKeyed(bias=0.0)).metrics
    assert biased[KEY("group", "demographic_parity_difference_p_adj")] < 0.05
    assert biased[KEY("group", "equalized_odds_difference_p_adj")] < 0.05
    # region is independent of the logits: its disparity is not significant
    assert biased[KEY("region", "demographic_parity_difference_p_adj")] > 0.05
    for attr in ("group", "region"):
        assert fair[KEY(attr, "demographic_parity_difference_p_adj")] > 0.05
    # a difference and its ratio test the same null hypothesis
    assert biased[KEY("group", "demographic_parity_ratio_p")] == biased[KEY("group", "demographic_parity_difference_p")]


def test_chi2_p_value_equals_scipy_on_the_selection_table() -> None:
    probe, model = _probe(), GroupKeyed(bias=1.0)
    m = _run(Fairness("group", n_resamples=20, metrics=["demographic_parity_difference"]), probe, model).metrics
    pred, _ = _predictions(model, probe)
    table = pd.crosstab(probe.column("group"), pred == 1).to_numpy()
    assert m[KEY("group", "demographic_parity_difference_p")] == pytest.approx(
        chi2_contingency(table, correction=False).pvalue)
    assert KEY("group", "accuracy_difference") not in m


def test_small_groups_are_excluded_and_named() -> None:
    result = _run(Fairness("group", n_resamples=20), _probe(small_group=4), GroupKeyed(1.0)).results["fairness"]
    assert any("tiny" in note and "fewer than 10" in note for note in result.notes)
    assert "tiny" not in set(result.tables["by_group"]["group"])


def test_a_group_with_one_true_class_gets_nan_with_the_reason() -> None:
    probe = _probe()
    labels = probe.labels.copy()
    labels[probe.column("group") == "b"] = 0  # group b has no positive example: its TPR is undefined
    one_class = nm.ProbeSet(probe.inputs["input"], labels=labels, groups={"group": probe.column("group")})
    result = _run(Fairness("group", n_resamples=20), one_class, GroupKeyed(1.0)).results["fairness"]
    assert any("true_positive_rate is NaN for b" in note for note in result.notes)
    by_group = result.tables["by_group"]
    tpr_b = by_group[(by_group["scope"] == "group") & (by_group["metric"] == "true_positive_rate")
                     & (by_group["group"] == "b")]
    assert np.isnan(tpr_b["estimate"]).all()


def test_bad_inputs_raise_clear_errors() -> None:
    probe, model = _probe(), GroupKeyed(1.0)
    with pytest.raises(AnalysisError, match=r"'gender' not found.*it has \[") as info:
        _run(Fairness("gender"), probe, model)
    assert isinstance(info.value.__cause__, ProbeSetError)
    unlabelled = nm.ProbeSet(probe.inputs["input"], groups={"group": probe.column("group")})
    with pytest.raises(AnalysisError, match=r"need true labels.*no 'label' column") as info:
        _run(Fairness("group", metrics=["equalized_odds_difference"]), unlabelled, model)
    assert isinstance(info.value.__cause__, ProbeSetError)
    # without labels only demographic parity is computed
    m = _run(Fairness("group", n_resamples=20), unlabelled, model).metrics
    assert KEY("group", "demographic_parity_difference") in m and KEY("group", "accuracy_difference") not in m
    with pytest.raises(AnalysisError, match="continuous values"):
        _run(Fairness("group", predictions=lambda out: torch.softmax(torch.tensor(out), 1)[:, 1].numpy()),
             probe, model)
    named = nm.ProbeSet(probe.inputs["input"], labels=np.where(probe.labels == 1, "pos", "neg"),
                        groups={"group": probe.column("group")})
    with pytest.raises(AnalysisError, match=r"must hold class indices.*got values like \['"):
        _run(Fairness("group"), named, model)
    with pytest.raises(InvalidParameterError,
                       match=r"Fairness: test must be one of \['chi2', 'permutation'\]; got 't'"):
        Fairness("group", test="t")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"Fairness: metrics must be None or a list of items from \[.*"
                                                    r"'demographic_parity_difference'.*\]; got \['parity'\]"):
        Fairness("group", metrics=["parity"])
    with pytest.raises(InvalidParameterError, match=r"Fairness: sensitive must be a column name or a non-empty list"):
        Fairness([])


def test_callable_predictions_with_threshold() -> None:
    probe, model = _probe(), GroupKeyed(1.0)
    analysis = Fairness("group", n_resamples=20, predictions=lambda out: (out[:, 1] - out[:, 0] > 1.0).astype(int))
    m = _run(analysis, probe, model).metrics
    pred = (_predictions(model, probe)[1] > 1 / (1 + np.exp(-1.0))).astype(int)
    assert m[KEY("group", "demographic_parity_difference")] == pytest.approx(
        fl_dpd(probe.labels, pred, sensitive_features=probe.column("group")))
    assert KEY("group", "calibration_error_difference") not in m  # no scores returned


def test_probe_too_small_for_min_group_size_is_caught_before_training_and_skips_at_run_time() -> None:
    """Every group below min_group_size: preflight names the sizes; a run skips with a note (no reshape crash)."""
    import torch

    from neuronmap.probe import ProbeSet
    from neuronmap.testing import tiny_mlp

    x = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    probe = ProbeSet(x, labels=(x[:, 0] > 0).long().numpy(), groups={"group": ["a", "b"] * 6}, name="small")
    fairness = nm.Fairness("group", n_resamples=20)
    (problem,) = fairness.check_probe(probe)
    assert "at least 2 groups of min_group_size=10" in problem and "{'a': 6, 'b': 6}" in problem
    with pytest.raises(nm.errors.PreflightError, match="min_group_size=10"):
        nm.NeuronMap(probe, layers=["net.0"], analyses=[fairness], reporters=[]).preflight(tiny_mlp())
    monitor = nm.NeuronMap(probe, layers=["net.0"], analyses=[fairness], reporters=[], strict=True)
    result = monitor.run(tiny_mlp(), step=0).results["fairness"]
    assert result.status == "skipped" and any("fewer than 2 groups" in n for n in result.notes)
    assert fairness.check_probe(ProbeSet(x, labels=np.zeros(12, int), groups={"group": ["a", "b"] * 6})) != []
    assert nm.Fairness("group", min_group_size=5).check_probe(probe) == []
