"""NeuronMap as a Hugging Face ``TrainerCallback``: one line added to ``Trainer(callbacks=[...])``."""

from __future__ import annotations

import inspect
import json
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from neuronmap._imports import TRANSFORMERS_AVAILABLE
from neuronmap.callbacks._common import (
    CardSpec,
    attach_audit,
    attach_gates,
    build_monitor,
    choose_reporters,
    close_monitor,
    local_run_dir,
    log_card,
    uses_default_reporters,
)
from neuronmap.distributed import any_rank
from neuronmap.engine import NeuronMap
from neuronmap.errors import MissingDependencyError, ReporterWarning

if not TRANSFORMERS_AVAILABLE:  # pragma: no cover - exercised only without transformers
    raise MissingDependencyError(f"NeuronMapTrainerCallback needs transformers. {TRANSFORMERS_AVAILABLE}")

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

__all__ = ["STATE_FILE", "NeuronMapTrainerCallback"]

#: File, inside each ``checkpoint-<step>`` folder, holding the callback's state.
STATE_FILE = "neuronmap_state.json"
#: HF integration callback class -> the tracker NeuronMap reports to through its writer.
_HF_TRACKERS = ("mlflow", "wandb", "tensorboard")


def _epoch_index(state: TrainerState) -> int | None:
    # HF's state.epoch counts finished fractions (1.0 at the end of the first epoch); the
    # schedule, like Lightning's current_epoch, counts epochs from 0.
    if state.epoch is None:
        return None
    return max(math.ceil(state.epoch) - 1, 0)


def _calling_handler() -> Any | None:
    """The ``CallbackHandler`` that is calling us (it knows the other callbacks' writers).

    HF hands callbacks no reference to the trainer or to each other; the handler is the
    ``self`` of ``CallbackHandler.call_event``, one frame above the hook.
    """
    frame = inspect.currentframe()
    try:
        for _ in range(8):
            if frame is None:
                return None
            owner = frame.f_locals.get("self")
            if type(owner).__name__ == "CallbackHandler" and isinstance(
                getattr(owner, "callbacks", None), list
            ):
                return owner
            frame = frame.f_back
        return None
    finally:
        del frame  # frames hold their locals; do not keep them alive


def _hf_trackers(args: TrainingArguments) -> Iterator[tuple[str, Any]]:
    """The trackers HF opened for this run, among those named in ``args.report_to``."""
    wanted = [name for name in (args.report_to or []) if name in _HF_TRACKERS]
    if "mlflow" in wanted and "mlflow" in sys.modules:
        run = sys.modules["mlflow"].active_run()
        if run is not None:
            yield "mlflow", run
    if (
        "wandb" in wanted
        and "wandb" in sys.modules
        and getattr(sys.modules["wandb"], "run", None) is not None
    ):
        yield "wandb", sys.modules["wandb"].run
    if "tensorboard" in wanted:
        handler = _calling_handler()
        for callback in getattr(handler, "callbacks", []):
            writer = getattr(callback, "tb_writer", None)
            if type(callback).__name__ == "TensorBoardCallback" and writer is not None:
                yield "tensorboard", writer


