"""A tiny LightningModule and data shared by the Lightning tests and the DDP script."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from neuronmap.testing import tiny_mlp


def lit_mlp(package: str = "lightning.pytorch", *, seed: int = 0) -> Any:
    """A LightningModule around ``tiny_mlp`` (layers ``net.0`` ... ``net.4``) of either package."""
    import importlib

    pl = importlib.import_module(package)

    class LitMLP(pl.LightningModule):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_mlp(seed=seed).net
            self.hooks_seen_in_training: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            # Idle costs nothing: no NeuronMap hook may be attached while training.
            self.hooks_seen_in_training.append(sum(len(m._forward_hooks) for m in self.modules()))
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.5)

    return LitMLP()


def loader(n: int = 32, *, batch_size: int = 8, seed: int = 1) -> DataLoader:
    """A fixed (unshuffled) binary classification set of 8-feature inputs."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    return DataLoader(TensorDataset(x, (x[:, 0] + x[:, 1] > 0).long()), batch_size=batch_size)


def trainer_kwargs(root: Any, **overrides: Any) -> dict[str, Any]:
    """Quiet, CPU-only Trainer settings for tests."""
    kwargs: dict[str, Any] = dict(
        default_root_dir=str(root),
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    kwargs.update(overrides)
    return kwargs
