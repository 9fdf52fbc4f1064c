"""NeuronMap in a plain PyTorch loop: two lines added to the loop you already have.

    monitor = nm.NeuronMap(probe, layers=[...], analyses=[...], schedule=nm.Schedule(every_n_steps=50))
    ...
    monitor.maybe_run(model, step=step)   # inside the loop: free between scheduled steps

An MLP learns scikit-learn's bundled 8x8 digits (nothing is downloaded). Every
``--every`` steps NeuronMap runs the model on a fixed probe set of held-out digits and writes
a local run folder with ``report.html``. Under ``torchrun`` call ``maybe_run`` on every rank:
the probe set is sharded and only rank 0 writes.

    python examples/plain_pytorch.py [--epochs 5] [--every 50] [--out neuronmap-runs] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import neuronmap as nm
from neuronmap.analyses import available_analyses, get_analysis
from neuronmap.reporters import LocalReporter


class MLP(nn.Module):
    """Three hidden blocks (``blocks.0`` ... ``blocks.2``) and a linear ``head``."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Linear(64, hidden), nn.ReLU()),
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()),
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()),
        )
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


def analyses() -> list[nm.Analysis]:
    """Activation health, plus linear probing of the digit class where that analysis is installed."""
    chosen: list[nm.Analysis] = [nm.ActivationStats()]
    if "probing" in available_analyses():
        chosen.append(get_analysis("probing", target="label", cv=3, n_permutations=50, n_resamples=100))
    return chosen


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--every", type=int, default=50, help="run NeuronMap every N optimizer steps")
    parser.add_argument("--out", default="neuronmap-runs", help="folder of the local run")
    parser.add_argument("--quick", action="store_true", help="1 epoch, a smaller probe set (a smoke test)")
    args = parser.parse_args(argv)
    epochs, n_probe = (1, 100) if args.quick else (args.epochs, 300)

    torch.manual_seed(0)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_probe, y_train, y_probe = train_test_split(
        x, digits.target, test_size=n_probe, random_state=0, stratify=digits.target
    )
    probe = nm.ProbeSet(torch.from_numpy(x_probe), labels=y_probe, name="digits-held-out")
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        batch_size=32,
        shuffle=True,
    )
    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    # Line 1: the monitor (its hooks exist only while a scheduled run goes on).
    reporter = LocalReporter(args.out, run_name="plain-pytorch-digits")
    monitor = nm.NeuronMap(
        probe, layers=["blocks.*", "head"], analyses=analyses(), schedule=nm.Schedule(every_n_steps=args.every),
        reporters=[reporter],
    )
    monitor.preflight(model)  # a wrong selector or probe set fails here, before the first step
    step = 0
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            step += 1
            monitor.maybe_run(model, step=step)  # Line 2.
    monitor.maybe_run(model, step=step, event="train_end")  # a last look, unless this step just ran
    monitor.close()

    print(f"{len(monitor.history.steps)} NeuronMap runs at steps {monitor.history.steps}")
    print(f"report: {reporter.report_path}")
    return reporter.report_path


if __name__ == "__main__":
    main()
