"""Attribution analysis: embedding substitution vs Captum, known answers, stability, reporting."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap._imports import CAPTUM_AVAILABLE, TENSORBOARD_AVAILABLE
from neuronmap.analyses._input_space import InputSpace
from neuronmap.analyses.attribution import Attribution
from neuronmap.errors import AnalysisError, InvalidParameterError
from neuronmap.metrics.attribution import integrated_gradients
from neuronmap.probe import ProbeSet
from neuronmap.reporters import LocalReporter, TensorBoardReporter
from neuronmap.testing import tiny_bert, tiny_mlp, tiny_probe, tiny_text_probe

METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "occlusion"]


class _SecondToken(nn.Module):
    """A text classifier that looks at the token in position 1 only."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 4)
        self.head = nn.Linear(4, 2)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(input_ids)[:, 1]))


def _monitor(probe: ProbeSet, analysis: Attribution, reporters: list | None = None) -> nm.NeuronMap:
    return nm.NeuronMap(
        probe, layers=["re:.+"], analyses=[analysis], reporters=reporters or [], strict=True
    )


@pytest.mark.skipif(not CAPTUM_AVAILABLE, reason=str(CAPTUM_AVAILABLE))
def test_embedding_substitution_matches_captum_on_inputs_embeds():
    """Swapping the word embeddings by a hook is the same function as BERT's ``inputs_embeds``."""
    from captum.attr import IntegratedGradients

    model, probe = tiny_bert(num_labels=2), tiny_text_probe(6)
    space = InputSpace(model, probe)
    assert space.layer == "bert.embeddings.word_embeddings"
    batch = next(space.batches(6, None))
    ours = integrated_gradients(
        space.logits,
        batch.inputs,
        target=1,
        additional_args=batch.extras,
        n_steps=8,
        internal_batch_size=16,
    )

    def by_inputs_embeds(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(inputs_embeds=emb, attention_mask=mask).logits

    theirs = IntegratedGradients(by_inputs_embeds).attribute(
        batch.inputs, target=1, additional_forward_args=(batch.mask,), n_steps=8
    )
    torch.testing.assert_close(ours.attributions, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_a_model_reading_one_position_is_attributed_to_that_position(method):
    torch.manual_seed(0)
    analysis = Attribution(method, n_steps=8)
    _monitor(tiny_text_probe(8), analysis).run(_SecondToken().eval(), step=0)
    for per_token in analysis.state_dict()["attributions"]:
        per_token = np.abs(per_token)
        # Occlusion compares forward passes of different batch sizes: float32 rounding only.
        assert per_token[1] > 1e-3 and np.delete(per_token, 1).max() < 1e-6


def test_linear_model_integrated_gradients_table_and_completeness():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 2))
    probe = tiny_probe(40)
    report = _monitor(probe, Attribution("integrated_gradients", target="label", n_steps=4, max_examples=None)).run(
        model, step=0
    )
    res = report.results["attribution"]
    assert res.metrics["input/completeness_delta_max"] < 1e-5
    # Known answer: attribution of feature j for class c is x_j w_cj (zero baseline).
    x, labels = probe.inputs["input"], probe.labels
    contrib = (x * model[0].weight[torch.from_numpy(np.array(labels))]).detach().numpy()
    table = res.tables["top_features"]
    for row in table.itertuples():
        expected = contrib[labels == row._1, row.feature].mean()
        assert row.mean_attribution == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    assert (
        table.groupby("class")["mean_attribution"].apply(lambda s: s.is_monotonic_decreasing).all()
    )


