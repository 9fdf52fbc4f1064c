"""Reductions over the token axis, done on the model's device before anything is copied.

Reducing on the device means only ``batch x hidden`` numbers cross to the host per layer,
instead of ``batch x tokens x hidden``.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from neuronmap.errors import InvalidParameterError

__all__ = ["REDUCTIONS", "Reduction", "check_reduction", "reduce_tokens"]

Reduction = Literal["mean", "first", "last", "max", "none"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)


def check_reduction(reduce: str) -> Reduction:
    """Return ``reduce`` if it is a known reduction, else raise listing the allowed ones."""
    if reduce not in REDUCTIONS:
        raise InvalidParameterError(
            f"The 'reduce' parameter must be one of {list(REDUCTIONS)}; got {reduce!r} instead."
        )
    return reduce  # type: ignore[return-value]


def reduce_tokens(
    hidden: torch.Tensor, reduce: Reduction, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce ``hidden`` over its token (or spatial) axes.

    Args:
        hidden: ``[batch, tokens, features]`` for sequences, ``[batch, features]`` (returned as
            is) or ``[batch, channels, *spatial]`` for convolutional maps (``mean``/``max`` pool
            the spatial axes).
        reduce: ``mean`` (mask-aware), ``first`` (the CLS position), ``last`` (last non-pad
            token), ``max`` (mask-aware), or ``none``.
        attention_mask: ``[batch, tokens]`` with 1 for real tokens; ignored when its length does
            not match the hidden state's token axis.

    Returns:
        ``[batch, features]`` (``[batch, tokens, features]`` for ``none``).
    """
    if reduce == "none" or hidden.ndim <= 2:
        return hidden
    if hidden.ndim >= 4:
        if reduce == "mean":
            return hidden.flatten(2).mean(dim=-1)
        if reduce == "max":
            return hidden.flatten(2).amax(dim=-1)
        raise InvalidParameterError(
            f"reduce={reduce!r} needs a sequence output [batch, tokens, features]; got a "
            f"{hidden.ndim}-D output of shape {tuple(hidden.shape)}. Use 'mean', 'max' or 'none'."
        )
    mask = None
    if attention_mask is not None and attention_mask.shape[:2] == hidden.shape[:2]:
        mask = attention_mask.to(device=hidden.device, dtype=torch.bool)
    if reduce == "first":
        return hidden[:, 0]
    if mask is None:
        if reduce == "mean":
            return hidden.mean(dim=1)
        if reduce == "max":
            return hidden.amax(dim=1)
        return hidden[:, -1]
    if reduce == "mean":
        # one batched matrix product reads the hidden state once and writes only [batch, 1, d];
        # (hidden * weights).sum(1) would write and re-read a second [batch, tokens, d] tensor
        if not hidden.is_floating_point():  # e.g. token ids captured at an embedding's input
            hidden = hidden.to(torch.get_default_dtype())
        weights = mask.to(hidden.dtype).unsqueeze(1)
        summed = torch.bmm(weights, hidden).squeeze(1)
        return summed / weights.sum(dim=2).clamp(min=1.0)
    if reduce == "max":
        return hidden.masked_fill(~mask.unsqueeze(-1), torch.finfo(hidden.dtype).min).amax(dim=1)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (mask * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
