"""Attention statistics: known answers, scipy agreement, and invariance to padded queries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from neuronmap.errors import InvalidParameterError
from neuronmap.metrics.attention import (
    attention_entropy,
    mean_attention_distance,
    special_token_mask,
    special_token_mass,
)

LENGTHS = [5, 3, 7]


def _mask(lengths: list[int], width: int = 7) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()


def _random_attention(mask: torch.Tensor, heads: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    b, k = mask.shape
    scores = torch.randn(b, heads, k, k, generator=gen, dtype=torch.double)
    scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    return scores.softmax(-1)


def test_uniform_head_has_maximal_entropy_log_k():
    mask = _mask(LENGTHS)
    uniform = mask[:, None, None, :].double().expand(3, 2, 7, 7) / mask.sum(-1)[:, None, None, None]
    entropy = attention_entropy(uniform, attention_mask=mask)
    expected = torch.log(torch.tensor(LENGTHS, dtype=torch.double))[:, None].expand(3, 2)
    torch.testing.assert_close(entropy, expected)
    torch.testing.assert_close(
        attention_entropy(uniform, attention_mask=mask, normalize=True),
        torch.ones(3, 2, dtype=torch.double),
    )
    # Any other distribution over the same keys has lower entropy (Gibbs' inequality).
    other = attention_entropy(_random_attention(mask), attention_mask=mask)
    assert (other < expected).all()


def test_one_hot_head_has_zero_entropy():
    eye = torch.eye(4).expand(2, 3, 4, 4)
    assert attention_entropy(eye, reduction="mean").abs().max() == 0


def test_entropy_agrees_with_scipy_and_ignores_padded_queries():
    mask = _mask(LENGTHS)
    attn = _random_attention(mask)
    rows = attention_entropy(attn, attention_mask=mask, reduction="none")
    for b, n in enumerate(LENGTHS):
        expected = scipy.stats.entropy(attn[b, :, :n, :n].numpy(), axis=-1)
        np.testing.assert_allclose(rows[b, :, :n].numpy(), expected, rtol=1e-10)
        assert not rows[b, :, n:].any()
    garbage = attn.clone()
    garbage[0, :, 5:] = 0.5  # rows of padded queries must not count
    torch.testing.assert_close(
        attention_entropy(garbage, attention_mask=mask),
        attention_entropy(attn, attention_mask=mask),
    )
    per_example = np.array(
        [
            scipy.stats.entropy(attn[b, :, :n, :n].numpy(), axis=-1).mean(-1)
            for b, n in enumerate(LENGTHS)
        ]
    )
    np.testing.assert_allclose(
        attention_entropy(attn, attention_mask=mask, reduction="mean").numpy(),
        per_example.mean(0),
        rtol=1e-10,
    )


def test_special_token_mask_by_position_and_by_id():
    mask = _mask(LENGTHS)
    special = special_token_mask(mask)
    for b, n in enumerate(LENGTHS):
        assert special[b].nonzero().flatten().tolist() == [0, n - 1]
    assert special_token_mask(mask, positions=("first",)).sum() == 3
    ids = torch.tensor([[101, 7, 8, 9, 102, 0, 0]])
    by_id = special_token_mask(_mask([5]), input_ids=ids, special_token_ids=[101, 102, 0])
    assert by_id.nonzero()[:, 1].tolist() == [0, 4]  # padding id 0 is not a real token


def test_special_token_mass_known_answers():
    mask = _mask(LENGTHS)
    special = special_token_mask(mask)
    cls_only = torch.zeros(3, 2, 7, 7, dtype=torch.double)
    cls_only[..., 0] = 1.0  # every query parks all attention on [CLS]
    assert torch.equal(
        special_token_mass(cls_only, special, attention_mask=mask), torch.ones(3, 2).double()
    )
    attn = _random_attention(mask)
    mass = special_token_mass(attn, special, attention_mask=mask, reduction="none")
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(mass[b, :, :n], attn[b, :, :n, 0] + attn[b, :, :n, n - 1])


def test_mean_attention_distance_known_answers():
    eye = torch.eye(5).expand(1, 2, 5, 5)
    assert mean_attention_distance(eye, reduction="mean").abs().max() == 0
    previous = torch.zeros(1, 1, 5, 5)
    previous[0, 0, 0, 0] = 1.0
    previous[0, 0, torch.arange(1, 5), torch.arange(0, 4)] = (
        1.0  # each token attends to its predecessor
    )
    assert float(mean_attention_distance(previous, reduction="mean")) == pytest.approx(4 / 5)
    k = 6  # uniform: the mean |i - j| over all pairs is (k^2 - 1) / (3k)
    uniform = torch.full((1, 1, k, k), 1.0 / k, dtype=torch.double)
    assert float(mean_attention_distance(uniform, reduction="mean")) == pytest.approx(
        (k * k - 1) / (3 * k)
    )


def test_mean_attention_distance_on_a_patch_grid():
    """ViT-style pixel distances: patch centres on a 2 x 2 grid of 16-pixel patches."""
    centres = torch.tensor([[8.0, 8.0], [8.0, 24.0], [24.0, 8.0], [24.0, 24.0]])
    uniform = torch.full((1, 1, 4, 4), 0.25)
    expected = (0 + 16 + 16 + 16 * math.sqrt(2)) / 4
    assert float(
        mean_attention_distance(uniform, positions=centres, reduction="mean")
    ) == pytest.approx(expected)


def test_reductions_and_errors():
    mask = _mask(LENGTHS)
    attn = _random_attention(mask)
    assert attention_entropy(attn, attention_mask=mask, reduction="none").shape == (3, 2, 7)
    assert attention_entropy(attn, attention_mask=mask, reduction="example").shape == (3, 2)
    assert attention_entropy(attn, attention_mask=mask, reduction="mean").shape == (2,)
    assert attention_entropy(attn.numpy()).shape == (3, 2)  # numpy in, tensor out
    with pytest.raises(
        InvalidParameterError,
        match=r"'reduction' parameter must be one of \['none', 'example', 'mean'\]",
    ):
        attention_entropy(attn, reduction="sum")
    with pytest.raises(
        InvalidParameterError, match=r"\[batch, heads, queries, keys\]; got shape \(3, 7, 7\)"
    ):
        attention_entropy(attn[:, 0])
    with pytest.raises(
        InvalidParameterError, match=r"attention_mask must have shape \[batch, keys\] = \(3, 7\)"
    ):
        attention_entropy(attn, attention_mask=mask[:, :5])
    with pytest.raises(InvalidParameterError, match="needs input_ids"):
        special_token_mask(mask, special_token_ids=[101])
    with pytest.raises(InvalidParameterError, match="queries == keys"):
        mean_attention_distance(attn[:, :, :3])
