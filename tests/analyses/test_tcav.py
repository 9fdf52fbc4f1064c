"""TCAV: known answers on a model with a planted concept direction, calibration of the test,
gradients against finite differences, and the metric functions against their definitions."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from _synthetic import (
    KEY,
    concept_set,
    key_token_bert,
    key_token_probe,
    planted_mlp,
    planted_probe,
    single_thread,
)

import neuronmap as nm
from neuronmap.analyses.tcav import TCAV, _activations_and_gradients
from neuronmap.errors import InvalidParameterError, NeuronMapWarning, ProbeSetError
from neuronmap.interventions import Node, intervene, logits_of
from neuronmap.metrics.concepts import (
    directional_derivatives,
    tcav_random_set_test,
    tcav_score,
    tcav_ttest,
    train_cav,
)
from neuronmap.reporters import LocalReporter


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _scores(report: nm.Report) -> pd.DataFrame:
    return report.results["tcav"].tables["scores"].set_index(["layer", "concept"])


# ----------------------------------------------------------------------------- metric functions
def test_tcav_score_is_the_fraction_of_positive_directional_derivatives() -> None:
    grads = np.array([[1.0, 2.0], [-3.0, 1.0], [0.5, -0.1], [0.0, 0.0]])
    v = np.array([1.0, 0.0])
    np.testing.assert_allclose(directional_derivatives(grads, v), [1.0, -3.0, 0.5, 0.0])
    assert tcav_score(grads, v) == 0.5  # zero derivative does not count as positive (eq. 2: S > 0)


def test_train_cav_points_toward_the_concept_and_reports_held_out_accuracy() -> None:
    rng = np.random.default_rng(0)
    u = np.zeros(6)
    u[2] = 1.0
    concept = rng.normal(size=(80, 6)) + 3 * u
    random = rng.normal(size=(80, 6))
    for classifier in ("logistic", "sgd", "svm"):
        cav = train_cav(concept, random, classifier=classifier, random_state=0)
        assert cav.direction @ u > 0.9
        assert abs(np.linalg.norm(cav.direction) - 1) < 1e-12
        assert cav.accuracy > 0.8  # Bayes rate Phi(1.5) = 0.93 on ~52 held-out examples
    flipped = train_cav(random, concept, random_state=0)
    assert flipped.direction @ u < -0.9


def test_train_cav_rejects_tiny_sets_and_unknown_classifiers() -> None:
    x = np.zeros((3, 4))
    with pytest.raises(InvalidParameterError, match="at least 4 concept and 4 random examples; got 3 and 3"):
        train_cav(x, x)
    with pytest.raises(InvalidParameterError, match=r"classifier must be one of .*'logistic'.*; got 'tree'"):
        train_cav(np.ones((5, 2)), np.zeros((5, 2)), classifier="tree")  # type: ignore[arg-type]


def test_random_set_test_is_the_two_sample_t_test_with_a_single_observation() -> None:
    # Crawford & Howell's statistic is the pooled two-sample t-test with n1 = 1, whose pooled
    # variance is the controls' variance: t = (x - mean) / (s * sqrt(1 + 1/K)), df = K - 1.
    rng = np.random.default_rng(3)
    controls = rng.normal(0.5, 0.1, 12)
    t, p = tcav_random_set_test(0.8, controls)
    se = controls.std(ddof=1) * np.sqrt(1 + 1 / 12)
    assert t == pytest.approx((0.8 - controls.mean()) / se)
    assert p == pytest.approx(2 * scipy.stats.t.sf(abs(t), df=11))


def test_random_set_test_rejects_at_the_nominal_rate_under_the_null() -> None:
    rng = np.random.default_rng(0)
    pvalues = np.array([tcav_random_set_test(rng.normal(), rng.normal(size=10))[1] for _ in range(4000)])
    assert abs(np.mean(pvalues < 0.05) - 0.05) < 0.012


def test_kim_ttest_matches_welch_and_handles_constant_samples() -> None:
    a, b = np.array([0.9, 1.0, 0.95, 0.85]), np.array([0.4, 0.6, 0.5, 0.55, 0.3])
    t, p = tcav_ttest(a, b)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert tcav_ttest([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0)
    assert tcav_ttest([1.0, 1.0], [0.0, 0.0])[1] == 0.0


# ----------------------------------------------------------------------------- the analysis
def test_planted_concept_is_significant_and_a_random_concept_is_not(tmp_path) -> None:
    model, probe = planted_mlp(), planted_probe()
    tcav = TCAV(
        {"planted": concept_set(shift=3.0, seed=10), "random": concept_set(shift=0.0, seed=11)},
        target=1, layers="net.0", n_runs=5, n_random=10, n_resamples=200,
    )
    reporter = LocalReporter(tmp_path, run_name="tcav")
    monitor = nm.NeuronMap(probe, layers="net.0", analyses=[tcav], reporters=[reporter], strict=True)
    report = monitor.run(model, step=3)
    scores = _scores(report)
    planted, random = scores.loc[("net.0", "planted")], scores.loc[("net.0", "random")]
    assert planted["tcav"] > 0.9 and planted["p_adj"] < 0.01 and planted["significant"]
    assert planted["cav_accuracy"] > 0.8
    assert random["p_adj"] > 0.05 and not random["significant"]
    assert random["cav_accuracy"] < 0.75  # random vs random: near chance
    key = "neuronmap/tcav/net.0/tcav_planted"
    assert report.metrics[key] == pytest.approx(planted["tcav"])
    assert report.metrics[key + "_ci_low"] <= planted["tcav"] <= report.metrics[key + "_ci_high"]
    assert report.metrics[key + "_p_adj"] == pytest.approx(planted["p_adj"])
    monitor.close()
    assert (reporter.run_dir / "figures" / "3" / "tcav" / "scores.png").stat().st_size > 0


def test_false_positive_rate_of_random_concepts_stays_near_nominal() -> None:
    model, probe = planted_mlp(), planted_probe()
    rejected, total = 0, 0
    for seed in range(3):
        concepts = {f"random{i}": concept_set(shift=0.0, seed=1000 * seed + i) for i in range(8)}
        tcav = TCAV(concepts, target=1, layers="net.0", n_runs=4, n_random=8, n_resamples=100)
        report = nm.NeuronMap(probe, layers="net.0", analyses=[tcav], reporters=[], strict=True,
                              random_state=seed).run(model, step=0)
        p = report.results["tcav"].tables["scores"]["p"].to_numpy()
        rejected += int((p < 0.05).sum())
        total += len(p)
    # Expected 0.05 * 24 = 1.2; five or more would put the rate above ~20 %.
    assert total == 24 and rejected <= 4


def test_gradients_are_directional_derivatives_of_the_reduced_activation() -> None:
    # Moving the mean-pooled state by eps * v means adding eps * v to every real token;
    # for "first" only to token 0. Check TCAV's gradients against finite differences.
    model = key_token_bert().model
    probe = key_token_probe(6)
    layer = "bert.encoder.layer.0"
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    eps = 1e-3
    ids = probe.inputs["input_ids"]
    exact = copy.deepcopy(model).double()
    for reduce in ("mean", "first"):
        _, grads = _activations_and_gradients(model, probe, [layer], reduce=reduce, target=1,
                                              eval_mask=np.ones(len(probe), bool), batch_size=4, device=None)

        def shifted(sign: float, reduce: str = reduce) -> torch.Tensor:
            def edit(act: torch.Tensor) -> torch.Tensor:
                delta = torch.zeros_like(act)
                delta[:, 0 if reduce == "first" else slice(None)] = sign * eps * v.double()
                return act + delta

            # in float64: a float32 logit's rounding step over 2 * eps is a few percent of these slopes
            with torch.no_grad(), intervene(exact, {Node(layer): edit}):
                return logits_of(exact(input_ids=ids))[:, 1]

        numeric = ((shifted(1.0) - shifted(-1.0)) / (2 * eps)).numpy()
        np.testing.assert_allclose(grads[layer] @ v.numpy(), numeric, rtol=2e-2, atol=1e-4)


def test_cav_accuracy_tracks_where_the_concept_is_readable(tmp_path) -> None:
    # The [CLS] embedding is the same for every input, so no CAV can read the key token
    # there; after layer 0 has moved it to [CLS], a CAV separates it perfectly.
    model, probe = key_token_bert().model, key_token_probe(48)
    layers = ["bert.embeddings", "bert.encoder.layer.0"]
    tcav = TCAV(["high_key"], target=1, layers=layers, reduce="first", n_runs=3, n_random=3, n_resamples=100)
    report = nm.NeuronMap(probe, layers=layers, reduce="first", analyses=[tcav],
                          reporters=[LocalReporter(tmp_path)], strict=True).run(model, step=0)
    accuracy = report.results["tcav"].tables["scores"].set_index("layer")["cav_accuracy"]
    assert accuracy["bert.embeddings"] <= 0.6
    assert accuracy["bert.encoder.layer.0"] >= 0.95
    assert KEY == 3  # the probe's tag column marks the key token, see _synthetic


def test_tcav_errors_say_what_is_wrong() -> None:
    with pytest.raises(InvalidParameterError, match=r"^TCAV: n_runs must be an int in \[2, inf\); got 1\.$"):
        TCAV(["c"], target=1, n_runs=1)
    with pytest.raises(InvalidParameterError,
                       match=r"^TCAV: test must be one of \['random_sets', 'runs'\]; got 'z'\.$"):
        TCAV(["c"], target=1, test="z")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"^TCAV: target must be an int in \[0, inf\); got -1\.$"):
        TCAV(["c"], target=-1)
    with pytest.raises(InvalidParameterError, match=r"^TCAV: concepts must be named by .*without '/'.*; got 'a/b'\.$"):
        TCAV({"a/b": "c"}, target=1)
    tcav = TCAV(["missing"], target=1, layers="net.0")
    monitor = nm.NeuronMap(planted_probe(), layers="net.0", analyses=[tcav], reporters=[], strict=True)
    with pytest.raises(nm.NeuronMapError, match="Column 'missing' not found"):
        monitor.run(planted_mlp(), step=0)
    with pytest.raises(ProbeSetError):
        from neuronmap.analyses._concept_sets import probe_members

        probe_members(planted_probe(), [0, 500], "c")


def test_interval_is_student_t_over_runs_and_the_runs_test_warns() -> None:
    model, probe = planted_mlp(), planted_probe()
    tcav = TCAV({"random": concept_set(shift=0.0, seed=11)}, target=1, layers="net.0", n_runs=4, n_random=4)
    row = nm.NeuronMap(probe, layers="net.0", analyses=[tcav], reporters=[], strict=True).run(
        model, step=0).results["tcav"].tables["scores"].iloc[0]
    half = scipy.stats.t.ppf(0.975, 3) * row["tcav_std"] / 2.0  # sqrt(4 runs)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((row["tcav"] - half, row["tcav"] + half))
    tcav.confidence = 0.8  # the level of the same t interval
    row = nm.NeuronMap(probe, layers="net.0", analyses=[tcav], reporters=[], strict=True).run(
        model, step=0).results["tcav"].tables["scores"].iloc[0]
    half = scipy.stats.t.ppf(0.9, 3) * row["tcav_std"] / 2.0
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((row["tcav"] - half, row["tcav"] + half))
    with pytest.warns(NeuronMapWarning, match=r"test='runs'\) is Kim et al.'s run-by-run t-test"):
        TCAV({"random": "random"}, target=1, test="runs")
    with pytest.raises(InvalidParameterError,
                       match=r"^TCAV: interval must be one of \['bootstrap', 't'\]; got 'bca'\.$"):
        TCAV({"random": "random"}, target=1, interval="bca")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"^TCAV: confidence must be a float in \(0, 1\); got 95\.$"):
        TCAV({"random": "random"}, target=1, confidence=95)


def test_correction_is_the_deprecated_name_of_p_adjust() -> None:
    with pytest.warns(FutureWarning, match=r"TCAV\(correction=\.\.\.\) is deprecated .* use p_adjust="):
        tcav = TCAV(["c"], target=1, correction="fdr_bh")
    assert tcav.p_adjust == "fdr_bh" and "correction" not in tcav.config()
    with pytest.raises(InvalidParameterError, match="pass p_adjust= only"):
        TCAV(["c"], target=1, correction="holm", p_adjust="holm")


def test_concepts_are_kept_as_given_and_described_in_the_config() -> None:
    stripes = nm.ProbeSet(torch.zeros(5, 2), name="stripes")
    tcav = TCAV({"neg": "has_negation", "stripes": stripes, "first": [0, 1]}, target=1)
    assert tcav.concepts["stripes"] is stripes
    assert tcav.config()["concepts"] == {"neg": "has_negation", "stripes": "ProbeSet 'stripes' of 5 examples",
                                         "first": [0, 1]}
    assert TCAV(["a", "b"], target=1).config()["concepts"] == ["a", "b"]
