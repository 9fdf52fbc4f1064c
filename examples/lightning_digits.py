"""A small CNN learns scikit-learn's 8x8 digits in Lightning; NeuronMap watches its layers.

One line in the Trainer: ``callbacks=[NeuronMapCallback(...)]``. At every validation end
NeuronMap runs the model on 300 fixed held-out digits and logs, per layer,

* CKA drift (Kornblith et al. 2019): how far each layer's representation moved since the first
  run and since the previous one;
* linear probing of the digit class and of an "ink" attribute (heavy vs light strokes), with
  cross-validated accuracy, bootstrap CIs and a control task (Hewitt & Liang 2019);
* neuron health: dead and saturated units, selectivity, effective rank.

The metrics go to the Trainer's own loggers, TensorBoard and MLflow (an embedded sqlite
store), beside Lightning's loss curves. Nothing is downloaded.

    python examples/lightning_digits.py [--epochs 8] [--out lightning-digits] [--quick]
    tensorboard --logdir lightning-digits/tensorboard
    mlflow ui --backend-store-uri sqlite:///lightning-digits/mlflow.db
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import neuronmap as nm
from neuronmap.analyses.neurons import NeuronStats
from neuronmap.analyses.probing import Probing
from neuronmap.analyses.similarity import CKA
from neuronmap.callbacks import NeuronMapCallback

LAYERS = ["conv1", "conv2", "fc", "head"]


class DigitsCNN(L.LightningModule):
    """Two convolution blocks, a dense block and a linear head (the monitored ``LAYERS``)."""

    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.lr = lr
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.conv2(self.conv1(x))))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def digits_data(n_probe: int, *, seed: int = 0) -> tuple[DataLoader, DataLoader, nm.ProbeSet]:
    """Training and validation loaders, and a fixed probe set of held-out digits with an ink group."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # [n, 1, 8, 8]
    x_rest, x_probe, y_rest, y_probe = train_test_split(
        x, digits.target, test_size=n_probe, random_state=seed, stratify=digits.target
    )
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.2, random_state=seed)
    ink = (x_probe > 0.5).reshape(len(x_probe), -1).mean(axis=1)
    probe = nm.ProbeSet(
        torch.from_numpy(x_probe),
        labels=y_probe,
        groups={"ink": np.where(ink > np.median(ink), "heavy", "light")},
        name="digits-held-out",
        description=f"{n_probe} held-out 8x8 digits from scikit-learn's load_digits, stratified by class.",
    )
    train = DataLoader(TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(torch.from_numpy(x_val), torch.from_numpy(y_val)), batch_size=256)
    return train, val, probe


class InkProbing(Probing):
    """Probing of the ink group, under its own name (metric keys ``neuronmap/probing_ink/...``)."""

    name = "probing_ink"


def analyses(*, quick: bool) -> list[nm.Analysis]:
    """CKA drift, probing of the class and of the ink group, neuron health."""
    # --quick is a smoke test: no permutation tests or control tasks, few resamples.
    probing: dict[str, Any] = (
        {"cv": 3, "n_permutations": 0, "n_resamples": 20, "control_task": False}
        if quick
        else {"cv": 5, "n_permutations": 200, "n_resamples": 500}
    )
    return [
        CKA(),
        Probing("label", **probing),
        InkProbing("ink", **probing),
        NeuronStats(),
        nm.ActivationStats(),
    ]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default="lightning-digits", help="folder of the TensorBoard logs and MLflow store")
    parser.add_argument("--quick", action="store_true", help="2 short epochs, 100 probe digits (a smoke test)")
    args = parser.parse_args(argv)
    epochs, n_probe, batches = (2, 100, 5) if args.quick else (args.epochs, 300, 1.0)
    out = Path(args.out).resolve()
    L.seed_everything(0, verbose=False)

    train, val, probe = digits_data(n_probe)
    callback = NeuronMapCallback(probe=probe, layers=LAYERS, analyses=analyses(quick=args.quick))
    mlflow_uri = f"sqlite:///{out / 'mlflow.db'}"
    loggers = [
        TensorBoardLogger(save_dir=str(out), name="tensorboard"),
        MLFlowLogger(experiment_name="lightning-digits", tracking_uri=mlflow_uri,
                     artifact_location=(out / "mlartifacts").as_uri()),
    ]
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=loggers, callbacks=[callback], default_root_dir=str(out),
        enable_checkpointing=False, enable_progress_bar=False, log_every_n_steps=5, limit_train_batches=batches,
    )
    trainer.fit(DigitsCNN(), train, val)

    latest = callback.monitor.history.latest()
    for layer in LAYERS:
        acc = latest.get(f"neuronmap/probing/{layer}/accuracy", float("nan"))
        drift = latest.get(f"neuronmap/cka/{layer}/drift_first", float("nan"))
        print(f"{layer:6s} probe accuracy {acc:.3f}   CKA with the first run {drift:.3f}")
    print(f"NeuronMap ran at steps {callback.monitor.history.steps}; reporters {callback.monitor.reporters}")
    print(f"tensorboard --logdir {out / 'tensorboard'}")
    print(f"mlflow ui --backend-store-uri {mlflow_uri}")
    return out


if __name__ == "__main__":
    main()
