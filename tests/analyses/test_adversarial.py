"""AdversarialRobustness and the attacks of neuronmap.metrics.adversarial, on known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap.analyses.adversarial import AdversarialRobustness, wilson_interval
from neuronmap.errors import InvalidParameterError
from neuronmap.metrics.adversarial import decisions, fgsm, minimal_flip_radius, pgd
from neuronmap.testing import tiny_bert, tiny_mlp, tiny_probe, tiny_text_probe, tiny_tokenizer


def _logistic(seed: int = 0, d: int = 6) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(d, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.5, -0.5, 2.0, 0.0, -1.0, 0.25]]))
        model.bias.fill_(0.1)
    return model.eval()


def _run(model: nn.Module, probe: nm.ProbeSet, analysis: AdversarialRobustness, layers=("0",)) -> nm.Report:
    return nm.NeuronMap(probe, layers=list(layers), analyses=[analysis], reporters=[]).run(model, step=0)


def _margins(model: nn.Linear, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x)[:, 0].abs().numpy()


@pytest.mark.parametrize("norm, dual", [("linf", 1), ("l2", 2)])
def test_fgsm_on_a_logistic_model_flips_exactly_when_the_margin_is_below_eps_times_the_dual_norm(norm, dual):
    model = _logistic()
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(1))
    w = model.weight[0].detach()
    eps = 0.4
    y = decisions(model(x)[:, 0].detach())
    adv = fgsm(lambda v: model(v)[:, 0], x, y, eps, norm=norm)
    flipped = (decisions(model(adv)[:, 0].detach()) != y).numpy()
    expected = _margins(model, x) < eps * float(w.norm(p=dual))
    assert 0.1 < expected.mean() < 0.9  # both outcomes occur
    np.testing.assert_array_equal(flipped, expected)
    # the whole ball is used: L-inf moves each coordinate by eps, L2 moves the example by eps
    step = (adv - x).abs().amax(dim=1) if norm == "linf" else (adv - x).norm(dim=1)
    torch.testing.assert_close(step, torch.full((400,), eps))


def test_analysis_flip_rate_and_minimal_eps_match_the_closed_form():
    model = nn.Sequential(_logistic())
    probe = nm.ProbeSet(torch.randn(120, 6, generator=torch.Generator().manual_seed(2)))
    x = probe.inputs["input"]
    epsilons = [0.05, 0.2, 0.5]
    report = _run(model, probe, AdversarialRobustness(epsilons, max_examples=None, n_resamples=200,
                                                      max_epsilon=5.0, bisection_steps=16))
    result = report.results["adversarial"]
    table = result.tables["attacks"]
    margins, l1 = _margins(model[0], x), float(model[0].weight.detach().abs().sum())
    for eps in epsilons:
        expected = float((margins < eps * l1).mean())
        for attack in ("fgsm", "pgd"):  # on a linear model PGD cannot do better than the corner
            row = table[(table.attack == attack) & (table.epsilon == eps)].iloc[0]
            assert row.flip_rate == pytest.approx(expected)
            assert row.flip_rate_ci_low <= expected <= row.flip_rate_ci_high
    minimal = result.tables["min_flip_eps"].iloc[0]
    flippable = margins / l1 < 5.0
    assert minimal["flippable"] == flippable.sum()
    assert minimal["mean"] == pytest.approx(float((margins / l1)[flippable].mean()), abs=1e-3)
    key = "neuronmap/adversarial/input/fgsm_linf_flip_rate_eps0.2"
    assert report.metrics[key] == pytest.approx(float((margins < 0.2 * l1).mean()))
    assert {f"{key}_ci_low", f"{key}_p", f"{key}_p_adj"} <= set(report.metrics)


def test_minimal_flip_radius_bisection_recovers_margin_over_l1_norm():
    model = _logistic()
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(3))

    def forward(v: torch.Tensor) -> torch.Tensor:
        return model(v)[:, 0]

    y = decisions(forward(x).detach())
    radii = minimal_flip_radius(lambda r: fgsm(forward, x, y, r.view(-1, 1).float()), forward, y, high=10.0, steps=20)
    np.testing.assert_allclose(radii.numpy(), _margins(model, x) / float(model.weight.detach().abs().sum()), atol=1e-4)


def test_pgd_reaches_at_least_fgsm_on_a_nonlinear_model_and_beats_random_noise():
    model = tiny_mlp(seed=3)
    probe = tiny_probe(n=96, seed=4)
    report = _run(model, probe, AdversarialRobustness([0.05, 0.3], norms=["linf", "l2"], n_resamples=200,
                                                         pgd_steps=5, bisection_steps=3),
                  layers=["net.*"])  # fmt: skip
    table = report.results["adversarial"].tables["attacks"]
    for (norm, eps), part in table.groupby(["norm", "epsilon"]):
        rates = part.set_index("attack")["flip_rate"]
        assert rates["pgd"] >= rates["fgsm"], (norm, eps)
    strong = table[(table.attack == "pgd") & (table.epsilon == 0.3) & (table.norm == "linf")].iloc[0]
    assert strong.flip_rate > strong.random_flip_rate and strong.p_adj < 0.05
    shift = report.results["adversarial"].tables["representation_shift"]
    assert set(shift.layer) == {f"net.{i}" for i in range(5)}
    # the bigger the ball, the further the representation moves and the lower its CKA with the clean one
    at = shift.pivot(index="layer", columns="epsilon", values="rel_shift")
    assert (at[0.3] > at[0.05]).all()
    assert (shift.cka <= 1 + 1e-9).all()


def test_pgd_keeps_the_first_flipping_iterate_inside_the_ball():
    model = tiny_mlp(seed=5)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(6))
    y = decisions(model(x).detach())
    adv = pgd(model, x, y, 0.25, norm="linf", steps=7)
    assert float((adv - x).abs().max()) <= 0.25 + 1e-6
    adv2 = pgd(model, x, y, 0.5, norm="l2", steps=7)
    assert float((adv2 - x).norm(dim=1).max()) <= 0.5 + 1e-5


def test_token_model_is_attacked_in_embedding_space_relative_to_each_token_norm():
    probe = tiny_text_probe(n=16)
    model = tiny_bert(num_labels=2)
    analysis = AdversarialRobustness([0.1], n_resamples=100, text_perturbations=["char_swap", "synonym_swap"],
                                     tokenizer=tiny_tokenizer(), pgd_steps=3, bisection_steps=3)  # fmt: skip
    report = _run(model, probe, analysis, layers=["bert.encoder.layer.*"])
    result = report.results["adversarial"]
    assert result.status == "ok", result.error
    assert result.notes[0].startswith(
        "16 examples attacked in the embeddings space at 'bert.embeddings.word_embeddings'"
    )
    assert set(result.figures) == {"flip_rate", "representation_shift", "text_flip_rate"}
    text = result.tables["text_perturbations"]
    assert set(text.perturbation) == {"char_swap", "synonym_swap"}
    assert ((text.flip_rate >= 0) & (text.flip_rate <= 1)).all()
    assert "neuronmap/adversarial/text/synonym_swap_flip_rate" in report.metrics
    # per-token L2 ball: FGSM moves every real token by exactly eps * its embedding norm
    emb = model.get_input_embeddings()
    ids, mask = probe.inputs["input_ids"][:4], probe.inputs["attention_mask"][:4]
    x = emb(ids).detach()
    y = torch.zeros(4, dtype=torch.long)
    radius = 0.1 * x.norm(dim=-1, keepdim=True)
    adv = fgsm(lambda v: v.sum(dim=(1, 2)), x, y, radius, norm="l2", dims=(-1,), mask=mask.unsqueeze(-1).float())
    moved = (adv - x).norm(dim=-1)
    torch.testing.assert_close(moved[mask.bool()], radius[..., 0][mask.bool()])
    assert float(moved[~mask.bool()].abs().max()) == 0.0


def test_a_model_blind_to_its_input_never_flips():
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x * 0.0)

    report = _run(Constant(), tiny_probe(n=40), AdversarialRobustness([0.5], n_resamples=100, bisection_steps=2),
                  layers=["lin"])
    table = report.results["adversarial"].tables["attacks"]
    assert (table.flip_rate == 0).all() and (table.p == 1).all()
    assert report.results["adversarial"].tables["min_flip_eps"].iloc[0]["unflippable_fraction"] == 1.0


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(8, 10, 0.95)  # Wilson (1927); e.g. Newcombe (1998), table I
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


def test_errors() -> None:
    with pytest.raises(InvalidParameterError, match=r"AdversarialRobustness: epsilons must be a non-empty list of "
                                                    r"positive, finite numbers; got \[0.0\]\."):
        AdversarialRobustness([0.0])
    with pytest.raises(InvalidParameterError, match=r"AdversarialRobustness: attacks must be a non-empty list of "
                                                    r"values from \['fgsm', 'pgd'\]; got \['cw'\]\."):
        AdversarialRobustness(attacks=["cw"])  # type: ignore[list-item]
    with pytest.raises(InvalidParameterError, match=r"AdversarialRobustness: norms must be .* from "
                                                    r"\['linf', 'l2'\]; got \['l1'\]\."):
        AdversarialRobustness(norms="l1")
    with pytest.raises(InvalidParameterError, match=r"AdversarialRobustness: tokenizer must be the probe set's "
                                                    r"tokenizer .*; got None\."):
        AdversarialRobustness(text_perturbations=["char_swap"])
    with pytest.raises(InvalidParameterError, match=r"AdversarialRobustness: pgd_steps must be an int in \[1, inf\); "
                                                    r"got 0\."):
        AdversarialRobustness(pgd_steps=0)
    with pytest.raises(InvalidParameterError, match=r"AdversarialRobustness: max_examples must be None or an int in "
                                                    r"\[2, inf\); got 1\."):
        AdversarialRobustness(max_examples=1)


def test_n_bootstrap_is_the_deprecated_name_of_n_resamples() -> None:
    with pytest.warns(FutureWarning, match=r"AdversarialRobustness\(n_bootstrap=...\) is deprecated .* use "
                                           r"n_resamples= instead"):
        analysis = AdversarialRobustness([0.1], n_bootstrap=50)  # type: ignore[call-arg]
    assert analysis.n_resamples == 50 and not hasattr(analysis, "n_bootstrap")
    assert analysis.config()["n_resamples"] == 50
    with pytest.raises(InvalidParameterError, match="pass n_resamples= only"):
        AdversarialRobustness([0.1], n_bootstrap=50, n_resamples=50)  # type: ignore[call-arg]
