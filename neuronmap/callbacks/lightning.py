"""NeuronMap as a Lightning callback: one line added to ``Trainer(callbacks=[...])``.

The callback subclasses ``lightning.pytorch.Callback`` when the ``lightning`` package is
installed and ``pytorch_lightning.Callback`` otherwise. Lightning calls callback hooks by name,
so the class also works in a ``Trainer`` of the other package when both are installed (the test
suite runs it in both); only ``isinstance(cb, <other package>.Callback)`` is then ``False``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from neuronmap._imports import LIGHTNING_AVAILABLE, PYTORCH_LIGHTNING_AVAILABLE
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
from neuronmap.engine import NeuronMap
from neuronmap.errors import InvalidParameterError, MissingDependencyError

if LIGHTNING_AVAILABLE:
    from lightning.pytorch import Callback as _Callback
elif PYTORCH_LIGHTNING_AVAILABLE:
    from pytorch_lightning import Callback as _Callback  # type: ignore[assignment]
else:  # pragma: no cover - exercised only without Lightning
    raise MissingDependencyError(f"NeuronMapCallback needs Lightning. {LIGHTNING_AVAILABLE}")

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

__all__ = ["NeuronMapCallback"]

#: Lightning logger class name -> the tracker NeuronMap reports to through it.
_LOGGER_TRACKERS = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb", "TensorBoardLogger": "tensorboard"}

#: Hooks Lightning calls on every batch. It dispatches each to each callback inside a profiler
#: context (about 5 us per hook and callback: 1.7 % of a 2 ms training step for a callback that
#: does nothing) but skips a hook attribute that is not callable (``_call_callback_hooks``).
#: NeuronMap shadows those it does not use with ``None`` on the instance, so that between
#: scheduled runs it costs a step at most one hook call (``on_train_batch_end``, and that only
#: with a step schedule).
_PER_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def _tracker_of(logger: Any) -> str | None:
    # By class name over the MRO, so loggers of both `lightning` and `pytorch_lightning` (and
    # user subclasses) are recognised without importing either package's loggers.
    for cls in type(logger).__mro__:
        if cls.__name__ in _LOGGER_TRACKERS:
            return _LOGGER_TRACKERS[cls.__name__]
    return None


def _trainer_trackers(trainer: Trainer) -> Iterator[tuple[str, Any]]:
    for logger in trainer.loggers:
        tracker = _tracker_of(logger)
        if tracker is not None:
            yield tracker, logger


class NeuronMapCallback(_Callback):
    """Run NeuronMap on its schedule inside a Lightning ``Trainer``.

    Scheduled events: ``train_start``, ``step`` (after each optimizer step, for
    ``Schedule(every_n_steps=...)``), ``validation_end`` (sanity-check validation skipped) and
    ``train_end``. The default schedule runs at every validation end and at train end; a step
    that already ran is not run again. Between scheduled runs the callback attaches no hook
    and copies nothing. Steps and epochs are ``trainer.global_step`` and ``trainer.current_epoch``.

    Reporters: when the monitor's ``reporters`` are left unset, the trainer's
    ``MLFlowLogger``, ``WandbLogger`` and ``TensorBoardLogger`` get a matching reporter bound to
    the same run, so NeuronMap's metrics sit beside the model's own; with none of those, results
    go to a local run folder under ``trainer.default_root_dir/neuronmap-runs``.

    Under DDP or FSDP every rank runs its shard of the probe set; analyses and logging happen
    once, on rank zero (see :mod:`neuronmap.distributed`). The callback's state (schedule
    progress, history, analysis state, local run folder) is saved in Lightning checkpoints, so a
    run resumed with ``trainer.fit(..., ckpt_path=...)`` keeps its history.

    Args:
        monitor: A ready :class:`~neuronmap.NeuronMap`; or leave it out and pass its keyword
            arguments (``probe=``, ``layers=``, ``analyses=``, ``schedule=``, ...).
        use_loggers: Report to the trainer's loggers when reporters are unset (default ``True``).
        local_run: Also keep a local run folder (with ``report.html``) beside the trackers;
            without trackers there is always one.
        model_card: At train end, send a model card (:mod:`neuronmap.cards`) to the reporters:
            ``True`` for the automatic card, a mapping or YAML path for card data to merge in,
            ``None`` (default) for none.
        gates: CI gate checks (:mod:`neuronmap.gates`: a ``gates.yaml`` path, text or list of
            checks) evaluated after every run; each outcome is logged as
            ``neuronmap/gates/<check>/passed``.
        stop_on_failure: Stop training when a gate fails (``trainer.should_stop`` /
            ``control.should_training_stop``).
        module: Run the probe set through this submodule of the LightningModule (a dotted
            name such as ``"model"`` for ``self.model``) instead of the LightningModule itself,
            for LightningModules without a ``forward``; layer selectors are then relative to it.
            (Under FSDP, prefer a ``forward`` on the LightningModule: a submodule's sharded
            parameters are gathered only by the wrapper's forward.)
        audit: Append every run to the hash-chained audit trail (:mod:`neuronmap.audit`) of
            the local run folder (default ``True``; implies ``local_run=True``: the trail hashes
            the evidence files there, so a local folder is kept beside the trackers, and added
            when the user's reporters have none). ``False`` for no trail.
        **kwargs: :class:`~neuronmap.NeuronMap` keyword arguments, when ``monitor`` is not given.

    Raises:
        InvalidParameterError: Both or neither of ``monitor`` and the keywords were given.

    Example:
        >>> import lightning.pytorch as L
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_probe
        >>> callback = NeuronMapCallback(probe=tiny_probe(), layers=["net.*"],
        ...                              analyses=[nm.ActivationStats()])
        >>> trainer = L.Trainer(max_epochs=1, callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(
        self,
        monitor: NeuronMap | None = None,
        *,
        use_loggers: bool = True,
        local_run: bool = False,
        model_card: CardSpec = None,
        gates: Any = None,
        stop_on_failure: bool = False,
        audit: bool = True,
        module: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.monitor = build_monitor(monitor, kwargs, owner=type(self).__name__)
        if module is not None and (not isinstance(module, str) or not module.strip(".")):
            raise InvalidParameterError(
                f"module must be the dotted name of a submodule of the LightningModule (e.g. 'model'); got {module!r}."
            )
        self.module = module
        self.use_loggers = use_loggers
        self.local_run = local_run or audit
        self.model_card = model_card
        self.audit = audit
        self._gates = attach_gates(self.monitor, gates, stop_on_failure=stop_on_failure)
        # Lightning reads state_key around every hook call (profiler names): build it once.
        self._state_key = self._generate_state_key(name=self.monitor.name)
        self._bound = False
        self._failed = False
        self._resume_dir: str | None = None
        for hook in _PER_BATCH_HOOKS:
            if getattr(type(self), hook) is getattr(_Callback, hook):  # a subclass's override stays
                setattr(self, hook, None)

    def __repr__(self) -> str:
        return f"NeuronMapCallback({self.monitor!r})"

    @property
    def state_key(self) -> str:
        """Key of this callback's state in checkpoints (one per monitor name)."""
        return self._state_key

    # ------------------------------------------------------------------ plumbing
    def _bind(self, trainer: Trainer) -> None:
        """Choose reporters once, at the first run (after any checkpoint was restored)."""
        if self._bound:
            return
        self._bound = True
        if not trainer.is_global_zero:
            if uses_default_reporters(self.monitor):
                self.monitor.reporters = []
            return
        trackers = list(_trainer_trackers(trainer)) if self.use_loggers else []
        root = Path(trainer.default_root_dir)
        choose_reporters(
            self.monitor, trackers, root=root, resume_dir=self._resume_dir, local_run=self.local_run
        )
        attach_audit(self.monitor, self.audit, root=root)

    def _maybe_run(self, trainer: Trainer, pl_module: LightningModule, event: str) -> None:
        step, epoch = trainer.global_step, trainer.current_epoch
        if not self.monitor.should_run(step=step, epoch=epoch, event=event):
            return
        self._bind(trainer)
        model = self._model(trainer, pl_module)
        if not self.monitor.preflight_passed:  # trainer.validate()/test(): no fit start came first
            self.monitor.preflight(model)
        self.monitor.run(model, step=step, epoch=epoch, event=event)
        # only rank zero evaluates gates; every rank must stop at the same step, or the others
        # wait forever in the next collective (Lightning's EarlyStopping reduces the same way)
        stopping = self._gates is not None and self._gates.stop_on_failure
        if stopping and trainer.strategy.reduce_boolean_decision(bool(self._gates.should_stop), all=False):
            trainer.should_stop = True

    def _model(self, trainer: Trainer, pl_module: LightningModule) -> nn.Module:
        if self.module is not None:
            # a LightningModule without forward(): run the network it holds (no DDP hooks needed
            # for a forward without gradients)
            try:
                return pl_module.get_submodule(self.module)
            except AttributeError as err:
                children = [name for name, _ in pl_module.named_children()]
                raise InvalidParameterError(
                    f"NeuronMapCallback(module={self.module!r}): {type(pl_module).__name__} has no such submodule; "
                    f"its children are {children}."
                ) from err
        # The strategy's model is the DDP/FSDP/DeepSpeed wrapper; the engine looks through
        # DDP and keeps FSDP, whose forward gathers the sharded parameters.
        model = trainer.strategy.model
        return model if isinstance(model, nn.Module) else pl_module

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Listen to every training batch only when the schedule counts steps (see ``_PER_BATCH_HOOKS``)."""
        self.__dict__.pop("on_train_batch_end", None)
        own_hook = type(self).on_train_batch_end is NeuronMapCallback.on_train_batch_end
        if own_hook and self.monitor.schedule.every_n_steps is None:
            self.on_train_batch_end = None  # type: ignore[assignment]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Preflight: selectors, one probe batch through the capture path, the analyses' columns.

        Runs once the model is on its device and wrapped, before the first training step, so a
        set-up mistake stops ``fit`` at once instead of at the first scheduled run.

        Raises:
            PreflightError: Something in the set-up cannot work (the message lists each problem).
        """
        self.monitor.preflight(self._model(trainer, pl_module))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run if ``"train_start"`` is scheduled (a baseline before the first step)."""
        self._maybe_run(trainer, pl_module, "train_start")

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Run if ``Schedule(every_n_steps=...)`` calls for this global step."""
        if self.monitor.schedule.every_n_steps is not None:
            self._maybe_run(trainer, pl_module, "step")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run at the end of validation, except the sanity check before training."""
        if not trainer.sanity_checking:
            self._maybe_run(trainer, pl_module, "validation_end")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run at train end (skipped when the last validation already ran at this step); log the card."""
        self._maybe_run(trainer, pl_module, "train_end")
        if trainer.is_global_zero:
            log_card(self.monitor, pl_module, self.model_card)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Close the reporters with status ``FAILED``."""
        self._failed = True
        close_monitor(self.monitor, "FAILED")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Close the reporters (flushes them; tracker runs owned by a logger stay open)."""
        if not self._failed:
            close_monitor(self.monitor)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """Schedule progress, history and analysis state (JSON-able), and the local run folder."""
        return {"monitor": self.monitor.state_dict(), "local_run_dir": local_run_dir(self.monitor)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; a local run folder is appended to, not replaced."""
        self.monitor.load_state_dict(state_dict.get("monitor", {}))
        self._resume_dir = state_dict.get("local_run_dir")
