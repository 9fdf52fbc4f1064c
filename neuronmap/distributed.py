"""Distributed and wrapped models: shard the probe set, gather activations, find the hook targets.

Under ``torch.distributed`` (DDP or FSDP, launched by Lightning, Accelerate or ``torchrun``)
every rank calls the engine at the same moment. The probe set is cut into contiguous shards of
equal size (the last one padded by repeating an example, as ``DistributedSampler`` pads), so
every rank runs the same number of forward passes with the same batch sizes: the collectives
inside an FSDP forward then line up and nothing waits forever. The reduced activations are
all-gathered in rank order and the padding dropped, so every rank ends up with the full
``[n, d]`` arrays in the probe set's own order. Analyses and reporting then run once, on rank
zero; for a parameter-sharded (FSDP) model the analyses run on every rank, because any extra
forward pass they make needs every rank, and only rank zero reports.

Wrappers are looked through so that hooks sit on the modules that really run:
``DistributedDataParallel`` / ``DataParallel`` give their ``module``; a ``torch.compile``'d
model gives its ``_orig_mod`` (hooks added after compilation never fire inside a compiled
graph); FSDP is kept (its forward gathers the parameters) and the wrapper components of its
module names (``_fsdp_wrapped_module``, ``_checkpoint_wrapped_module``, ``_orig_mod``) are
hidden, so ``encoder.layer.*`` selects the same layers before and after wrapping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from neuronmap.capture.layers import resolve_layers
from neuronmap.errors import ForwardError, InvalidParameterError, NeuronMapError
from neuronmap.probe import ProbeSet

__all__ = [
    "DistributedMode",
    "World",
    "current_world",
    "eager_forward",
    "gather_rows",
    "hook_layers",
    "is_rank_zero",
    "is_sharded",
    "ranks_agree",
    "shard_indices",
    "shard_probe",
    "unwrap_model",
]

DistributedMode = Literal["auto", "off"]
_MODES: tuple[str, ...] = ("auto", "off")
#: Name components that wrappers insert between a module and its children.
_WRAPPER_PARTS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})


@dataclass(frozen=True)
class World:
    """This process's place in the default process group."""

    #: Global rank of this process.
    rank: int
    #: Number of processes.
    size: int

    @property
    def is_zero(self) -> bool:
        """Whether this is rank zero (the one that analyses and reports)."""
        return self.rank == 0


def current_world(mode: DistributedMode = "auto") -> World | None:
    """The process group the engine must cooperate with, or ``None`` when it runs alone.

    Args:
        mode: ``"auto"`` joins the default ``torch.distributed`` group when one with more than
            one process is initialised; ``"off"`` never does (for code that calls the engine on
            one rank only).

    Raises:
        InvalidParameterError: ``mode`` is not one of the allowed values.
    """
    if mode not in _MODES:
        raise InvalidParameterError(
            f"The 'distributed' parameter must be one of {list(_MODES)}; got {mode!r}."
        )
    if mode == "off" or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    size = torch.distributed.get_world_size()
    return World(rank=torch.distributed.get_rank(), size=size) if size > 1 else None


def is_rank_zero() -> bool:
    """Whether this process is rank zero (``True`` outside ``torch.distributed``)."""
    world = current_world()
    return world is None or world.is_zero


