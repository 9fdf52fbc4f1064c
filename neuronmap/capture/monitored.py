"""Capture as a monitor does it: its layers, reduction and outputs, sharded under ``torch.distributed``.

:meth:`NeuronMap.capture_activations <neuronmap.NeuronMap.capture_activations>` and the
preflight (:mod:`neuronmap._preflight`) run the probe set through the same hooks with the
same settings; this module is that one path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from neuronmap.capture.hooks import ActivationCapture, Activations, run_probe, to_numpy

if TYPE_CHECKING:
    from neuronmap.engine import NeuronMap

__all__ = ["NoModel", "capture_probe", "monitored_capture"]

#: Key under which the model output travels with the layers through the distributed gather.
_OUTPUTS_KEY = "\x00outputs"


class NoModel(nn.Module):
    """Stands in for the model when analysing saved activations; calling it is an error."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("This analysis needs the model, but only saved activations were given.")


def monitored_capture(monitor: NeuronMap, target: nn.Module, names: dict[str, str]) -> ActivationCapture:
    """An :class:`ActivationCapture` of ``names`` (clean -> real module name) with ``monitor``'s settings."""
    return ActivationCapture(
        target,
        list(names.values()),
        reduce=monitor.reduce,
        capture=monitor.capture,  # type: ignore[arg-type]
        output_index=monitor.output_index,
        capture_model_output=any(a.needs_outputs for a in monitor.analyses),
    )


def capture_probe(monitor: NeuronMap, model: nn.Module) -> Activations:
    """The monitor's layers (and the model output if an analysis needs it) on its whole probe set.

    Wrappers are looked through (:func:`neuronmap.distributed.unwrap_model`), so layer names
    are those of the bare model. Under ``torch.distributed`` every rank must call this: each
    runs its shard of the probe set and every rank receives the full activations, in the
    probe set's order.

    Raises:
        LayerNotFoundError, ForwardError, MemoryBudgetError: As :func:`capture_activations`;
            under ``torch.distributed``, on every rank when any rank failed.
    """
    from neuronmap.distributed import (
        current_world,
        eager_forward,
        gather_rows,
        hook_layers,
        ranks_agree,
        shard_probe,
        unwrap_model,
    )

    target = unwrap_model(model)
    names = hook_layers(target, monitor.layers)
    world = current_world(monitor.distributed)
    probe = monitor.probe if world is None else shard_probe(monitor.probe, world)
    cap = monitored_capture(monitor, target, names)
    with ranks_agree(world), eager_forward(target, list(names.values())):
        run_probe(target, probe, cap, batch_size=monitor.batch_size, device=monitor.device,
                  max_bytes=monitor.max_bytes)
    captured = cap.collect()
    arrays = {clean: to_numpy(captured[real]) for clean, real in names.items() if real in captured}
    outputs = cap.collect_outputs()
    if outputs is not None:
        arrays[_OUTPUTS_KEY] = to_numpy(outputs)
    if world is not None:
        arrays = gather_rows(arrays, len(monitor.probe), world)
    logits = arrays.pop(_OUTPUTS_KEY, None)
    return Activations(arrays, reduce=monitor.reduce, outputs=logits)
