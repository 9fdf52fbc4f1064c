"""``neuronmap demo``: train something small and real, with NeuronMap on a schedule.

A small MLP learns scikit-learn's bundled handwritten digits in a plain PyTorch loop; the
engine runs every few steps (two-line integration: ``monitor.maybe_run(model, step=...)``)
and writes a local run folder whose ``report.html`` the demo prints. The run keeps an audit
trail (``audit.jsonl``, :mod:`neuronmap.audit`) by default, so ``neuronmap audit verify`` and the
model card can say whether its evidence is intact.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neuronmap.analyses.base import Analysis
from neuronmap.engine import NeuronMap
from neuronmap.probe import ProbeSet
from neuronmap.reporters.local import LocalReporter
from neuronmap.schedule import Schedule

__all__ = ["DigitsNet", "default_analyses", "run_digits_demo"]


class DigitsNet(nn.Module):
    """A small MLP for 8x8 digits: ``encoder`` blocks then a ``head``."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Sequential(nn.Linear(64, hidden), nn.ReLU()),
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()),
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU()),
        )
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def default_analyses() -> list[Analysis]:
    """Every built-in analysis that works on a plain classifier without extra configuration."""
    import neuronmap.analyses as analyses

    chosen: list[Analysis] = []
    for name in ("ModelPerformance", "Probing", "CKA", "NeuronStats"):
        cls = getattr(analyses, name, None)
        if cls is not None:
            chosen.append(cls())
    # NeuronStats reports dead_fraction and effective_rank too: with both, the report showed
    # each twice. ActivationStats (the lighter health check) only stands in for it.
    if not any(type(a).__name__ == "NeuronStats" for a in chosen):
        chosen.insert(0, analyses.ActivationStats())
    return chosen


def run_digits_demo(
    out: str | Path = "neuronmap-runs", *, epochs: int = 6, every_n_steps: int = 40, seed: int = 0,
    audit: bool = True,
) -> Path:
    """Train on digits with NeuronMap monitoring and return the run's ``report.html``.

    ``audit=True`` (default) attaches an :class:`~neuronmap.audit.AuditTrail` to the run folder.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(seed)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_probe, y_train, y_probe = train_test_split(
        x, digits.target, test_size=300, random_state=seed, stratify=digits.target
    )
    # A sensitive-style group column with a known answer: whether the digit is drawn with many
    # ink pixels; the demo report shows how decodable it is per layer.
    ink = np.where((x_probe > 0.5).mean(axis=1) > np.median((x_probe > 0.5).mean(axis=1)), "heavy", "light")
    probe = ProbeSet(
        torch.from_numpy(x_probe),
        labels=y_probe,
        groups={"ink": ink},
        name="digits-probe",
        description="300 held-out 8x8 digits from scikit-learn's load_digits, stratified by class.",
    )
    reporter = LocalReporter(out, run_name=time.strftime("digits-%Y%m%d-%H%M%S"))
    monitor = NeuronMap(
        probe,
        layers=["encoder.*"],
        analyses=default_analyses(),
        schedule=Schedule(every_n_steps=every_n_steps, on=("train_end",)),
        reporters=[reporter],
        name="digits-demo",
    )
    if audit:
        from neuronmap.compliance.audit import AuditTrail

        AuditTrail(reporter.run_dir).attach(monitor)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    step = 0
    status = "FAILED"
    try:
        for epoch in range(epochs):
            for xb, yb in loader:
                monitor.maybe_run(model, step=step, epoch=epoch)
                loss = nn.functional.cross_entropy(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
            print(f"epoch {epoch}: loss {loss.item():.3f}")
        monitor.run(model, step=step, epoch=epochs - 1, event="train_end")
        status = "FINISHED"
    finally:
        monitor.close(status)  # type: ignore[arg-type]
    return reporter.report_path
