"""Run a model with some activations edited: patching, noising, restoring and gradient taps.

Every mechanistic analysis (causal tracing, activation patching, circuit discovery, TCAV
gradients) is one primitive applied with different edits: *while this block runs, replace
the activation of node X by f(activation)*. A :class:`Node` is a module's output or one
attention head, i.e. a slice of the input of the attention output projection (the
concatenation of the heads' outputs, as in Vaswani et al. 2017, eq. 4-5), which is how
Wang et al. (2022) and Conmy et al. (2023) address heads.

:func:`intervene` attaches forward hooks (pre-hooks for heads) and removes them in
``finally``, so no handle survives an exception (TransformerLens ``hooks()``).

Example:
    >>> import torch
    >>> from neuronmap.testing import tiny_mlp
    >>> model = tiny_mlp()
    >>> x = torch.randn(3, 8)
    >>> with intervene(model, {Node("net.1"): torch.zeros_like}):
    ...     out = model(x)
    >>> bool(torch.allclose(out, model.net[4](model.net[3](model.net[2](torch.zeros(3, 16))))))
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# forward and logits_of live in capture.forward; they stay importable from here, where they were first.
from neuronmap.capture.forward import describe_output, extract_tensor, forward, logits_of
from neuronmap.capture.layers import resolve_layers
from neuronmap.errors import InvalidParameterError

__all__ = [
    "Edit",
    "Node",
    "answer_logits",
    "forward",
    "intervene",
    "logits_of",
    "record",
    "resolve_nodes",
]

#: An edit maps a node's activation to its replacement (same shape).
Edit = Callable[[torch.Tensor], torch.Tensor]

_HEAD_SEPARATOR = "/head_"


@dataclass(frozen=True)
class Node:
    """A component whose activation can be read or replaced.

    Attributes:
        module: Dotted ``named_modules()`` name.
        head: Head index, or ``None`` for the module's whole output.
        n_heads: Number of heads the module's input is split into (needed with ``head``).
    """

    module: str
    head: int | None = None
    n_heads: int | None = None

    @property
    def name(self) -> str:
        """Stable key: the module name, plus ``/head_<h>`` for a head."""
        return self.module if self.head is None else f"{self.module}{_HEAD_SEPARATOR}{self.head}"

    @property
    def block(self) -> int | None:
        """Index of the enclosing block (the first integer component of the name), if any."""
        match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", self.module)
        return int(match.group(1)) if match else None

    def read(self, tensor: torch.Tensor) -> torch.Tensor:
        """This node's part of the module tensor (a head's slice of the last axis)."""
        if self.head is None:
            return tensor
        size = self._head_size(tensor)
        return tensor[..., self.head * size : (self.head + 1) * size]

    def write(self, tensor: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """The module tensor with this node's part replaced by ``value`` (out of place)."""
        if self.head is None:
            return value
        size = self._head_size(tensor)
        lo, hi = self.head * size, (self.head + 1) * size
        return torch.cat([tensor[..., :lo], value, tensor[..., hi:]], dim=-1)

    def _head_size(self, tensor: torch.Tensor) -> int:
        n_heads = self.n_heads or 0
        if n_heads < 1 or tensor.shape[-1] % n_heads:
            raise InvalidParameterError(
                f"Cannot split the input of {self.module!r} (last axis {tensor.shape[-1]}) into "
                f"n_heads={self.n_heads} equal heads; pass the model's number of attention heads."
            )
        return tensor.shape[-1] // n_heads


def resolve_nodes(
    model: nn.Module,
    *,
    layers: str | Sequence[str] | None = None,
    heads: str | Sequence[str] | None = None,
    n_heads: int | None = None,
) -> list[Node]:
    """Nodes for the modules matched by ``layers`` and the heads of the ``heads`` modules.

    Args:
        model: The model.
        layers: Selectors of modules whose whole output is a node (blocks, MLPs).
        heads: Selectors of attention *output projections* (``attention.output.dense`` in
            BERT, ``attn.c_proj`` in GPT-2, ``out_proj``): their input is the concatenation
            of the heads' outputs, so each head is a slice of it.
        n_heads: Heads per projection; default ``model.config.num_attention_heads`` (or
            ``n_head``).

    Returns:
        Nodes in model order (a projection's heads in head order).

    Raises:
        InvalidParameterError: Neither selector given, or the number of heads is unknown.
        LayerNotFoundError: A selector matches no module.
    """
    if layers is None and heads is None:
        raise InvalidParameterError(
            "Pass layers= (module outputs) and/or heads= (attention output projections); got neither."
        )
    modules = resolve_layers(model, layers) if layers is not None else []
    projections = resolve_layers(model, heads) if heads is not None else []
    if projections:
        config = getattr(model, "config", None)
        n_heads = n_heads or getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
        if not isinstance(n_heads, int) or n_heads < 1:
            raise InvalidParameterError(
                f"n_heads must be a positive int when heads= is given; got {n_heads!r} and the model "
                "has no config.num_attention_heads to fall back on."
            )
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    nodes = [Node(m) for m in modules]
    nodes += [Node(p, h, n_heads) for p in projections for h in range(n_heads or 0)]
    return sorted(nodes, key=lambda n: (order[n.module], -1 if n.head is None else n.head))


