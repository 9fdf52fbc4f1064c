"""ActivationPatching and the intervention machinery.

Known answers: on the key-token BERT, clean/corrupted pairs differ only at position KEY, so
patching the embeddings there restores everything, and after layer 0 only [CLS] carries
the answer; the dead layer-1 heads have exactly zero effect. Attribution patching is
exact where the metric is linear in the patched activation (the input of a linear
read-out).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _synthetic import (  # noqa: F401  (one_thread: the module-wide single-thread fixture)
    BLOCKS,
    HEADS,
    KEY,
    SEQ_LEN,
    key_token_bert,
    key_token_pairs,
    one_thread,
)

import neuronmap as nm
from neuronmap.analyses.patching import ActivationPatching
from neuronmap.errors import InvalidParameterError, LayerNotFoundError
from neuronmap.interventions import Node, intervene, record, resolve_nodes
from neuronmap.metrics.patching import (
    attribution_patching_effect,
    indirect_effect,
    logit_difference,
    normalized_effect,
    rank_agreement,
)
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp


def _run(model: torch.nn.Module, probe: nm.ProbeSet, analysis: nm.Analysis, *, layer: str) -> nm.Report:
    """Run one analysis through the engine (``layer`` is what the monitor itself captures)."""
    return nm.NeuronMap(probe, layers=layer, analyses=[analysis], reporters=[], strict=True).run(model, step=1)


@pytest.fixture(scope="module")
def denoised(tmp_path_factory: pytest.TempPathFactory) -> tuple[nm.Report, LocalReporter]:
    reporter = LocalReporter(tmp_path_factory.mktemp("patching"), run_name="bert")
    patching = ActivationPatching(layers=BLOCKS, heads=HEADS, n_resamples=200)
    monitor = nm.NeuronMap(key_token_pairs(16), layers="bert.embeddings", analyses=[patching],
                           reporters=[reporter], strict=True)
    report = monitor.run(key_token_bert().model, step=2)
    monitor.close()
    return report, reporter


def _positions(report: nm.Report) -> dict[str, np.ndarray]:
    table = report.results["activation_patching"].tables["positions"]
    return {node: sub.sort_values("position")["effect"].to_numpy() for node, sub in table.groupby("node")}


# ----------------------------------------------------------------------------- known answers
def test_denoising_peaks_at_the_key_token_then_at_cls(denoised) -> None:
    report, _ = denoised
    pos = _positions(report)
    assert pos["bert.embeddings"][KEY] == pytest.approx(1.0, abs=1e-4)
    for block in BLOCKS[1:]:
        assert pos[block][0] == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(np.delete(pos["bert.embeddings"], KEY), 0.0, atol=1e-4)
    for block in BLOCKS[1:]:
        np.testing.assert_allclose(pos[block][1:], 0.0, atol=0.01)
    m = report.metrics
    assert m["neuronmap/activation_patching/bert.embeddings/peak_position"] == KEY
    assert m["neuronmap/activation_patching/bert.encoder.layer.1/peak_position"] == 0
    for block in BLOCKS:  # patching the whole state restores everything
        assert m[f"neuronmap/activation_patching/{block}/patch_effect"] == pytest.approx(1.0, abs=0.01)


def test_dead_heads_have_no_effect_and_live_heads_do(denoised) -> None:
    report, _ = denoised
    m = report.metrics
    for head in (0, 1):
        dead = f"neuronmap/activation_patching/bert.encoder.layer.1.attention.output.dense/head_{head}/patch_effect"
        assert m[dead] == 0.0
    live = [m[f"neuronmap/activation_patching/bert.encoder.layer.0.attention.output.dense/head_{h}/patch_effect"]
            for h in (0, 1)]
    assert max(live) > 0.2
    prefix = "neuronmap/activation_patching/model"
    assert m[f"{prefix}/logit_diff_clean"] > 0 > m[f"{prefix}/logit_diff_corrupted"]
    assert -1.0 <= m["neuronmap/activation_patching/model/attribution_spearman"] <= 1.0


def test_heatmap_and_tables_are_in_the_run_folder(denoised) -> None:
    _, reporter = denoised
    for name in ("heatmap", "effects"):
        assert (reporter.run_dir / "figures" / "2" / "activation_patching" / f"{name}.png").stat().st_size > 1000
    assert any((reporter.run_dir / "tables" / "2" / "activation_patching").glob("positions*"))


def test_noising_the_cls_state_after_layer_0_destroys_the_answer() -> None:
    patching = ActivationPatching(layers=BLOCKS[1:], direction="noising", attribution=False, n_resamples=100)
    report = _run(key_token_bert().model, key_token_pairs(8), patching, layer="bert.embeddings")
    pos = _positions(report)
    assert pos["bert.encoder.layer.0"][0] == pytest.approx(1.0, abs=0.01)
    assert abs(pos["bert.encoder.layer.0"][KEY]) < 0.01  # nothing reads position KEY after layer 0
    assert "neuronmap/activation_patching/model/attribution_pearson" not in report.metrics


def test_attribution_patching_is_exact_for_the_input_of_a_linear_readout() -> None:
    torch.manual_seed(0)
    x = torch.randn(20, 8)
    x[1::2] = x[0::2] + torch.randn(10, 8)
    partner = [i + 1 if i % 2 == 0 else -1 for i in range(20)]
    probe = nm.ProbeSet(x, labels=[1, 0] * 10, metadata={"partner": partner})
    patching = ActivationPatching(pairs="partner", layers=["net.3", "net.1"], per_position=False, n_resamples=100)
    report = _run(tiny_mlp(), probe, patching, layer="net.1")
    effects = report.results["activation_patching"].tables["effects"].set_index("node")
    # The logit difference is linear in net.3's output (net.4 is the linear read-out).
    assert effects.loc["net.3", "attribution"] == pytest.approx(effects.loc["net.3", "effect"], rel=1e-5)
    assert effects.loc["net.3", "effect"] == pytest.approx(1.0, abs=1e-5)
    assert effects.loc["net.1", "effect"] == pytest.approx(1.0, abs=1e-5)


# ----------------------------------------------------------------------------- metric functions
def test_patching_metrics_follow_their_definitions() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    np.testing.assert_allclose(logit_difference(logits, torch.tensor([0, 1]), torch.tensor([2, 0])), [3.0, 3.0])
    assert normalized_effect([1.0, 2.0], clean=[3.0, 3.0], corrupted=[-1.0, -1.0]) == pytest.approx(0.625)
    assert np.isnan(normalized_effect([1.0], clean=[2.0], corrupted=[2.0]))
    np.testing.assert_allclose(indirect_effect([0.9, 0.5], [0.2, 0.5]), [0.7, 0.0])
    delta, grad = torch.ones(2, 3, 4), torch.full((2, 3, 4), 0.5)
    np.testing.assert_allclose(attribution_patching_effect(delta, grad, sum_dims=2), [6.0, 6.0])
    assert attribution_patching_effect(delta, grad).shape == (2, 3)
    agreement = rank_agreement([1, 2, 3, 4], [2, 4, 6, 9])
    assert agreement["spearman"] == pytest.approx(1.0) and 0.98 < agreement["pearson"] < 1.0
    with pytest.raises(InvalidParameterError, match=r"sum_dims must be in \[1, 2\]; got 3"):
        attribution_patching_effect(torch.ones(2, 2, 2), torch.ones(2, 2, 2), sum_dims=3)


# ----------------------------------------------------------------------------- interventions
def test_head_nodes_read_and_write_their_slice() -> None:
    model = key_token_bert().model
    proj = "bert.encoder.layer.0.attention.output.dense"
    nodes = resolve_nodes(model, heads=HEADS)
    assert [n.name for n in nodes] == [f"{proj}/head_0", f"{proj}/head_1",
                                       f"{proj.replace('.0.', '.1.')}/head_0", f"{proj.replace('.0.', '.1.')}/head_1"]
    ids = key_token_pairs(2).inputs["input_ids"]
    # The projection's input is the self-attention's context output: the heads side by side.
    context = Node("bert.encoder.layer.0.attention.self")
    with torch.no_grad(), record(model, [context]) as whole, record(model, nodes[:2]) as heads:
        model(input_ids=ids)
    assert torch.equal(torch.cat([heads[nodes[0]], heads[nodes[1]]], dim=-1), whole[context])
    assert heads[nodes[0]].shape == (4, SEQ_LEN, 16)
    zeroed = Node(proj, 1, 2)
    with torch.no_grad(), intervene(model, {zeroed: torch.zeros_like}), record(model, nodes[:2]) as seen:
        model(input_ids=ids)
    assert torch.equal(seen[nodes[0]], heads[nodes[0]]) and not seen[nodes[1]].any()


def test_intervene_removes_its_hooks_even_when_the_forward_raises() -> None:
    model = tiny_mlp()

    def explode(act: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), intervene(model, {Node("net.1"): explode}):
        model(torch.randn(2, 8))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    shape_error = r"returned shape \(2, 3\); it must keep the activation's shape \(2, 16\)"
    with pytest.raises(InvalidParameterError, match=shape_error), intervene(model, {Node("net.1"): lambda a: a[:, :3]}):
        model(torch.randn(2, 8))
    with pytest.raises(LayerNotFoundError, match=r"net\.9"), intervene(model, {Node("net.9"): lambda a: a}):
        pass


def test_patching_errors_say_what_is_wrong() -> None:
    with pytest.raises(InvalidParameterError, match="ActivationPatching: layers and/or heads must be given"):
        ActivationPatching()
    with pytest.raises(InvalidParameterError, match=r"ActivationPatching: direction must be one of "
                                                    r"\['denoising', 'noising'\]; got 'both'\."):
        ActivationPatching(layers="x", direction="both")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"ActivationPatching: confidence must be a float in \(0, 1\)"):
        ActivationPatching(layers="x", confidence=95)
    with pytest.raises(InvalidParameterError, match="n_heads must be a positive int when heads= is given"):
        resolve_nodes(tiny_mlp(), heads="net.2")
    probe = nm.ProbeSet(torch.randn(4, 8), metadata={"partner": [1, -1, 3, -1]})
    with pytest.raises(nm.NeuronMapError, match="answers='label' needs integer labels"):
        _run(tiny_mlp(), probe, ActivationPatching(pairs="partner", layers="net.1"), layer="net.1")


def test_per_position_defaults_to_layer_nodes_and_true_adds_the_heads() -> None:
    # Issue 17: one pass per head and position made patching every head the slowest analysis.
    pairs, model = key_token_pairs(8), key_token_bert().model
    default = _run(model, pairs, ActivationPatching(layers=BLOCKS[1:2], heads=HEADS, n_resamples=50),
                   layer="bert.embeddings")
    every = _run(model, pairs, ActivationPatching(layers=BLOCKS[1:2], heads=HEADS, per_position=True, n_resamples=50),
                 layer="bert.embeddings")
    default_nodes = set(default.results["activation_patching"].tables["positions"]["node"])
    every_nodes = set(every.results["activation_patching"].tables["positions"]["node"])
    assert default_nodes == {BLOCKS[1]}
    assert every_nodes > default_nodes and any("head_" in n for n in every_nodes)
    effects = {k: v for k, v in default.metrics.items() if k.endswith("/patch_effect")}
    assert effects == {k: every.metrics[k] for k in effects}  # whole-node effects do not change
    with pytest.raises(InvalidParameterError, match=r"ActivationPatching: per_position must be a bool or one of "
                                                    r"\['layers'\]; got 'heads'\."):
        ActivationPatching(layers="x", per_position="heads")  # type: ignore[arg-type]
