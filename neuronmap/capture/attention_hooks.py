"""Finding attention modules, recording their probabilities and ablating single heads.

Used by :mod:`neuronmap.analyses.attention`.

*Finding*: on one probe batch every module is hooked and the modules whose output is a tuple
holding, after its first element, a ``[batch, heads, queries, keys]`` tensor whose rows sum to
one are attention modules. The same tensor is often passed up by parent modules
(``BertAttention`` returns what ``BertSelfAttention`` computed); the deepest module is kept.
A Hugging Face model loaded with SDPA or flash attention computes no probabilities; it is
switched to ``"eager"`` for the run when allowed (and switched back afterwards), otherwise the
error says how to load it.

*Ablating* head ``h`` sets its context vector ``A_h V_h`` to zero (Michel et al. 2019, "Are
Sixteen Heads Really Better than One?", Sec. 2.1/3, mask ``xi_h = 0``), by the first of:

1. ``head_mask`` (a ``[layers, heads]`` tensor with a zero) when the model's ``forward`` accepts
   it (transformers < 5 BERT, RoBERTa, ViT ...);
2. a forward pre-hook zeroing the head's slice of the input of the module's output projection,
   when the attention module has one as a child (``o_proj``, ``out_proj``, ``c_proj``,
   ``out_lin``: LLaMA, GPT-2, DistilBERT, ``nn.MultiheadAttention``-style layers);
3. a forward hook zeroing the head's slice of the module's first output, which is then the
   concatenation of the head contexts before the projection (BERT's ``BertSelfAttention`` in
   transformers 5, ViT's ``ViTSelfAttention``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from neuronmap.capture.forward import forward
from neuronmap.errors import InvalidParameterError, NeuronMapError

__all__ = [
    "AttentionModule",
    "HeadAblation",
    "ablation_mechanism",
    "eager_attention",
    "find_attention_modules",
]

_PROJECTIONS = ("o_proj", "out_proj", "c_proj", "out_lin")
Mechanism = Literal["head_mask", "projection_input", "module_output"]


@dataclass(frozen=True)
class AttentionModule:
    """An attention module and where its probabilities are in its output."""

    #: Dotted module name (the layer in metric keys).
    name: str
    module: nn.Module
    #: Index of the probabilities in the module's output tuple.
    index: int
    heads: int


def _is_attention(value: Any, batch_size: int) -> bool:
    if not (isinstance(value, torch.Tensor) and value.ndim == 4 and value.is_floating_point()):
        return False
    if value.shape[0] != batch_size or value.shape[-1] < 1:
        return False
    return bool(((value.detach().float().sum(-1) - 1).abs() < 1e-3).all())


def find_attention_modules(
    model: nn.Module, batch: Mapping[str, torch.Tensor], positional: bool
) -> list[AttentionModule]:
    """Attention modules of ``model``, in model order, found by running it on ``batch``."""
    batch_size = len(next(iter(batch.values())))
    seen: dict[int, list[tuple[str, int, int]]] = {}
    # The same attention tensor is passed up through its parent modules; it is recognised by
    # identity. Holding a reference keeps each id unique for the whole pass: a freed tensor's id
    # can be reused by the next layer's attention map, which would merge two layers into one.
    alive: list[torch.Tensor] = []
    modules = dict(model.named_modules())
    handles = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, (tuple, list)):
                for index, value in enumerate(output[1:], start=1):
                    if _is_attention(value, batch_size):
                        alive.append(value)
                        seen.setdefault(id(value), []).append((name, index, int(value.shape[1])))

        return hook

    try:
        for name, module in modules.items():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            forward(model, batch, positional=positional, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    found = {}
    for owners in seen.values():
        name, index, heads = max(owners, key=lambda owner: owner[0].count("."))
        found[name] = AttentionModule(name, modules[name], index, heads)
    order = {name: i for i, name in enumerate(modules)}
    return sorted(found.values(), key=lambda m: order[m.name])


@contextmanager
def eager_attention(model: nn.Module, *, allowed: bool) -> Iterator[str | None]:
    """Switch a Hugging Face model to eager attention for the block; yields a note when it did."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current in (None, "eager"):
        yield None
        return
    switch: Any = getattr(model, "set_attn_implementation", None)
    if not allowed or not callable(switch):
        raise NeuronMapError(_no_maps_message(model, current))
    try:
        switch("eager")
    except Exception as err:
        raise NeuronMapError(
            _no_maps_message(model, current) + f" Switching to eager failed: {err}"
        ) from err
    try:
        yield (
            f"{type(model).__name__} uses attn_implementation={current!r}; "
            "it ran with 'eager' for this analysis."
        )
    finally:
        switch(current)


def _no_maps_message(model: nn.Module, implementation: str | None) -> str:
    return (
        f"{type(model).__name__} returned no attention probabilities (attn_implementation={implementation!r}: "
        'SDPA and flash attention never compute them). Load the model with attn_implementation="eager", e.g. '
        'AutoModel.from_pretrained(name, attn_implementation="eager"), or let AttentionAnalysis switch it for '
        "the run with switch_to_eager=True."
    )


def ablation_mechanism(model: nn.Module, module: AttentionModule) -> Mechanism:
    """Which of the three mechanisms of the module docstring ablates heads of ``module``."""
    if "head_mask" in inspect.signature(model.forward).parameters:
        return "head_mask"
    if _projection(module.module) is not None:
        return "projection_input"
    return "module_output"


def _projection(module: nn.Module) -> nn.Module | None:
    children = dict(module.named_children())
    return next((children[name] for name in _PROJECTIONS if name in children), None)


def _zero_head(tensor: torch.Tensor, head: int, heads: int, where: str) -> torch.Tensor:
    width = tensor.shape[-1]
    if width % heads:
        raise InvalidParameterError(
            f"Cannot split the {where} of width {width} into {heads} heads; head ablation needs the "
            "concatenated head contexts there."
        )
    size = width // heads
    out = tensor.clone()
    out[..., head * size : (head + 1) * size] = 0
    return out


class HeadAblation:
    """Ablate one head of one attention module while the block runs.

    Args:
        model: The model.
        modules: All attention modules (their order is the ``head_mask`` layer order).
        layer: Index of the module in ``modules``.
        head: Head to ablate.

    Attributes:
        kwargs: Extra forward arguments (``head_mask``) when that mechanism is used.
    """

    def __init__(
        self, model: nn.Module, modules: list[AttentionModule], layer: int, head: int
    ) -> None:
        self.model, self.modules, self.layer, self.head = model, modules, layer, head
        self.mechanism = ablation_mechanism(model, modules[layer])
        self.kwargs: dict[str, Any] = {}
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def __enter__(self) -> HeadAblation:
        target = self.modules[self.layer]
        heads, head = target.heads, self.head
        if self.mechanism == "head_mask":
            mask = torch.ones(len(self.modules), max(m.heads for m in self.modules))
            mask[self.layer, head] = 0
            self.kwargs = {"head_mask": mask.to(next(self.model.parameters()).device)}
        elif self.mechanism == "projection_input":

            def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
                return (
                    _zero_head(args[0], head, heads, "input of the output projection"),
                    *args[1:],
                )

            projection = _projection(target.module)
            assert projection is not None  # ablation_mechanism checked it
            self._handle = projection.register_forward_pre_hook(pre_hook)
        else:

            def hook(module: nn.Module, args: Any, output: Any) -> Any:
                first = _zero_head(output[0], head, heads, f"first output of {target.name}")
                return (first, *output[1:]) if isinstance(output, tuple) else [first, *output[1:]]

            self._handle = target.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