def _replace_hidden(value: Any, new: torch.Tensor, index: int | str | None) -> Any:
    """``value`` (a module output) with its hidden-state tensor replaced by ``new``."""
    if isinstance(value, torch.Tensor):
        return new
    old = extract_tensor(value, index)
    if isinstance(value, Mapping):
        key = next(k for k, v in value.items() if v is old)
        # a transformers ModelOutput keeps its class (and attribute access) when rebuilt
        out: Any = value.__class__(**value) if hasattr(value, "to_tuple") else dict(value)
        out[key] = new
        return out
    if isinstance(value, (tuple, list)):
        pos = next(i for i, v in enumerate(value) if v is old)
        items = list(value)
        items[pos] = new
        return type(value)(items) if isinstance(value, list) else tuple(items)
    return value


def _edit_tensor(tensor: torch.Tensor, edits: Sequence[tuple[Node, Edit]]) -> torch.Tensor:
    for node, edit in edits:
        current = node.read(tensor)
        new = edit(current)
        if new.shape != current.shape:
            raise InvalidParameterError(
                f"An edit of node {node.name!r} returned shape {tuple(new.shape)}; it must keep "
                f"the activation's shape {tuple(current.shape)}."
            )
        tensor = node.write(tensor, new)
    return tensor


@contextmanager
def intervene(
    model: nn.Module, edits: Mapping[Node, Edit], *, output_index: int | str | None = None
) -> Iterator[None]:
    """Replace each node's activation by ``edit(activation)`` in every forward inside the block.

    Whole-module nodes are edited by a forward hook on the module's output; heads by a
    forward pre-hook on the projection's input. Several edits of one module apply in the
    order given. Hooks are removed when the block exits, also on an exception.

    Args:
        model: The model.
        edits: ``Node -> edit``; an edit gets the node's activation (a head's slice
            ``[..., head_dim]``) and returns a tensor of the same shape.
        output_index: Element (int) or key (str) of tuple/dict outputs holding the hidden
            state (default: the first tensor / ``last_hidden_state``).

    Raises:
        LayerNotFoundError: A node names no module.
    """
    modules = dict(model.named_modules())
    if edits:
        resolve_layers(model, sorted({n.module for n in edits}))  # a clear error for a bad name
    by_output: dict[str, list[tuple[Node, Edit]]] = {}
    by_input: dict[str, list[tuple[Node, Edit]]] = {}
    for node, edit in edits.items():
        (by_input if node.head is not None else by_output).setdefault(node.module, []).append((node, edit))
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, items in by_output.items():

            def hook(module: nn.Module, args: Any, output: Any, _items: Any = items, _name: str = name) -> Any:
                hidden = extract_tensor(output, output_index)
                if hidden is None:
                    raise InvalidParameterError(
                        f"Module {_name!r} output holds no tensor to edit: got {describe_output(output)}."
                    )
                return _replace_hidden(output, _edit_tensor(hidden, _items), output_index)

            handles.append(modules[name].register_forward_hook(hook))
        for name, items in by_input.items():

            def pre_hook(module: nn.Module, args: tuple[Any, ...], _items: Any = items) -> Any:
                return (_edit_tensor(args[0], _items), *args[1:])

            handles.append(modules[name].register_forward_pre_hook(pre_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def record(
    model: nn.Module, nodes: Sequence[Node], *, detach: bool = True, output_index: int | str | None = None
) -> Iterator[dict[Node, torch.Tensor]]:
    """Record each node's full (token-level) activation during the forwards in the block.

    The returned dict is filled as the model runs; a later forward overwrites an earlier
    one. With ``detach=False`` the tensors stay in the autograd graph.

    Example:
        >>> import torch
        >>> from neuronmap.testing import tiny_mlp
        >>> model = tiny_mlp()
        >>> with record(model, [Node("net.0")]) as seen:
        ...     _ = model(torch.randn(5, 8))
        >>> tuple(seen[Node("net.0")].shape)
        (5, 16)
    """
    seen: dict[Node, torch.Tensor] = {}

    def tap(node: Node) -> Edit:
        def edit(act: torch.Tensor) -> torch.Tensor:
            seen[node] = act.detach() if detach else act
            return act

        return edit

    with intervene(model, {node: tap(node) for node in nodes}, output_index=output_index):
        yield seen


def answer_logits(logits: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of the prediction each example is judged on, ``[batch, classes]``.

    A classifier's ``[batch, classes]`` logits are returned as they are; a language model's
    ``[batch, tokens, vocab]`` logits give the last real (non-padding) position, the one
    that predicts the next token.
    """
    if logits.ndim == 2:
        return logits
    if logits.ndim != 3:
        raise InvalidParameterError(
            f"Expected logits [batch, classes] or [batch, tokens, vocab]; got shape {tuple(logits.shape)}."
        )
    if attention_mask is None or attention_mask.shape[:2] != logits.shape[:2]:
        return logits[:, -1]
    positions = torch.arange(logits.shape[1], device=logits.device)
    last = (attention_mask.to(logits.device).bool() * positions).argmax(dim=1)
    return logits[torch.arange(logits.shape[0], device=logits.device), last]
