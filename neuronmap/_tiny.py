"""The tiny model and probe set that :mod:`neuronmap.testing` documents (re-exported there).

Apart so that :func:`neuronmap.testing.check_analysis` (in ``_check_analysis``) can default to them
without importing ``testing``, which re-exports it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neuronmap.probe import ProbeSet

__all__ = ["TinyMLP", "tiny_mlp", "tiny_probe"]


class TinyMLP(nn.Module):
    """A small ReLU network: ``net = Sequential(Linear, ReLU, Linear, ReLU, Linear)``."""

    def __init__(self, in_features: int = 8, hidden: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_mlp(in_features: int = 8, hidden: int = 16, classes: int = 2, *, seed: int = 0) -> TinyMLP:
    """A seeded :class:`TinyMLP`."""
    torch.manual_seed(seed)
    return TinyMLP(in_features, hidden, classes)


def tiny_probe(n: int = 64, in_features: int = 8, *, seed: int = 0) -> ProbeSet:
    """A tensor probe set with binary labels and a two-valued ``group`` column."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=gen)
    labels = (x[:, 0] > 0).long().numpy()
    groups = np.where(np.arange(n) % 2 == 0, "a", "b")
    return ProbeSet(x, labels=labels, groups={"group": groups}, name="tiny")
