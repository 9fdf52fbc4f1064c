"""ActivationMaximization: the Adam ascent's known answer, dataset examples, text, images, reporting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap._imports import TENSORBOARD_AVAILABLE
from neuronmap.analyses.activation_max import ActivationMaximization
from neuronmap.capture import capture_activations
from neuronmap.errors import AnalysisError, InvalidParameterError
from neuronmap.probe import ProbeSet
from neuronmap.reporters import LocalReporter, TensorBoardReporter
from neuronmap.testing import tiny_bert, tiny_mlp, tiny_probe, tiny_text_probe


def _run(
    model: nn.Module, probe: ProbeSet, analysis: ActivationMaximization, reporters=None
) -> nm.Report:
    monitor = nm.NeuronMap(
        probe, layers=["re:.+"], analyses=[analysis], reporters=reporters or [], strict=True
    )
    report = monitor.run(model, step=0)
    monitor.close()
    return report


def test_linear_unit_rises_by_steps_times_lr_times_l1_norm_of_its_weights():
    """Known answer: Adam on a constant gradient moves every input by ``lr * sign(w)`` per step.

    So a linear unit ``w.x + b`` rises by exactly ``steps * lr * ||w||_1`` (no L2 penalty);
    a direction ``v`` is the linear unit ``(W^T v / |v|).x``.
    """
    model, probe = tiny_mlp(), tiny_probe(32)
    direction = [1.0, -2.0] + [0.0] * 14
    analysis = ActivationMaximization("net.0", units=[3, direction], steps=40, lr=0.05, l2=0.0)
    m = {
        k.removeprefix("neuronmap/activation_max/"): v
        for k, v in _run(model, probe, analysis).metrics.items()
    }
    w = model.net[0].weight.detach()
    v = torch.tensor(direction) / torch.tensor(direction).norm()
    for label, weights in (("unit3", w[3]), ("direction0", v @ w)):
        rise = m[f"net.0/{label}_optimized"] - m[f"net.0/{label}_start"]
        assert rise == pytest.approx(40 * 0.05 * float(weights.abs().sum()), rel=1e-4)
    # The stated factor: the synthetic input beats the best probe example by 2x and more.
    assert m["net.0/unit3_optimized"] > 2 * m["net.0/unit3_probe_max"] > 0


def test_hidden_unit_is_driven_past_every_probe_example():
    """net.2 sits behind a ReLU, so the ascent is not the closed form of the linear case."""
    model, probe = tiny_mlp(), tiny_probe(64)
    report = _run(model, probe, ActivationMaximization("net.2", units=[0, 5], steps=60, lr=0.1))
    m = {k.removeprefix("neuronmap/activation_max/"): v for k, v in report.metrics.items()}
    for unit in ("unit0", "unit5"):
        assert m[f"net.2/{unit}_optimized"] >= 2 * max(
            m[f"net.2/{unit}_probe_max"], m[f"net.2/{unit}_start"]
        )


def test_top_examples_match_the_captured_activations_and_the_model_is_untouched():
    model, probe = tiny_mlp(), tiny_probe(32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = _run(
        model, probe, ActivationMaximization("net.2", units=[1, 7], steps=5, top_k=4)
    ).results["activation_max"]
    acts = capture_activations(model, probe, layers="net.2")["net.2"]
    table = res.tables["top_examples"]
    for unit in (1, 7):
        rows = table[table["unit"] == f"unit{unit}"]
        assert rows["example"].tolist() == np.argsort(-acts[:, unit], kind="stable")[:4].tolist()
        np.testing.assert_allclose(rows["activation"], np.sort(acts[:, unit])[::-1][:4], rtol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_text_embeddings_are_optimised_and_decoded(tmp_path):
    reporter = LocalReporter(tmp_path, run_name="amax-text")
    probe = tiny_text_probe(8)
    layer = "bert.encoder.layer.1.output.dense"
    report = _run(
        tiny_bert(num_labels=2),
        probe,
        ActivationMaximization(layer, units=[0, 5], steps=8),
        [reporter],
    )
    res, m = report.results["activation_max"], report.metrics
    for unit in ("unit0", "unit5"):
        key = f"neuronmap/activation_max/{layer}/{unit}"
        assert m[f"{key}_optimized"] > m[f"{key}_start"]
    tokens = res.tables["optimized_tokens"]
    assert len(tokens) == 2 * int(probe.attention_mask[0].sum())  # one row per unit and real token
    assert tokens["cosine"].between(-1, 1).all()
    assert (
        reporter.run_dir / "figures" / "0" / "activation_max" / "top_examples.png"
    ).stat().st_size > 0
    top = pd.read_csv(reporter.run_dir / "tables" / "0" / "activation_max" / "top_examples.csv")
    assert set(top["text"]) <= set(probe.texts)


@pytest.mark.skipif(not TENSORBOARD_AVAILABLE, reason=str(TENSORBOARD_AVAILABLE))
def test_image_channel_with_jitter_and_total_variation(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)
    ).eval()
    probe = ProbeSet(torch.randn(6, 3, 8, 8))
    local, board = (
        LocalReporter(tmp_path, run_name="amax-img"),
        TensorBoardReporter(tmp_path / "tb"),
    )
    analysis = ActivationMaximization(
        "2", units=[0, 2], steps=15, lr=0.05, jitter=2, tv=0.1, init="noise"
    )
    m = _run(model, probe, analysis, [local, board]).metrics
    assert (
        m["neuronmap/activation_max/2/unit0_optimized"]
        > m["neuronmap/activation_max/2/unit0_start"]
    )
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    for name in ("optimized", "top_examples"):
        assert (local.run_dir / "figures" / "0" / "activation_max" / f"{name}.png").exists()
        assert f"neuronmap/figures/activation_max/{name}" in events.Tags()["images"]


def test_errors() -> None:
    with pytest.raises(
        InvalidParameterError,
        match=r"ActivationMaximization: init must be one of \['noise', 'probe'\]; got 'zeros'\.",
    ):
        ActivationMaximization("net.0", init="zeros")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError,
                       match=r"ActivationMaximization: units must be a non-empty list .*; got \[\]"):
        ActivationMaximization("net.0", units=[])
    with pytest.raises(InvalidParameterError,
                       match=r"ActivationMaximization: steps must be an int in \[1, inf\); got 0"):
        ActivationMaximization("net.0", steps=0)
    with pytest.raises(InvalidParameterError, match=r"ActivationMaximization: lr must be a float in \(0, inf\)"):
        ActivationMaximization("net.0", lr=0)
    model, probe = tiny_mlp(), tiny_probe(8)
    with pytest.raises(AnalysisError, match="Unit 16 is out of range: the layer has 16 units"):
        _run(model, probe, ActivationMaximization("net.0", units=[16]))
    with pytest.raises(AnalysisError, match=r"A direction needs 16 values .* got shape \(3,\)"):
        _run(model, probe, ActivationMaximization("net.0", units=[[1.0, 2.0, 3.0]]))
    with pytest.raises(AnalysisError, match=r"needs one layer; the selector 'net.\*' matches 5"):
        _run(model, probe, ActivationMaximization("net.*"))
