from __future__ import annotations

import pytest
import torch
from torch import nn

from neuronmap.capture.forward import forward, logits_of, output_logits, probe_batches
from neuronmap.errors import InvalidParameterError
from neuronmap.probe import ProbeSet
from neuronmap.testing import tiny_bert, tiny_mlp, tiny_text_probe


def test_probe_batches_cover_the_probe_set_in_order() -> None:
    x = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    batches = list(probe_batches(ProbeSet(x), 4))
    assert [len(b["input"]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b["input"] for b in batches]), x)


def test_no_grad_covers_the_loop_body_and_ends_with_it() -> None:
    probe = ProbeSet(torch.randn(6, 2))
    seen = [torch.is_grad_enabled() for _ in probe_batches(probe, 2, no_grad=True)]
    assert seen == [False, False, False] and torch.is_grad_enabled()
    for _ in probe_batches(probe, 2, no_grad=True):
        break
    assert torch.is_grad_enabled()
    with pytest.raises(RuntimeError, match="boom"):
        for _ in probe_batches(probe, 2, no_grad=True):
            raise RuntimeError("boom")
    assert torch.is_grad_enabled()
    assert all(torch.is_grad_enabled() for _ in probe_batches(probe, 2))


def test_progress_hook_wraps_the_batches_and_gets_their_number() -> None:
    calls = []

    def hook(batches, total):
        calls.append(total)
        return batches

    assert len(list(probe_batches(ProbeSet(torch.randn(7, 2)), 3, progress=hook))) == 3
    assert calls == [3]


def test_forward_calls_positionally_or_with_keywords() -> None:
    model = tiny_mlp()
    probe = ProbeSet(torch.randn(3, 8))
    batch = next(probe_batches(probe, 3))
    assert torch.equal(forward(model, batch, positional=True), model(batch["input"]))
    bert, text = tiny_bert(), tiny_text_probe()
    out = forward(bert, next(probe_batches(text, 2)), positional=text.positional, output_attentions=True)
    assert out.attentions is not None and len(out.attentions) == len(bert.encoder.layer)


def test_output_attentions_is_only_passed_to_models_that_take_it() -> None:
    model = nn.Linear(2, 2)
    out = forward(model, {"input": torch.ones(1, 2)}, positional=True, output_attentions=True)
    assert out.shape == (1, 2)


def test_logits_extraction() -> None:
    t = torch.ones(2, 3)
    assert output_logits(t) is t
    assert output_logits((t, torch.zeros(1))) is t
    hidden = {"last_hidden_state": t}
    assert output_logits(hidden) is t  # a base model's output: its hidden state
    assert output_logits(hidden, hidden_fallback=False) is None  # capture keeps logits only
    assert output_logits({"logits": t, "last_hidden_state": torch.zeros(1)}, hidden_fallback=False) is t
    with pytest.raises(InvalidParameterError, match="holds no logits tensor: got str"):
        logits_of("text")