# ---------------------------------------------------------------------- sharding
def shard_indices(n: int, world: World) -> np.ndarray:
    """Probe-set rows that ``world.rank`` runs: a contiguous slice padded to ``ceil(n / size)``.

    Padding repeats the last example of the set, so every rank runs the same batches; the
    padded rows are dropped by :func:`gather_rows`.

    Example:
        >>> [shard_indices(5, World(r, 2)).tolist() for r in range(2)]
        [[0, 1, 2], [3, 4, 4]]
    """
    per_rank = -(-n // world.size)
    start = min(world.rank * per_rank, n)
    stop = min(start + per_rank, n)
    return np.concatenate([np.arange(start, stop), np.full(per_rank - (stop - start), n - 1)]).astype(int)


def shard_probe(probe: ProbeSet, world: World) -> ProbeSet:
    """The (padded) part of ``probe`` that this rank runs (see :func:`shard_indices`)."""
    return probe.subset(shard_indices(len(probe), world))


def _collective_device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo (and the cpu half of "cpu:gloo,cuda:nccl") takes CPU ones.
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(arrays: Mapping[str, np.ndarray], n: int, world: World) -> dict[str, np.ndarray]:
    """All-gather per-rank rows in rank order and drop the padding of :func:`shard_indices`.

    Every rank must call this with the same keys, in the same order, with arrays of equal
    shape (what the padded shards give). One tensor ``all_gather`` per key; no pickle.

    Args:
        arrays: Key -> this rank's ``[ceil(n / size), ...]`` rows.
        n: Number of examples in the whole probe set.
        world: The process group.

    Returns:
        Key -> ``[n, ...]`` rows, in the probe set's order, on every rank.
    """
    per_rank = -(-n // world.size)
    real = np.concatenate(
        [np.arange(per_rank) < min(per_rank, max(n - r * per_rank, 0)) for r in range(world.size)]
    )
    device = _collective_device()
    gathered: dict[str, np.ndarray] = {}
    for key, local in arrays.items():
        tensor = torch.from_numpy(np.ascontiguousarray(local)).to(device)
        parts = [torch.empty_like(tensor) for _ in range(world.size)]
        torch.distributed.all_gather(parts, tensor)
        gathered[key] = torch.cat(parts).cpu().numpy()[real]
    return gathered


@contextlib.contextmanager
def ranks_agree(world: World | None, what: str = "Probe capture") -> Iterator[None]:
    """Make every rank raise when the block raised on any rank, instead of waiting forever.

    A rank whose forward pass raises would never reach the gather the other ranks wait in;
    each rank therefore reports success or failure in one small all-gather first.

    Raises:
        ForwardError: Another rank failed (this rank's own exception is re-raised as is).
    """
    if world is None:
        yield
        return
    try:
        yield
    except BaseException:
        _failed_ranks(world, failed=True)
        raise
    failed = _failed_ranks(world, failed=False)
    if failed:
        raise ForwardError(
            f"{what} failed on rank(s) {failed} of {world.size}; this rank (rank {world.rank}) stops "
            "too so that no rank waits forever. See the failing rank's log for the cause."
        )


def _failed_ranks(world: World, *, failed: bool) -> list[int]:
    flag = torch.tensor([int(failed)], device=_collective_device())
    flags = [torch.zeros_like(flag) for _ in range(world.size)]
    torch.distributed.all_gather(flags, flag)
    return [rank for rank, f in enumerate(flags) if int(f.item())]


def any_rank(decision: bool, mode: DistributedMode = "auto") -> bool:
    """``True`` on every rank when ``decision`` is true on any rank (Lightning's ``reduce_boolean_decision``).

    Decisions that stop training must be the same on every rank, or the ranks that go on wait
    forever for the ones that stopped. A collective: every rank must call it at the same point.

    Example:
        >>> any_rank(True)  # one process: the decision itself
        True
    """
    world = current_world(mode)
    if world is None:
        return bool(decision)
    flag = torch.tensor([int(bool(decision))], device=_collective_device())
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(int(flag.item()))


# ---------------------------------------------------------------------- wrapped models
def unwrap_model(model: nn.Module) -> nn.Module:
    """The module to hook and run: through DDP / DataParallel / DeepSpeed and a compiled root.

    FSDP is not unwrapped: its forward gathers the sharded parameters, so the probe set has to
    go through it (see :func:`hook_layers` for the names).

    Example:
        >>> import torch
        >>> from neuronmap.testing import tiny_mlp
        >>> model = tiny_mlp()
        >>> unwrap_model(torch.nn.DataParallel(model)) is model
        True
    """
    seen: set[int] = set()
    while id(model) not in seen:
        seen.add(id(model))
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) or (
            type(model).__name__ == "DeepSpeedEngine"
            and isinstance(getattr(model, "module", None), nn.Module)
        ):
            model = cast(nn.Module, model.module)
        elif _is_compiled(model):
            model = cast(nn.Module, model._orig_mod)
    return model


def _is_compiled(module: nn.Module) -> bool:
    # OptimizedModule is private API; the class name and _orig_mod are what torch.compile documents.
    return type(module).__name__ == "OptimizedModule" and isinstance(
        getattr(module, "_orig_mod", None), nn.Module
    )


def is_sharded(model: nn.Module) -> bool:
    """Whether parameters are sharded across ranks (FSDP1 or FSDP2 ``fully_shard``) anywhere."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch built without distributed support
        return False
    fsdp2: type[Any] | None
    try:
        from torch.distributed.fsdp import FSDPModule as fsdp2
    except ImportError:
        fsdp2 = None
    return any(
        isinstance(m, FullyShardedDataParallel) or (fsdp2 is not None and isinstance(m, fsdp2))
        for m in model.modules()
    )


def _clean_name(name: str) -> str:
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


class _RenamedModules:
    """A read-only view of a model's ``named_modules()`` with wrapper components removed."""

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self._modules = dict(modules)

    def named_modules(self) -> Iterator[tuple[str, nn.Module]]:
        yield from self._modules.items()


def hook_layers(model: nn.Module, selectors: str | Sequence[str]) -> dict[str, str]:
    """Resolve selectors against wrapper-free names; map each clean name to the module's real name.

    Args:
        model: The model as returned by :func:`unwrap_model` (FSDP or checkpoint wrappers inside
            are fine).
        selectors: Layer selectors, written against the unwrapped model's names.

    Returns:
        Clean name (used in metric keys) -> real dotted name (where the hook goes). When a
        wrapper and the module it wraps share a clean name, the inner module is chosen.

    Raises:
        LayerNotFoundError: A selector matches nothing (with the nearest clean names).
    """
    real: dict[str, str] = {}
    modules: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        clean = _clean_name(name)
        real[clean] = name  # named_modules() yields a wrapper before the module it wraps
        modules[clean] = module
    if all(clean == name for clean, name in real.items()):
        return {name: name for name in resolve_layers(model, selectors)}
    view = type(type(model).__name__, (_RenamedModules,), {})(modules)
    return {clean: real[clean] for clean in resolve_layers(view, selectors)}


def eager_forward(model: nn.Module, layers: Sequence[str]) -> contextlib.AbstractContextManager[Any]:
    """A context in which compiled sub-modules of ``model`` run eagerly, so hooks inside them fire.

    Hooks registered after ``torch.compile`` are not part of the compiled graph and silently
    never fire; ``torch.compiler.set_stance("force_eager")`` (torch >= 2.6) runs the original
    code for the duration of the probe run, without recompiling anything.

    Raises:
        NeuronMapError: A selected layer lies inside a compiled sub-module and this torch has no
            ``set_stance``; the message says what to do instead.
    """
    compiled = [name for name, m in model.named_modules() if _is_compiled(m)]
    if not compiled:
        return contextlib.nullcontext()
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is not None:
        return set_stance("force_eager")  # type: ignore[no-any-return,unused-ignore]
    inside = [layer for layer in layers if any(layer.startswith(f"{c}._orig_mod") for c in compiled)]
    if inside:
        raise NeuronMapError(
            f"Layer(s) {inside[:3]} lie inside torch.compile'd sub-module(s) {compiled[:3]}, where hooks "
            f"added after compilation never fire, and torch {torch.__version__} has no "
            "torch.compiler.set_stance to run them eagerly. Compile the whole model instead "
            "(NeuronMap runs its _orig_mod), monitor the compiled module itself, or upgrade to torch >= 2.6."
        )
    return contextlib.nullcontext()
