"""Calibration through the analyses themselves: TCAV, CounterfactualBias, NeuronStats, Fairness'
multiclass path and WEAT, each run by ``analysis.run`` (TCAV and CounterfactualBias through a
:class:`NeuronMap` on a model, since they call it) on simulated data.

Each replication is independent (fresh data, and for TCAV one null concept per run: concepts of
one run share the random concepts that form their null, so their p-values are correlated), so
counts of rejections and coverages are binomial.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from _synthetic import concept_set, planted_mlp, planted_probe, single_thread
from calibration._record import check_rate
from torch import nn

import neuronmap as nm
from neuronmap.analyses.base import AnalysisContext
from neuronmap.analyses.counterfactual import CounterfactualBias
from neuronmap.analyses.fairness import Fairness
from neuronmap.analyses.neurons import NeuronStats
from neuronmap.analyses.representation_bias import RepresentationBias
from neuronmap.analyses.tcav import TCAV, _activations_and_gradients
from neuronmap.capture.hooks import Activations
from neuronmap.metrics.concepts import tcav_score, train_cav
from neuronmap.probe import ProbeSet
from neuronmap.testing import WordTokenizer

ALPHA = 0.05


def _context(layers: dict[str, np.ndarray], probe: ProbeSet, seed: int, outputs: np.ndarray | None = None
             ) -> AnalysisContext:  # fmt: skip
    return AnalysisContext(model=nn.Identity(), probe=probe, activations=Activations(layers, outputs=outputs),
                           step=0, random_state=seed)


def _power_floor(size: str) -> float:
    """0.8 at full size; at the fast size (a dozen replications) a power near 0.9 misses 0.8 too
    often by chance, so the smoke check asks for half."""
    return 0.8 if size == "full" else 0.5


# ----------------------------------------------------------------------------- TCAV
def _first_layer(model: nn.Module, probe: ProbeSet) -> np.ndarray:
    inputs = probe.inputs
    x = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    with torch.no_grad():
        return model.net[0](x).numpy()


def test_tcav_through_the_analysis(size: str) -> None:
    """A random concept (40 random inputs) and a planted one (shifted 3 sd along the direction
    the class logit rises) per run. The interval's population value is the expected score of the
    random concept over counterexample draws (what the runs sample), estimated from 100 CAVs."""
    reps = {"fast": 6, "full": 300}[size]
    model, probe = planted_mlp(), planted_probe()
    eval_mask = np.asarray(probe.labels) == 1
    with single_thread():
        _, grads = _activations_and_gradients(model, probe, ["net.0"], reduce="mean", target=1,
                                              eval_mask=eval_mask, batch_size=64, device=None)
        pool = _first_layer(model, probe)
        null = power = covered = 0
        for rep in range(reps):
            concepts = {"random": concept_set(shift=0.0, seed=5000 + rep),
                        "planted": concept_set(shift=3.0, seed=9000 + rep)}  # fmt: skip
            tcav = TCAV(concepts, target=1, layers="net.0", n_runs=5, n_random=10)
            report = nm.NeuronMap(probe, layers="net.0", analyses=[tcav], reporters=[], strict=True,
                                  random_state=rep).run(model, step=0)
            table = report.results["tcav"].tables["scores"].set_index("concept")
            null += table.loc["random", "p"] < ALPHA
            power += table.loc["planted", "p"] < ALPHA
            concept = _first_layer(model, concepts["random"])
            rng = np.random.default_rng(rep)
            truth = np.mean([
                tcav_score(grads["net.0"], train_cav(concept, pool[rng.choice(len(pool), len(concept), replace=False)],
                                                     random_state=i).direction)
                for i in range(100)
            ])  # fmt: skip
            covered += table.loc["random", "ci_low"] <= truth <= table.loc["random", "ci_high"]
    common = {"size": size, "scenario": "planted MLP, random concept of 40 inputs, 5 runs, 10 random concepts"}
    check_rate(null, reps, nominal=ALPHA, kind="null rejection", statistic="TCAV p (random_sets)",
               method="TCAV.run: Crawford & Howell t against random concepts' mean scores", **common)
    check_rate(covered, reps, nominal=0.95, kind="coverage", statistic="TCAV tcav CI",
               method="TCAV.run: Student t over runs", **common)
    check_rate(power, reps, nominal=ALPHA, kind="power", statistic="TCAV p (random_sets)",
               method="TCAV.run: Crawford & Howell t", minimum=0.9, size=size,
               scenario="planted MLP, concept shifted 3 sd along the logit's direction")


# ----------------------------------------------------------------------------- CounterfactualBias
_WORDS = [f"w{k}" for k in range(30)]
_TOKENIZER = WordTokenizer(vocab_size=100_003)


class _Interaction(nn.Module):
    """``logit_1 = 0.5 A V + bias [she]``: ``A = +1`` for "he", ``-1`` for "she"; ``V`` sums random
    weights of the context words. Swapping he <-> she negates ``A V``; with ``A`` a fair coin the
    score changes are symmetric about 0 (independent across texts): no counterfactual bias.
    The planted effect (``bias``, on texts that all say "he") raises the score of "she"."""

    def __init__(self, rng: np.random.Generator, bias: float = 0.0) -> None:
        super().__init__()
        self.a, self.b = nn.Embedding(_TOKENIZER.vocab_size, 1), nn.Embedding(_TOKENIZER.vocab_size, 1)
        with torch.no_grad():
            self.a.weight.zero_()
            self.b.weight.zero_()
            self.a.weight[_TOKENIZER.token_id("he"), 0] = 1.0
            self.a.weight[_TOKENIZER.token_id("she"), 0] = -1.0
            self.b.weight[_TOKENIZER.token_id("she"), 0] = 0.0
            for word in _WORDS:
                self.b.weight[_TOKENIZER.token_id(word), 0] = float(rng.normal())
        self.bias = bias
        self.she = _TOKENIZER.token_id("she")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        a = (self.a(input_ids)[..., 0] * attention_mask).sum(dim=1)
        v = (self.b(input_ids)[..., 0] * attention_mask).sum(dim=1)
        she = ((input_ids == self.she) & attention_mask.bool()).any(dim=1).float()
        logit = 0.5 * a * v + self.bias * she
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def test_counterfactual_bias_through_the_analysis(size: str) -> None:
    rng, reps, n = np.random.default_rng(40), {"fast": 12, "full": 400}[size], 80
    analysis = CounterfactualBias({"gender": [("he", "she")]}, tokenizer=_TOKENIZER, n_resamples=499)
    null = covered = power = 0
    for rep in range(reps):
        for bias in (0.0, 1.2):
            terms = ["he", "she"] if bias == 0 else ["he"]
            texts = [f"{rng.choice(terms)} {' '.join(rng.choice(_WORDS, 3))}" for _ in range(n)]
            probe = ProbeSet.from_texts(texts, _TOKENIZER)
            monitor = nm.NeuronMap(probe, layers=["a"], analyses=[analysis], reporters=[], strict=True,
                                   random_state=rep)
            row = monitor.run(_Interaction(np.random.default_rng(rep), bias), step=0).results[
                "counterfactual_bias"].tables["summary"].iloc[0]
            if bias:
                power += row["mean_delta_score_p"] < ALPHA
            else:
                null += row["mean_delta_score_p"] < ALPHA
                covered += row["mean_delta_score_ci_low"] <= 0.0 <= row["mean_delta_score_ci_high"]
    common = {"size": size, "scenario": f"{n} texts, he/she x random context (symmetric score changes)"}
    check_rate(null, reps, nominal=ALPHA, kind="null rejection", statistic="CounterfactualBias mean_delta_score p",
               method="CounterfactualBias.run: paired sign-flip permutation", **common)
    check_rate(covered, reps, nominal=0.95, kind="coverage", statistic="CounterfactualBias mean_delta_score CI",
               method="CounterfactualBias.run: BCa bootstrap", **common)
    check_rate(power, reps, nominal=ALPHA, kind="power", statistic="CounterfactualBias mean_delta_score p",
               method="CounterfactualBias.run: paired sign-flip permutation", minimum=_power_floor(size), size=size,
               scenario=f"{n} texts saying 'he'; 'she' adds 1.2 to the logit")


# ----------------------------------------------------------------------------- NeuronStats
def test_neuron_stats_through_the_analysis(size: str) -> None:
    rng, reps, n, d = np.random.default_rng(41), {"fast": 10, "full": 100}[size], 90, 50
    analysis = NeuronStats(p_adjust="fdr_bh", top_k=d)
    rejected = tested = any_selective = detected = 0
    for rep in range(reps):
        y = rng.permutation(np.repeat([0, 1, 2], n // 3))
        noise = np.maximum(rng.normal(size=(n, d)), 0.0)  # ReLU units independent of the class
        signal = np.maximum(rng.normal(size=(n, d)), 0.0)
        signal[:, 0] = np.maximum(rng.normal(size=n) + 1.5 * (y == 2), 0.0)
        probe = ProbeSet(torch.zeros(n, 1), labels=y)
        result = analysis.run(_context({"noise": noise, "signal": signal}, probe, rep))
        neurons = result.tables["selective_neurons"].set_index(["layer", "neuron"])
        p = neurons.loc["noise", "p"]
        rejected += int((p < ALPHA).sum())
        tested += int(p.notna().sum())
        any_selective += bool(result.tables["summary"].set_index("layer").loc["noise", "selective_fraction"] > 0)
        detected += neurons.loc[("signal", 0), "p_adj"] < ALPHA
    scenario = f"{d} ReLU units independent of 3 classes, n={n}"
    check_rate(rejected, tested, nominal=ALPHA, kind="null rejection", statistic="NeuronStats per-neuron p",
               method="NeuronStats.run: Kruskal-Wallis (scipy)", scenario=scenario, size=size)
    # under the global null the FDR is the familywise rate, and Benjamini-Hochberg on independent
    # p-values gives exactly alpha (Simes 1986)
    check_rate(any_selective, reps, nominal=ALPHA, kind="null rejection",
               statistic="NeuronStats selective_fraction > 0", method="NeuronStats.run: BH over the layer's units",
               scenario=scenario, size=size)
    check_rate(detected, reps, nominal=ALPHA, kind="power", statistic="NeuronStats per-neuron p_adj",
               method="NeuronStats.run: Kruskal-Wallis, BH", minimum=0.8, size=size,
               scenario=f"one unit shifted 1.5 sd for one class, n={n}, BH over {d} units")


# ----------------------------------------------------------------------------- Fairness, multiclass
def _multiclass(rng: np.random.Generator, n: int, tpr_b: float = 0.7) -> tuple[np.ndarray, ...]:
    """Three classes, positive class 2; group class mixes differ. P(pred 2 | y) is 0.7 for y = 2
    (``tpr_b`` in group b) and 0.15 for either other class, so FPR and TPR are equal across groups
    under the default; the rest of the predictions split evenly between classes 0 and 1."""
    group = rng.choice(np.array(["a", "b", "c"]), n)
    mix = {"a": [0.5, 0.3, 0.2], "b": [0.2, 0.3, 0.5], "c": [0.3, 0.4, 0.3]}
    y = np.array([rng.choice(3, p=mix[g]) for g in group])
    p2 = np.where(y == 2, np.where(group == "b", tpr_b, 0.7), 0.15)
    pred = np.where(rng.random(n) < p2, 2, rng.integers(0, 2, n))
    logits = np.eye(3)[pred] * 3.0
    return y, group, logits


def test_fairness_multiclass_tests_through_the_analysis(size: str) -> None:
    rng, reps, n = np.random.default_rng(42), {"fast": 6, "full": 300}[size], 300
    metrics = ("equal_opportunity_difference", "false_positive_rate_difference", "equalized_odds_difference")
    for test in ("chi2", "permutation"):
        analysis = Fairness("g", test=test, positive_label=2, n_permutations=199, n_resamples=20, min_group_size=5,
                            metrics=list(metrics))  # fmt: skip
        rejected, power = dict.fromkeys(metrics, 0), 0
        for rep in range(reps):
            for tpr_b in (0.7, 0.4):
                y, group, logits = _multiclass(rng, n if tpr_b == 0.7 else 2 * n, tpr_b)
                probe = ProbeSet(torch.zeros(len(y), 1), labels=y, groups={"g": group})
                summary = analysis.run(_context({}, probe, rep, outputs=logits)).tables["summary"].set_index("metric")
                if tpr_b == 0.7:
                    for m in metrics:
                        rejected[m] += summary.loc[m, "p"] < ALPHA
                else:
                    power += summary.loc["equal_opportunity_difference", "p"] < ALPHA
        for m, k in rejected.items():
            check_rate(k, reps, nominal=ALPHA, kind="null rejection", statistic=f"Fairness {m} (multiclass)",
                       method=f"Fairness.run, test='{test}', positive_label=2 of 3 classes", size=size,
                       scenario=f"n={n}, 3 groups with different class mixes")
        check_rate(power, reps, nominal=ALPHA, kind="power",
                   statistic="Fairness equal_opportunity_difference (multiclass)",
                   method=f"Fairness.run, test='{test}'", minimum=_power_floor(size), size=size,
                   scenario=f"n={2 * n}, TPR of class 2: 0.40 in one group, 0.70 in the others")


def test_fairness_multiclass_tests_at_a_larger_size(size: str) -> None:
    """The same simulation through the test ``Fairness.run`` applies to each (attribute, rate)
    (``Fairness._test``; ``test_fairness_calibration.py`` checks it is the reported one), at a size
    the run, which also bootstraps intervals and draws a figure, cannot afford."""
    rng, reps, n = np.random.default_rng(44), {"fast": 100, "full": 3000}[size], 300
    hypotheses = {"equal_opportunity_difference": "true_positive_rate",
                  "false_positive_rate_difference": "false_positive_rate",
                  "equalized_odds_difference": "equalized_odds"}  # fmt: skip
    for test in ("chi2", "permutation"):
        analysis = Fairness("g", test=test, positive_label=2, n_permutations=199)
        rejected = dict.fromkeys(hypotheses, 0)
        for _ in range(reps):
            y, group, logits = _multiclass(rng, n)
            codes = np.unique(group, return_inverse=True)[1].astype(np.intp)
            for metric, hyp in hypotheses.items():
                rejected[metric] += analysis._test(hyp, codes, logits.argmax(axis=1) == 2, y == 2, rng) < ALPHA
        for metric, k in rejected.items():
            check_rate(k, reps, nominal=ALPHA, kind="null rejection", statistic=f"Fairness {metric} (multiclass)",
                       method=f"test='{test}', positive_label=2 of 3 classes (Fairness._test)", size=size,
                       scenario=f"n={n}, 3 groups with different class mixes")


# ----------------------------------------------------------------------------- WEAT
def test_weat_through_representation_bias(size: str) -> None:
    """Eight words per target and attribute set; null: the embeddings carry no association."""
    rng, reps, d = np.random.default_rng(43), {"fast": 30, "full": 1000}[size], 16
    analysis = RepresentationBias("attr", n_permutations=999, min_group_size=5)
    tags = np.repeat(["target_x", "target_y", "attr_a", "attr_b"], 8)
    null = power = 0
    for rep in range(reps):
        probe = ProbeSet(torch.zeros(len(tags), 1), groups={"attr": np.tile(["u", "v"], 16)},
                         metadata={"weat": tags})
        base = rng.normal(size=(len(tags), d))
        planted = base.copy()
        direction = rng.normal(size=d)
        planted[tags == "target_x"] += 0.8 * direction  # X moves toward A, Y toward B
        planted[tags == "attr_a"] += 0.8 * direction
        planted[tags == "target_y"] -= 0.8 * direction
        planted[tags == "attr_b"] -= 0.8 * direction
        table = analysis.run(_context({"null": base, "planted": planted}, probe, rep)).tables["representation_bias"]
        weat = table[table["attribute"] == "weat"].set_index("layer")
        null += weat.loc["null", "weat_effect_size_p"] < ALPHA
        power += weat.loc["planted", "weat_effect_size_p"] < ALPHA
    scenario = f"8 words per set, d={d}, random embeddings"
    check_rate(null, reps, nominal=ALPHA, kind="null rejection", statistic="RepresentationBias weat_effect_size p",
               method="RepresentationBias.run: Caliskan et al. (2017) one-sided re-partition test", scenario=scenario,
               size=size)
    check_rate(power, reps, nominal=ALPHA, kind="power", statistic="RepresentationBias weat_effect_size p",
               method="RepresentationBias.run: Caliskan et al. (2017)", minimum=0.9, size=size,
               scenario=f"8 words per set, d={d}, X and A shifted 0.8 sd along one direction, Y and B against it")


def test_equalised_class_mix_is_what_the_multiclass_null_needs() -> None:
    # FPR of the positive class pools the other classes; the simulated null is a null only because
    # P(pred = 2 | y) is the same for both of them (otherwise groups' class mixes would move FPR).
    rng = np.random.default_rng(0)
    y, group, logits = _multiclass(rng, 30_000)
    frame = pd.DataFrame({"y": y, "g": group, "hit": logits.argmax(axis=1) == 2})
    fpr = frame[frame.y != 2].groupby("g")["hit"].mean()
    assert float(fpr.max() - fpr.min()) < 0.02