def test_stability_across_runs():
    probe, analysis = tiny_probe(24), Attribution("saliency")
    model = tiny_mlp()
    monitor = _monitor(probe, analysis)
    first = monitor.run(model, step=0).results["attribution"]
    assert "input/stability" not in first.metrics and "first run" in first.notes[0]
    same = monitor.run(model, step=1).results["attribution"].metrics
    assert same["input/stability"] == 1.0 and same["input/stability_ci_low"] == 1.0
    # Restored state (through JSON) whose attributions are reversed: Spearman -1 per example.
    state = json.loads(json.dumps(analysis.state_dict()))
    state["attributions"] = [[-v for v in row] for row in state["attributions"]]
    restored = Attribution("saliency")
    restored.load_state_dict(state)
    assert _monitor(probe, restored).run(model, step=2).results["attribution"].metrics[
        "input/stability"
    ] == pytest.approx(-1.0)
    with torch.no_grad():
        model.net[0].weight.add_(torch.randn_like(model.net[0].weight))
    changed = monitor.run(model, step=3).results["attribution"].metrics
    assert -1.0 < changed["input/stability"] < 0.99
    assert (
        changed["input/stability_ci_low"]
        <= changed["input/stability"]
        <= changed["input/stability_ci_high"]
    )


@pytest.mark.skipif(not TENSORBOARD_AVAILABLE, reason=str(TENSORBOARD_AVAILABLE))
def test_text_end_to_end_in_the_run_folder_and_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    local, board = LocalReporter(tmp_path, run_name="attr"), TensorBoardReporter(tmp_path / "tb")
    analysis = Attribution("integrated_gradients", n_steps=4, internal_batch_size=16)
    monitor = _monitor(tiny_text_probe(8), analysis, [local, board])
    report = monitor.run(tiny_bert(num_labels=2), step=0)
    monitor.close()
    key = "neuronmap/attribution/bert.embeddings.word_embeddings/completeness_delta"
    assert key in report.metrics and f"{key}_ci_high" in report.metrics
    for name in ("top_tokens", "examples"):
        assert (local.run_dir / "figures" / "0" / "attribution" / f"{name}.png").stat().st_size > 0
    table = pd.read_csv(local.run_dir / "tables" / "0" / "attribution" / "top_tokens.csv")
    assert {"class", "rank", "token_id", "token", "mean_attribution", "count"} == set(table.columns)
    assert "feels" in set(
        table["token"]
    )  # words from the text column where they align with the tokens
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {
        "neuronmap/figures/attribution/top_tokens",
        "neuronmap/figures/attribution/examples",
    } <= set(events.Tags()["images"])


def test_image_occlusion_end_to_end(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 3)
    ).eval()
    probe = ProbeSet(torch.randn(6, 1, 8, 8), labels=[0, 1, 2] * 2)
    reporter = LocalReporter(tmp_path, run_name="img")
    analysis = Attribution("occlusion", occlusion_window=(1, 2, 2))
    _monitor(probe, analysis, [reporter]).run(model, step=0)
    assert (reporter.run_dir / "figures" / "0" / "attribution" / "examples.png").exists()
    assert len(analysis.state_dict()["attributions"][0]) == 8 * 8  # per pixel, channels summed


def test_errors() -> None:
    with pytest.raises(
        InvalidParameterError,
        match=r"Attribution: method must be one of \['input_x_gradient', .*\]; got 'gradcam'\.",
    ):
        Attribution("gradcam")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"Attribution: target must be one of \['label', 'predicted'\] "
                                                    r"or a class index \(int\); got 'true'\."):
        Attribution(target="true")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"Attribution: n_steps must be an int in \[1, inf\); got 0\."):
        Attribution(n_steps=0)
    with pytest.raises(InvalidParameterError, match=r"Attribution: integration must be one of \['gausslegendre'"):
        Attribution(integration="simpson")  # type: ignore[arg-type]
    with pytest.raises(AnalysisError, match="target='label'\\) needs probe labels"):
        _monitor(ProbeSet(torch.randn(4, 8)), Attribution(target="label")).run(tiny_mlp(), step=0)
    with pytest.raises(AnalysisError, match=r"BertModel returns \(8, \d+, 32\) where one score"):
        _monitor(tiny_text_probe(8), Attribution("saliency")).run(tiny_bert(), step=0)
