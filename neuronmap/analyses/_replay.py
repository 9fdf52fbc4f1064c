"""Skip the blocks an intervention cannot change, by replaying their outputs from a reference run.

Patching, circuit search and causal tracing run the same batch many times, each time editing
one node. Everything the model computed *before* the edited activation was read is the same as
in an unedited reference run of that batch, so the blocks that finished before that point
(the first ``k`` encoder layers for a node in layer ``k``) need not run again: their recorded
outputs are returned instead. For a node spread uniformly over the depth this halves the
forward cost, and the results are the same tensors, not an approximation.

Which modules are *blocks*: the children of every module on the path to a node's module
(``bert.embeddings``, ``bert.encoder.layer.0`` ... ``.5`` and, for a head in layer 3,
``bert.encoder.layer.3.attention.self``). A block is replayed only when, in the reference run,
it ran exactly once (a weight-shared block called in a loop runs every time), returned a tensor
or a tuple/list of tensors, and finished before the first node of the edit was read (a head's
input enters its projection; a whole module's output leaves it): a deterministic forward (eval
mode) computes the same values up to that point. The reference run must carry the same other
edits (the noise of causal tracing). Replaying swaps the block's ``forward`` for a copy of the
recorded output (a copy, so that an in-place operation downstream cannot alter the record);
its forward hooks (and so an edit of the block itself) still run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import nn

from neuronmap.capture.interventions import Edit, Node

__all__ = ["BlockReplay", "per_copy", "tile"]


class _Unsupported(Exception):
    """An output that is not a tensor or a plain tuple/list of them (and ``None``): never replayed."""


def _copy(value: Any) -> Any:
    """A detached copy of a module output; raises :class:`_Unsupported` for other structures."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if value is None:
        return None
    if type(value) in (tuple, list):
        return type(value)(_copy(v) for v in value)
    raise _Unsupported


class BlockReplay:
    """Record the blocks' outputs in a reference run, then replay those a given edit cannot change.

    Example:
        >>> import torch
        >>> from neuronmap.capture.interventions import intervene
        >>> from neuronmap.testing import tiny_mlp
        >>> model, x = tiny_mlp(), torch.randn(4, 8)
        >>> node = Node("net.3")
        >>> replay = BlockReplay(model, [node])
        >>> with replay.recording():
        ...     _ = model(x)
        >>> with intervene(model, {node: torch.zeros_like}):
        ...     full = model(x)
        ...     with replay.replaying([node]):
        ...         short = model(x)
        >>> bool(torch.equal(full, short)), replay.skipped([node])
        (True, ['net.0', 'net.1', 'net.2', 'net.3'])
    """

    def __init__(self, model: nn.Module, nodes: Iterable[Node]) -> None:
        self.model = model
        self._modules = dict(model.named_modules())
        nodes = list(nodes)
        blocks: set[str] = set()
        for node in nodes:
            parts = node.module.split(".")
            for depth in range(len(parts)):
                parent = ".".join(parts[:depth])
                if parent in self._modules:
                    prefix = f"{parent}." if parent else ""
                    blocks.update(prefix + name for name, _ in self._modules[parent].named_children())
        self._blocks = sorted(blocks)
        self._watched = sorted(blocks | {n.module for n in nodes})
        self._clear()

    def _clear(self) -> None:
        self._entered: dict[str, int] = {}
        self._exited: dict[str, int] = {}
        self._calls: dict[str, int] = {}
        self._outputs: dict[str, Any] = {}

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record, during the forward in the block, when each watched module ran and the blocks' outputs."""
        self._clear()
        clock = itertools.count()
        blocks = set(self._blocks)
        handles: list[torch.utils.hooks.RemovableHandle] = []

        def enter(name: str) -> Any:
            def hook(module: nn.Module, args: Any) -> None:
                self._entered.setdefault(name, next(clock))

            return hook

        def leave(name: str) -> Any:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                self._exited.setdefault(name, next(clock))
                self._calls[name] = self._calls.get(name, 0) + 1
                if name in blocks and self._calls[name] == 1:
                    with suppress(_Unsupported):
                        self._outputs[name] = _copy(output)

            return hook

        try:
            for name in self._watched:
                module = self._modules[name]
                handles.append(module.register_forward_pre_hook(enter(name)))
                handles.append(module.register_forward_hook(leave(name)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def skipped(self, nodes: Iterable[Node]) -> list[str]:
        """The blocks :meth:`replaying` would replay for an edit of ``nodes``."""
        reads = []
        for node in nodes:
            # a head is read as its projection's input, a module as its output
            times = self._entered if node.head is not None else self._exited
            if node.module not in times:
                return []
            reads.append(times[node.module])
        if not reads:
            return []
        first = min(reads)
        return [b for b in self._blocks
                if self._calls.get(b) == 1 and b in self._outputs and self._exited[b] <= first]

    @contextmanager
    def replaying(self, nodes: Iterable[Node], *, copies: int = 1, rows: int = 0) -> Iterator[None]:
        """Inside the block, the blocks an edit of ``nodes`` cannot change return their recorded output.

        Only valid for forwards on the inputs of the recorded run, or on ``copies`` copies of them
        stacked along the batch axis (:func:`tile`); a block whose output tensors do not all have
        ``rows`` (the recorded batch size) on their first axis is then computed (GPT-2's position
        embeddings ``[1, tokens, d]`` are shared by the batch).
        """
        swapped: list[tuple[nn.Module, Any]] = []
        try:
            for name in self.skipped(nodes):
                output = self._outputs[name]
                if copies > 1 and not _batch_major(output, rows):
                    continue
                module = self._modules[name]
                swapped.append((module, module.__dict__.get("forward")))
                module.forward = _constant_forward(output, copies)
            yield
        finally:
            for module, previous in swapped:
                if previous is None:
                    del module.forward
                else:
                    module.forward = previous


def _constant_forward(output: Any, copies: int) -> Any:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return tile(output, copies) if copies > 1 else _copy(output)

    return forward


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _batch_major(value: Any, rows: int) -> bool:
    tensors = _tensors(value)
    return bool(tensors) and all(t.ndim >= 1 and t.shape[0] == rows for t in tensors)


def tile(value: Any, copies: int) -> Any:
    """``copies`` copies of every tensor in ``value`` (a tensor, tuple, list or dict), stacked on the batch axis.

    Several edited runs of one batch then go through the model as one forward (copy ``c`` is
    rows ``c * n`` to ``(c + 1) * n``), which saves the per-forward overhead of a small batch.
    """
    if isinstance(value, torch.Tensor):
        return value.repeat(copies, *([1] * (value.ndim - 1))) if value.ndim else value
    if isinstance(value, dict):
        return {k: tile(v, copies) for k, v in value.items()}
    if type(value) in (tuple, list):
        return type(value)(tile(v, copies) for v in value)
    return value


def per_copy(edits: Sequence[Mapping[Node, Edit]], rows: int) -> dict[Node, Edit]:
    """One edit per node for a stacked forward whose copy ``c`` (``rows`` rows) gets ``edits[c]``."""
    nodes = {node for copy in edits for node in copy}

    def combined(node: Node) -> Edit:
        def edit(act: torch.Tensor) -> torch.Tensor:
            out = act.clone()
            for c, copy in enumerate(edits):
                if node in copy:
                    out[c * rows : (c + 1) * rows] = copy[node](act[c * rows : (c + 1) * rows])
            return out

        return edit

    return {node: combined(node) for node in nodes}

