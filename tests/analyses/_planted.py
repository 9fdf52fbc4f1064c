"""A model with a label signal planted in one layer only, for the analysis tests.

The label of an example is ``x[:, 0] > 0``. ``signal`` is a linear map of the whole input, so
it carries the label linearly; ``noise_a`` and ``noise_b`` have their weights on feature 0 set
to zero, so their activations are *independent* of the label by construction (the other
features are independent of feature 0). Any claim that they encode the label is a false
positive.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neuronmap.probe import ProbeSet

LAYERS = ["signal", "noise_a", "noise_b"]


class PlantedSignal(nn.Module):
    def __init__(self, in_features: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.signal = nn.Linear(in_features, hidden)
        self.noise_a = nn.Linear(in_features, hidden)
        self.noise_b = nn.Linear(in_features, hidden)
        with torch.no_grad():
            self.noise_a.weight[:, 0] = 0.0
            self.noise_b.weight[:, 0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.signal(x) + self.noise_a(x) + self.noise_b(x)


def planted_model(seed: int = 0) -> PlantedSignal:
    torch.manual_seed(seed)
    return PlantedSignal()


def planted_probe(n: int = 150, *, seed: int = 0) -> ProbeSet:
    """Inputs ``[n, 8]``, labels ``x0 > 0``, an independent two-valued ``group`` column."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    labels = (x[:, 0] > 0).long().numpy()
    group = np.where(np.random.default_rng(seed).random(n) < 0.5, "a", "b")
    return ProbeSet(x, labels=labels, groups={"group": group}, name="planted")
