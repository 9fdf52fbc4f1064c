"""Preflight: find set-up mistakes before the first training step, where failing is cheap.

A selector that matches nothing, a model whose ``forward`` cannot take the probe batch, a
probe set that cannot be fingerprinted, an analysis naming a column the probe set lacks: each
would otherwise surface at the first scheduled run, an epoch (or hours) into training. The
callbacks run :func:`preflight` when training starts (Lightning ``on_fit_start``, the HF
Trainer's ``on_train_begin``); plain loops call :meth:`NeuronMap.preflight
<neuronmap.NeuronMap.preflight>` before their first step. Every problem found is listed in
one :class:`~neuronmap.errors.PreflightError`, so one fix-and-retry cycle fixes them all.

The check runs the real capture path (the same hooks, reduction and output handling as a
scheduled run) on one probe batch, in eval mode without gradients; the model's training
mode is restored afterwards and no state is changed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from neuronmap.errors import LayerNotFoundError, NeuronMapError, PreflightError

if TYPE_CHECKING:
    from torch import nn

    from neuronmap.engine import NeuronMap

__all__ = ["Preflight", "preflight"]


@dataclass(frozen=True)
class Preflight:
    """What a passed preflight found."""

    #: Clean layer names the selectors resolved to, in model order.
    layers: tuple[str, ...]
    #: Shape of each layer's captured activations on the preflight batch.
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: The probe set's fingerprint.
    probe_fingerprint: str = ""
    #: Examples in the preflight batch.
    batch_examples: int = 0
    #: Wall-clock seconds the check took.
    duration_s: float = 0.0


def preflight(monitor: NeuronMap, model: nn.Module, *, owner: str = "NeuronMap") -> Preflight:
    """Check ``monitor``'s set-up against ``model``; raise one error listing every problem.

    Args:
        monitor: The monitor to check.
        model: The module the monitor will run (in Lightning, the ``LightningModule``).
        owner: Who asks, for the message (``NeuronMapCallback`` ...).

    Raises:
        PreflightError: One or more problems; ``.problems`` lists them.
    """
    from neuronmap.capture.hooks import run_probe
    from neuronmap.capture.monitored import monitored_capture
    from neuronmap.distributed import (
        current_world,
        eager_forward,
        hook_layers,
        ranks_agree,
        unwrap_model,
    )

    t0 = time.perf_counter()
    problems: list[str] = []
    target = unwrap_model(model)
    fingerprint = ""
    try:
        fingerprint = monitor.probe.fingerprint()
    except Exception as err:
        problems.append(
            f"Probe set {monitor.probe.name!r} cannot be fingerprinted ({type(err).__name__}: {err}); every "
            "metadata column must hold scalars (str, int, float, bool)."
        )
    for analysis in monitor.analyses:
        try:
            problems.extend(analysis.check_probe(monitor.probe))
        except Exception as err:
            problems.append(f"Analysis {analysis.name!r} could not check the probe set ({type(err).__name__}: {err}).")

    names: dict[str, str] | None = None
    try:
        names = hook_layers(target, monitor.layers)
    except LayerNotFoundError as err:  # its message names the nearest module names
        problems.append(str(err))
    shapes: dict[str, tuple[int, ...]] = {}
    n = min(len(monitor.probe), monitor.batch_size)
    if names is not None and n > 0:
        needs_outputs = any(a.needs_outputs for a in monitor.analyses)
        batch = monitor.probe.subset(np.arange(n))
        cap = monitored_capture(monitor, target, names)
        try:
            with ranks_agree(current_world(monitor.distributed), "Preflight"), \
                    eager_forward(target, list(names.values())):
                run_probe(target, batch, cap, batch_size=n, device=monitor.device)
            captured = cap.collect()
            silent = [clean for clean, real in names.items() if real not in captured]
            if silent:
                problems.append(
                    f"Layer(s) {silent} matched the selectors but did not run in {type(target).__name__}'s "
                    "forward on the probe batch, so they would capture nothing; select modules the forward calls."
                )
            shapes = {clean: tuple(captured[real].shape) for clean, real in names.items() if real in captured}
            if needs_outputs and cap.collect_outputs() is None:
                wanting = [a.name for a in monitor.analyses if a.needs_outputs]
                problems.append(
                    f"Analyses {wanting} need the model's output (logits), but {type(target).__name__}'s forward "
                    "returned none NeuronMap can read (a tensor, or a tuple/dict/ModelOutput with `logits`)."
                )
            # max_bytes=None is "no budget": nothing to check against
            if monitor.reduce == "none" and captured and monitor.max_bytes is not None:
                per_example = sum(t.element_size() * t.nelement() for t in captured.values()) / n
                needed = per_example * len(monitor.probe)
                if needed > monitor.max_bytes:
                    problems.append(
                        f"reduce='none' would hold about {needed / 2**20:.0f} MiB for {len(monitor.probe)} probe "
                        f"examples, over max_bytes={monitor.max_bytes} ({monitor.max_bytes / 2**20:.0f} MiB); "
                        "use a reduction ('mean', 'first', 'last', 'max'), fewer layers, or a larger max_bytes."
                    )
        except NeuronMapError as err:
            hint = ""
            cause = err.__cause__
            if isinstance(cause, NotImplementedError | TypeError) and "forward" in f"{cause}":
                hint = (" NeuronMap runs the probe set through this module, which has no forward(); in Lightning, "
                        "pass NeuronMapCallback(module='<attribute>') to run the network the LightningModule "
                        "holds (e.g. module='model' for self.model), with selectors relative to it.")
            problems.append(f"{err}{hint}")
        except Exception as err:  # the model's own failure, named rather than thrown as a deep traceback
            problems.append(f"Running the probe batch through {type(target).__name__} failed: "
                            f"{type(err).__name__}: {err}")
    if problems:
        raise PreflightError(problems, owner=owner)
    return Preflight(
        layers=tuple(names or ()), shapes=shapes, probe_fingerprint=fingerprint, batch_examples=n,
        duration_s=time.perf_counter() - t0,
    )
