"""Running the model on the probe set: one way to walk its batches, call the model and unwrap its output.

Capture, the interventions and every analysis that makes extra forward passes go through these
helpers, so a probe set's batches reach the model the same way everywhere: moved to the device,
passed positionally for a bare-tensor probe set and as keyword arguments otherwise, and the
output (a tensor, a tuple, a dict or a Hugging Face ``ModelOutput``) unwrapped by one rule.

Example:
    >>> import torch
    >>> from neuronmap.probe import ProbeSet
    >>> from neuronmap.testing import tiny_mlp
    >>> model, probe = tiny_mlp(), ProbeSet(torch.randn(10, 8))
    >>> shapes = [tuple(logits_of(forward(model, b, positional=probe.positional)).shape)
    ...           for b in probe_batches(probe, 4, no_grad=True)]
    >>> shapes
    [(4, 2), (4, 2), (2, 2)]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from neuronmap.errors import InvalidParameterError
from neuronmap.probe import POSITIONAL_KEY, ProbeSet

__all__ = [
    "ProgressHook",
    "describe_output",
    "extract_tensor",
    "forward",
    "logits_of",
    "model_device",
    "output_logits",
    "probe_batches",
]

_HIDDEN_KEYS = ("last_hidden_state", "hidden_states", "logits")

#: Wraps the batches (and is told how many there are), e.g. ``lambda it, n: tqdm(it, total=n)``.
ProgressHook = Callable[[Iterable[dict[str, torch.Tensor]], int], Iterable[dict[str, torch.Tensor]]]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def probe_batches(
    probe: ProbeSet,
    batch_size: int,
    device: torch.device | str | None = None,
    *,
    trim: bool = True,
    no_grad: bool = False,
    progress: ProgressHook | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """The probe set's inputs in order, in batches, on ``device`` (see :meth:`ProbeSet.batches`).

    Args:
        probe: The probe set.
        batch_size: Examples per batch.
        device: Where the batches go; ``None`` leaves them where the probe set holds them.
        trim: Cut text batches to their longest sequence (``False`` keeps one sequence length).
        no_grad: Run the loop body without gradients. Gradients come back when the loop ends,
            also after a ``break`` (the ``for`` loop closes the iterator).
        progress: Optional hook wrapping the batches, called with them and their number.

    Yields:
        A dict of tensors per batch; a positional probe set yields ``{"input": tensor}``.
    """
    batches: Iterable[dict[str, torch.Tensor]] = probe.batches(batch_size, device, trim=trim)
    if progress is not None:
        batches = progress(batches, -(-len(probe) // batch_size))
    if not no_grad:
        yield from batches
        return
    # The context spans the yields, so the caller's loop body runs without gradients too.
    with torch.no_grad():
        yield from batches


def _accepts(model: nn.Module, name: str) -> bool:
    params = inspect.signature(model.forward).parameters
    if name in params:
        return True
    # Hugging Face forwards take their flags through **kwargs in transformers 5.
    return hasattr(model, "config") and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def forward(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    positional: bool,
    output_attentions: bool = False,
    **kwargs: Any,
) -> Any:
    """Call ``model`` on one probe batch and return its raw output.

    Args:
        model: The model.
        batch: One batch of :func:`probe_batches`.
        positional: Pass the bare tensor positionally (``probe.positional``); else the batch as keywords.
        output_attentions: Also ask for attention probabilities, when the model's forward takes
            ``output_attentions`` (Hugging Face models).
        kwargs: Further keyword arguments for the model (``head_mask``).
    """
    if output_attentions and _accepts(model, "output_attentions"):
        kwargs.setdefault("output_attentions", True)
    return model(batch[POSITIONAL_KEY], **kwargs) if positional else model(**batch, **kwargs)


def describe_output(value: Any) -> str:
    """A short description of a module output for error messages (``tuple(Tensor(2, 3), NoneType)``)."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(describe_output(v) for v in value[:4])})"
    if isinstance(value, Mapping):
        return f"{type(value).__name__}(keys={list(value)[:6]})"
    return type(value).__name__


def extract_tensor(value: Any, index: int | str | None = None) -> torch.Tensor | None:
    """The hidden-state tensor held by a module output, or ``None`` when it holds none.

    Tuples give their ``index``-th element (default: the first tensor); mappings and
    ``ModelOutput``s give ``value[index]`` (default: ``last_hidden_state``, ``hidden_states``,
    ``logits``, then the first tensor).
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        if isinstance(index, str):
            item = value.get(index)
            return item if isinstance(item, torch.Tensor) else None
        for key in _HIDDEN_KEYS:
            item = value.get(key)
            if isinstance(item, torch.Tensor):
                return item
        values: Sequence[Any] = list(value.values())
    elif isinstance(value, (tuple, list)):
        if isinstance(index, int):
            return extract_tensor(value[index]) if -len(value) <= index < len(value) else None
        values = value
    else:
        return None
    for item in values:
        if isinstance(item, torch.Tensor):
            return item
    return None


def output_logits(output: Any, *, hidden_fallback: bool = True) -> torch.Tensor | None:
    """The logits in a model output, or ``None`` when it holds no tensor.

    A tensor is its own logits; a tuple gives its first tensor; a mapping or ``ModelOutput`` its
    ``logits`` entry, and without one (a base model's output) its hidden state when
    ``hidden_fallback``, else nothing.
    """
    if isinstance(output, Mapping):
        logits = extract_tensor(output, "logits")
        if logits is not None or not hidden_fallback:
            return logits
    return extract_tensor(output)


def logits_of(output: Any) -> torch.Tensor:
    """:func:`output_logits`, for callers that cannot go on without them.

    Raises:
        InvalidParameterError: The output holds no tensor.
    """
    logits = output_logits(output)
    if logits is None:
        raise InvalidParameterError(f"The model output holds no logits tensor: got {describe_output(output)}.")
    return logits