class NeuronMapTrainerCallback(TrainerCallback):
    """Run NeuronMap on its schedule inside a Hugging Face ``Trainer``.

    Events: ``on_train_begin`` (``train_start``), ``on_step_end`` (``step``, for
    ``Schedule(every_n_steps=...)``), ``on_evaluate`` (``validation_end``: HF's evaluation is
    the validation of the loop, and a bare ``trainer.evaluate()`` outside training runs too —
    the CI-gate use) and ``on_train_end`` (``train_end``). Steps are ``state.global_step``;
    epochs count from 0 like Lightning's.

    Reporters: when the monitor's ``reporters`` are left unset, the trackers named in
    ``args.report_to`` that HF has opened get a reporter bound to the same run (the active
    MLflow run, ``wandb.run``, the TensorBoard callback's writer); with none, results go to a
    local run folder under ``args.output_dir/neuronmap-runs``. Only the world process zero logs.

    The model is looked through its wrappers (DDP, ``torch.compile``; FSDP is kept, see
    :mod:`neuronmap.distributed`). The callback's state is written to ``neuronmap_state.json``
    in each ``checkpoint-<step>`` folder and read back when training resumes from
    ``args.output_dir``, so a resumed run keeps its history.

    Args:
        monitor: A ready :class:`~neuronmap.NeuronMap`; or leave it out and pass its keyword
            arguments (``probe=``, ``layers=``, ...).
        use_trackers: Report to HF's trackers when reporters are unset (default ``True``).
        local_run: Also keep a local run folder (with ``report.html``) beside the trackers;
            without trackers there is always one.
        model_card: At train end (or after a standalone evaluation), send a model card
            (:mod:`neuronmap.cards`) to the reporters: ``True`` for the automatic card, a mapping
            or YAML path for card data to merge in, ``None`` (default) for none.
        audit: Append every run to the hash-chained audit trail (:mod:`neuronmap.audit`) of
            the local run folder (default ``True``; implies ``local_run=True``: the trail hashes
            the evidence files there, so a local folder is kept beside the trackers, and added
            when the user's reporters have none). ``False`` for no trail.
        **kwargs: :class:`~neuronmap.NeuronMap` keyword arguments, when ``monitor`` is not given.

    Raises:
        InvalidParameterError: Both or neither of ``monitor`` and the keywords were given.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_text_probe
        >>> callback = NeuronMapTrainerCallback(probe=tiny_text_probe(), layers=["bert.encoder.layer.*"],
        ...                                     analyses=[nm.ActivationStats()])
        >>> # Trainer(model, args, train_dataset=..., callbacks=[callback]).train()
    """

    def __init__(
        self,
        monitor: NeuronMap | None = None,
        *,
        use_trackers: bool = True,
        local_run: bool = False,
        model_card: CardSpec = None,
        gates: Any = None,
        stop_on_failure: bool = False,
        audit: bool = True,
        **kwargs: Any,
    ) -> None:
        self.monitor = build_monitor(monitor, kwargs, owner=type(self).__name__)
        self.use_trackers = use_trackers
        self.local_run = local_run or audit
        self.model_card = model_card
        self.audit = audit
        self._gates = attach_gates(self.monitor, gates, stop_on_failure=stop_on_failure)
        self._bound = False
        self._training = False
        self._resume_dir: str | None = None

    def __repr__(self) -> str:
        return f"NeuronMapTrainerCallback({self.monitor!r})"

    # ------------------------------------------------------------------ plumbing
    def _bind(self, args: TrainingArguments, state: TrainerState) -> None:
        """Choose reporters once, at the first run (HF's own trackers are open by then)."""
        if self._bound:
            return
        self._bound = True
        if not state.is_world_process_zero:
            if uses_default_reporters(self.monitor):
                self.monitor.reporters = []
            return
        trackers = list(_hf_trackers(args)) if self.use_trackers else []
        root = Path(args.output_dir or ".")
        choose_reporters(
            self.monitor, trackers, root=root, resume_dir=self._resume_dir, local_run=self.local_run
        )
        attach_audit(self.monitor, self.audit, root=root)

    def _maybe_run(
        self,
        args: TrainingArguments,
        state: TrainerState,
        model: nn.Module | None,
        event: str,
        control: TrainerControl | None = None,
    ) -> bool:
        step, epoch = state.global_step, _epoch_index(state)
        if model is None or not self.monitor.should_run(step=step, epoch=epoch, event=event):
            return False
        self._bind(args, state)
        if not self.monitor.preflight_passed:  # a bare trainer.evaluate(): no train begin came first
            self.monitor.preflight(model)
        self.monitor.run(model, step=step, epoch=epoch, event=event)
        # only rank zero evaluates gates; every rank must stop at the same step
        stopping = self._gates is not None and self._gates.stop_on_failure
        if stopping and any_rank(self._gates.should_stop, self.monitor.distributed) and control is not None:
            control.should_training_stop = True
        return True

    # ------------------------------------------------------------------ HF events
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Preflight the set-up, restore the state of a resumed run, run if ``"train_start"`` is scheduled.

        Raises:
            PreflightError: Something in the set-up cannot work (the message lists each
                problem), before the first training step.
        """
        self._training = True
        if kwargs.get("model") is not None:
            self.monitor.preflight(kwargs["model"])
        if state.global_step > 0:
            self._restore(Path(args.output_dir or ".") / f"checkpoint-{state.global_step}", state)
        self._maybe_run(args, state, kwargs.get("model"), "train_start")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Run if ``Schedule(every_n_steps=...)`` calls for this global step."""
        if self.monitor.schedule.every_n_steps is not None:
            self._maybe_run(args, state, kwargs.get("model"), "step", control)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Run after an evaluation, inside training or from a bare ``trainer.evaluate()``."""
        ran = self._maybe_run(args, state, kwargs.get("model"), "validation_end", control)
        if ran and not self._training:  # a standalone evaluation is a whole run
            self._finish(state, kwargs.get("model"))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Run at train end (skipped when the last evaluation already ran at this step); close."""
        try:
            self._maybe_run(args, state, kwargs.get("model"), "train_end")
        finally:
            self._training = False
            self._finish(state, kwargs.get("model"))

    def _finish(self, state: TrainerState, model: nn.Module | None) -> None:
        if state.is_world_process_zero:
            log_card(self.monitor, model, self.model_card)
        close_monitor(self.monitor)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Write the callback's state into the checkpoint folder just saved."""
        folder = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            (folder / STATE_FILE).write_text(json.dumps(self.state_dict()), encoding="utf-8")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Schedule progress, history and analysis state (JSON-able), and the local run folder."""
        return {"monitor": self.monitor.state_dict(), "local_run_dir": local_run_dir(self.monitor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.monitor.load_state_dict(state.get("monitor", {}))
        self._resume_dir = state.get("local_run_dir")

    def _restore(self, folder: Path, state: TrainerState) -> None:
        path = folder / STATE_FILE
        if path.is_file():
            self.load_state_dict(json.loads(path.read_text(encoding="utf-8")))
        elif state.is_world_process_zero:
            warnings.warn(
                f"Training resumes at step {state.global_step} but {path} does not exist (a checkpoint "
                "outside args.output_dir, or saved without NeuronMap); the NeuronMap history starts afresh.",
                ReporterWarning,
                stacklevel=3,
            )
