"""Descriptive statistics of attention maps: entropy, mass on special tokens, mean distance.

Every function takes attention probabilities ``attn`` of shape ``[batch, heads, queries, keys]``
(rows sum to one over valid keys; a padded key has probability zero) and an optional
``attention_mask`` ``[batch, keys]`` marking real tokens (1) and padding (0). Queries at padded
positions are left out of every average. They work on the attention's device, so only
``[batch, heads]`` numbers leave the accelerator.

``reduction`` selects the output: ``"none"`` gives ``[batch, heads, queries]`` (zero at padded
queries), ``"example"`` the mean over each example's valid queries ``[batch, heads]``, and
``"mean"`` the mean of those over examples ``[heads]``.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

from neuronmap.errors import InvalidParameterError

__all__ = [
    "AttentionReduction",
    "attention_entropy",
    "mean_attention_distance",
    "special_token_mask",
    "special_token_mass",
]

AttentionReduction = Literal["none", "example", "mean"]
_REDUCTIONS: tuple[str, ...] = get_args(AttentionReduction)


def _check(
    attn: torch.Tensor | np.ndarray, attention_mask: torch.Tensor | np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor]:
    attn = torch.as_tensor(attn)
    if attn.ndim != 4:
        raise InvalidParameterError(
            f"attn must be attention probabilities [batch, heads, queries, keys]; got shape {tuple(attn.shape)}."
        )
    b, _, _, k = attn.shape
    if attention_mask is None:
        mask = torch.ones(b, k, dtype=torch.bool, device=attn.device)
    else:
        mask = torch.as_tensor(attention_mask, device=attn.device).bool()
        if tuple(mask.shape) != (b, k):
            raise InvalidParameterError(
                f"attention_mask must have shape [batch, keys] = {(b, k)}; got {tuple(mask.shape)}."
            )
    return attn, mask


def _reduce(
    values: torch.Tensor, mask: torch.Tensor, reduction: AttentionReduction
) -> torch.Tensor:
    if reduction not in _REDUCTIONS:
        raise InvalidParameterError(
            f"The 'reduction' parameter must be one of {list(_REDUCTIONS)}; got {reduction!r} instead."
        )
    q = values.shape[-1]
    # With cross-attention or a cache (queries != keys) the mask covers keys only: every query counts.
    query_mask = (
        mask
        if mask.shape[-1] == q
        else torch.ones(mask.shape[0], q, dtype=torch.bool, device=mask.device)
    )
    weights = query_mask[:, None, :].to(values.dtype)
    values = values * weights
    if reduction == "none":
        return values
    per_example = values.sum(-1) / weights.sum(-1).clamp(min=1)
    return per_example if reduction == "example" else per_example.mean(0)


def attention_entropy(
    attn: torch.Tensor | np.ndarray,
    *,
    attention_mask: torch.Tensor | np.ndarray | None = None,
    normalize: bool = False,
    reduction: AttentionReduction = "example",
) -> torch.Tensor:
    """Shannon entropy of each query's attention distribution, in nats.

    ``H_q = -sum_k a_qk ln a_qk`` (Clark et al. 2019, "What Does BERT Look At?", Sec. 3.3;
    Vig & Belinkov 2019, Sec. 5.4). It is 0 for a head attending to one token and ``ln k`` for a
    uniform head over ``k`` valid keys; ``normalize=True`` divides by ``ln k`` so heads over
    sequences of different lengths compare on ``[0, 1]`` (0 where a query sees a single key).

    Args:
        attn: ``[batch, heads, queries, keys]`` attention probabilities.
        attention_mask: ``[batch, keys]``, 1 for real tokens.
        normalize: Divide by the maximal entropy ``ln(valid keys)``.
        reduction: ``none``, ``example`` or ``mean`` (see the module docstring).

    Returns:
        Entropies in the shape given by ``reduction``.

    Example:
        >>> uniform = torch.full((1, 1, 4, 4), 0.25)
        >>> round(float(attention_entropy(uniform, reduction="mean")[0]), 4)  # ln 4
        1.3863
    """
    attn, mask = _check(attn, attention_mask)
    entropy = torch.special.entr(attn.clamp(min=0)).sum(-1)
    if normalize:
        valid = mask.sum(-1).to(entropy.dtype)[:, None, None]
        max_entropy = torch.log(valid)
        entropy = torch.where(
            max_entropy > 0, entropy / max_entropy.clamp(min=1e-12), torch.zeros_like(entropy)
        )
    return _reduce(entropy, mask, reduction)


def special_token_mask(
    attention_mask: torch.Tensor | np.ndarray,
    *,
    input_ids: torch.Tensor | np.ndarray | None = None,
    special_token_ids: list[int] | tuple[int, ...] | None = None,
    positions: tuple[Literal["first", "last"], ...] = ("first", "last"),
) -> torch.Tensor:
    """``[batch, keys]`` boolean mask of special tokens.

    With ``special_token_ids`` and ``input_ids``, the tokens whose id is listed; otherwise the
    tokens at the given ``positions``: the first token (``[CLS]``/``<s>``/BOS) and the last
    real token (``[SEP]``/``</s>``), the sinks that BERT-style and causal models park attention
    on (Clark et al. 2019, Sec. 3.2; Xiao et al. 2024, "Efficient Streaming Language Models
    with Attention Sinks").
    """
    mask = torch.as_tensor(attention_mask).bool()
    if special_token_ids is not None:
        if input_ids is None:
            raise InvalidParameterError(
                "special_token_ids needs input_ids to find the tokens; got input_ids=None."
            )
        ids = torch.as_tensor(input_ids, device=mask.device)
        wanted = torch.as_tensor(list(special_token_ids), dtype=ids.dtype, device=mask.device)
        return torch.isin(ids, wanted) & mask
    unknown = [p for p in positions if p not in ("first", "last")]
    if unknown:
        raise InvalidParameterError(
            f"positions may contain 'first' and 'last'; got {list(positions)}."
        )
    special = torch.zeros_like(mask)
    rows = torch.arange(mask.shape[0], device=mask.device)
    if "first" in positions:
        special[rows, mask.int().argmax(-1)] = True
    if "last" in positions:
        last = mask.shape[1] - 1 - mask.flip(-1).int().argmax(-1)
        special[rows, last] = True
    return special & mask


def special_token_mass(
    attn: torch.Tensor | np.ndarray,
    special_mask: torch.Tensor | np.ndarray,
    *,
    attention_mask: torch.Tensor | np.ndarray | None = None,
    reduction: AttentionReduction = "example",
) -> torch.Tensor:
    """Attention mass each query puts on special tokens: ``sum_{k special} a_qk``.

    The fraction of attention parked on ``[CLS]``/``[SEP]``/BOS "no-op" sinks (Clark et al. 2019,
    Sec. 3.2, Fig. 2; Xiao et al. 2024). 1 means the head attends to nothing but sinks.

    Args:
        attn: ``[batch, heads, queries, keys]`` attention probabilities.
        special_mask: ``[batch, keys]`` booleans, e.g. from :func:`special_token_mask`.
        attention_mask: ``[batch, keys]``, 1 for real tokens.
        reduction: ``none``, ``example`` or ``mean``.
    """
    attn, mask = _check(attn, attention_mask)
    special = torch.as_tensor(special_mask, device=attn.device).to(attn.dtype)
    if tuple(special.shape) != (attn.shape[0], attn.shape[-1]):
        raise InvalidParameterError(
            f"special_mask must have shape [batch, keys] = {(attn.shape[0], attn.shape[-1])}; "
            f"got {tuple(special.shape)}."
        )
    mass = torch.einsum("bhqk,bk->bhq", attn, special)
    return _reduce(mass, mask, reduction)


def mean_attention_distance(
    attn: torch.Tensor | np.ndarray,
    *,
    attention_mask: torch.Tensor | np.ndarray | None = None,
    positions: torch.Tensor | np.ndarray | None = None,
    reduction: AttentionReduction = "example",
) -> torch.Tensor:
    """Attention-weighted distance between a query and its keys: ``sum_k a_qk ||p_q - p_k||``.

    Vig & Belinkov 2019, "Analyzing the Structure of Attention in a Transformer Language
    Model", Sec. 5.3 (token distance); Dosovitskiy et al. 2021, "An Image is Worth 16x16
    Words", Fig. 7 / Appendix D.7 (pixel distance between patches in ViT).

    Args:
        attn: ``[batch, heads, queries, keys]`` attention probabilities (self-attention: q = k).
        attention_mask: ``[batch, keys]``, 1 for real tokens.
        positions: ``[keys]`` or ``[keys, dims]`` coordinates of the tokens (patch centres in
            pixels for ViT); default: the token index ``0..k-1``.
        reduction: ``none``, ``example`` or ``mean``.

    Example:
        >>> eye = torch.eye(3).expand(1, 1, 3, 3)  # every token attends to itself
        >>> float(mean_attention_distance(eye, reduction="mean")[0])
        0.0
    """
    attn, mask = _check(attn, attention_mask)
    q, k = attn.shape[-2:]
    if q != k:
        raise InvalidParameterError(
            f"mean_attention_distance needs self-attention (queries == keys); got {q} != {k}."
        )
    pos = (
        torch.arange(k, dtype=attn.dtype, device=attn.device)
        if positions is None
        else torch.as_tensor(positions, dtype=attn.dtype, device=attn.device)
    )
    if pos.ndim == 1:
        pos = pos[:, None]
    if pos.shape[0] != k:
        raise InvalidParameterError(
            f"positions must have one row per token ({k}); got shape {tuple(pos.shape)}."
        )
    distance = torch.cdist(pos, pos)
    return _reduce(torch.einsum("bhqk,qk->bhq", attn, distance), mask, reduction)
