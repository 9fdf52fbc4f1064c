"""CausalTracing on transformers trained on tasks whose mechanism is known.

Key-token BERT: the label is the token at position KEY and only layer 0's heads can move
it to [CLS]. So restoring the embedding at KEY undoes the corruption entirely, after
layer 0 the information sits at [CLS] (position 0) and nowhere else.
Copy GPT-2: the last position predicts the token at SOURCE; after the last block only the
last position matters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _synthetic import (  # noqa: F401  (one_thread: the module-wide single-thread fixture)
    GPT_LEN,
    KEY,
    SOURCE,
    copy_gpt2,
    copy_ids,
    key_token_bert,
    key_token_probe,
    one_thread,
)
from torch import nn

import neuronmap as nm
from neuronmap.analyses.causal_tracing import CausalTracing
from neuronmap.errors import InvalidParameterError, ProbeSetError
from neuronmap.reporters import LocalReporter, TensorBoardReporter

BERT_LAYERS = ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1"]



@pytest.fixture(scope="module")
def bert_trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[nm.Report, LocalReporter, Path]:
    """One traced run reported to a local run folder and to TensorBoard."""
    root = tmp_path_factory.mktemp("tracing")
    reporter = LocalReporter(root, run_name="bert")
    tracing = CausalTracing(layers=BERT_LAYERS, corrupt=[KEY], noise=6.0, n_samples=4, max_examples=24,
                            n_resamples=200)
    monitor = nm.NeuronMap(key_token_probe(24), layers="bert.encoder.layer.0", analyses=[tracing],
                           reporters=[reporter, TensorBoardReporter(root / "tb")], strict=True)
    report = monitor.run(key_token_bert().model, step=5)
    monitor.close()
    return report, reporter, root / "tb"


def _heatmap(report: nm.Report) -> np.ndarray:
    table = report.results["causal_tracing"].tables["indirect_effects"]
    grid = table.pivot(index="layer", columns="position", values="indirect_effect")
    return grid.reindex(list(dict.fromkeys(table["layer"]))).to_numpy()


def test_encoder_trace_peaks_at_the_key_token_then_at_cls(bert_trace) -> None:
    report, _, _ = bert_trace
    m = report.metrics
    te = m["neuronmap/causal_tracing/model/total_effect"]
    assert te > 0.3 and m["neuronmap/causal_tracing/model/total_effect_ci_low"] > 0
    heat = _heatmap(report)
    assert np.argmax(heat[0]) == KEY  # the corrupted embedding itself
    assert np.argmax(heat[1]) == 0 and np.argmax(heat[2]) == 0  # moved to [CLS] by layer 0
    assert m["neuronmap/causal_tracing/bert.encoder.layer.0/peak_position"] == 0
    assert m["neuronmap/causal_tracing/bert.embeddings/peak_position"] == KEY
    # Restoring the whole corrupted state recovers the whole effect; nothing else carries it.
    assert heat[0, KEY] == pytest.approx(te, abs=1e-6)
    assert heat[1, 0] == pytest.approx(te, abs=0.02)
    off_peak = np.delete(heat, [KEY], axis=1)[0].tolist() + np.delete(heat[1:], 0, axis=1).ravel().tolist()
    assert max(abs(v) for v in off_peak) < 0.02


def test_heatmap_is_in_the_run_folder_and_in_tensorboard(bert_trace) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, reporter, tb_dir = bert_trace
    figure = reporter.run_dir / "figures" / "5" / "causal_tracing" / "heatmap.png"
    table = reporter.run_dir / "tables" / "5" / "causal_tracing"
    assert figure.stat().st_size > 1000
    assert any(table.glob("indirect_effects*"))
    events = EventAccumulator(str(tb_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    images = events.Images("neuronmap/figures/causal_tracing/heatmap")
    assert [image.step for image in images] == [5] and images[0].width > 100
    peak = events.Scalars("neuronmap/causal_tracing/peak_position/bert.embeddings")  # a section per metric
    assert [(e.step, e.value) for e in peak] == [(5, KEY)]


def test_causal_language_model_trace() -> None:
    ids = copy_ids(16, seed=3)
    probe = nm.ProbeSet({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels=ids[:, SOURCE].numpy())
    layers = ["transformer.wte", "transformer.h.0", "transformer.h.1"]
    tracing = CausalTracing(layers=layers, corrupt=[SOURCE], target="label", noise=6.0, n_samples=3, n_resamples=200)
    report = nm.NeuronMap(probe, layers="transformer.h.0", analyses=[tracing], reporters=[], strict=True).run(
        copy_gpt2(), step=0
    )
    m = report.metrics
    assert m["neuronmap/causal_tracing/model/p_clean"] > 0.9
    te = m["neuronmap/causal_tracing/model/total_effect"]
    assert te > 0.3
    heat = _heatmap(report)
    assert heat[0, SOURCE] == pytest.approx(te, abs=1e-6)  # restoring the token embedding itself
    assert np.argmax(heat[2]) == GPT_LEN - 1  # after the last block only the read-out position matters
    assert heat[2, GPT_LEN - 1] == pytest.approx(te, abs=0.02)
    # Causal attention: positions before SOURCE never saw the corruption.
    np.testing.assert_allclose(heat[:, :SOURCE], 0.0, atol=1e-6)


def test_hooks_are_removed_after_a_run_and_after_a_failure() -> None:
    model = key_token_bert().model
    tracing = CausalTracing(layers=BERT_LAYERS, corrupt=[KEY], n_samples=1, max_examples=2)
    nm.NeuronMap(key_token_probe(4), layers="bert.encoder.layer.0", analyses=[tracing], reporters=[],
                 strict=True).run(model, step=0)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    bad = CausalTracing(layers=BERT_LAYERS, corrupt=[KEY], target=99, n_samples=1, max_examples=2)
    with pytest.raises(nm.NeuronMapError,
                       match=r"targets must be class/token ids in \[0, 1\]; got values from 99 to 99"):
        nm.NeuronMap(key_token_probe(4), layers="bert.encoder.layer.0", analyses=[bad], reporters=[],
                     strict=True).run(model, step=0)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_tracing_errors_say_what_is_wrong() -> None:
    with pytest.raises(InvalidParameterError, match=r"CausalTracing: target must be one of \['label', 'prediction'\] "
                                                    r"or an int in \[0, inf\); got 'logit'\."):
        CausalTracing(layers="x", target="logit")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"CausalTracing: noise must be a float in \(0, inf\); got 0\."):
        CausalTracing(layers="x", noise=0)
    with pytest.raises(InvalidParameterError, match=r"CausalTracing: layers must be a layer selector .*; got None\."):
        CausalTracing(layers=None)  # type: ignore[arg-type]
    model = key_token_bert().model
    probe = key_token_probe(4)
    far = CausalTracing(layers=BERT_LAYERS, corrupt=[40], n_samples=1)
    with pytest.raises(nm.NeuronMapError, match=r"positions \[40\] are outside the sequence length 7"):
        nm.NeuronMap(probe, layers="bert.embeddings", analyses=[far], reporters=[], strict=True).run(model, step=0)

    class NoEmbeddings(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(1, 2)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.proj(input_ids.float().unsqueeze(-1))

    with pytest.raises(nm.NeuronMapError, match=r"pass embedding='<module name>'"):
        nm.NeuronMap(probe, layers="proj", analyses=[CausalTracing(layers="proj")], reporters=[],
                     strict=True).run(NoEmbeddings(), step=0)
    assert issubclass(ProbeSetError, ValueError)
