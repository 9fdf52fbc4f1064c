"""Two-process HF ``Trainer`` DDP run (CPU, gloo) with NeuronMapTrainerCallback; run by test_hf_ddp.py.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/callbacks/_hf_ddp_script.py OUT_DIR``.
HF's TensorBoard callback writes to ``OUT_DIR/tb`` (on the world process zero, as HF does). Then a
bare ``trainer.evaluate()`` of the trained model (the CI-gate use) reports to a local run folder
under ``OUT_DIR/eval/neuronmap-runs``.
Rank 0 saves the weights at every NeuronMap run (so the test can recompute the metrics in one
process) and the runs it saw; every rank writes what its callback holds to ``rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

import neuronmap as nm
from neuronmap.analyses.base import Analysis, AnalysisContext, AnalysisResult, MetricSet
from neuronmap.callbacks import NeuronMapTrainerCallback
from neuronmap.distributed import unwrap_model
from neuronmap.probe import ProbeSet
from neuronmap.testing import tiny_bert, tiny_text_probe

N_PROBE = 37  # odd: rank 1's shard is padded
N_TRAIN = 32  # 2 ranks x batch 4: 4 optimizer steps per epoch, 8 in 2 epochs
LAYERS = ["bert.encoder.layer.*"]
SCHEDULE: dict[str, Any] = {"every_n_steps": 3, "on": ("validation_end", "train_end")}


class RowOrder(Analysis):
    """Per layer, a sum that changes if probe examples are reordered, dropped or duplicated.

    ActivationStats and CKA do not see the row order (CKA compares runs gathered in the same
    order); this does, so a gather that misorders the ranks' shards or keeps the padding fails.
    """

    name = "row_order"

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        m = MetricSet()
        for layer, x in self.layer_items(ctx):
            m.add(layer, "weighted_first_unit", float(np.arange(len(x)) @ x[:, 0]))
            m.add(layer, "rows", float(len(x)))
        return AnalysisResult(self.name, metrics=m)


def analyses() -> list[Analysis]:
    """Deterministic functions of the activations: per-layer statistics, CKA drift, row order."""
    return [nm.ActivationStats(), nm.CKA(), RowOrder()]


class TokenDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """A probe set's token ids and labels as an HF training set."""

    def __init__(self, probe: ProbeSet) -> None:
        self.probe = probe

    def __len__(self) -> int:
        return len(self.probe)

    def __getitem__(self, i: int) -> dict[str, Any]:
        inputs, labels = self.probe.inputs, self.probe.labels
        if labels is None:
            raise ValueError("the training probe set needs labels")
        return {"input_ids": inputs["input_ids"][i], "attention_mask": inputs["attention_mask"][i],
                "labels": int(labels[i])}


def _args(out: Path, **kwargs: Any) -> TrainingArguments:
    return TrainingArguments(
        str(out), use_cpu=True, ddp_backend="gloo", per_device_eval_batch_size=8, disable_tqdm=True,
        dataloader_num_workers=0, seed=0, **kwargs,
    )


def evaluate_only(out: Path, model: torch.nn.Module, data: TokenDataset) -> dict[str, Any]:
    """The CI-gate use: a bare ``trainer.evaluate()`` of the trained model, results in a local run folder."""
    callback = NeuronMapTrainerCallback(probe=tiny_text_probe(n=N_PROBE), layers=LAYERS, analyses=analyses(),
                                        audit=False)
    trainer = Trainer(model, _args(out, report_to="none"), eval_dataset=data, callbacks=[callback])
    metrics = trainer.evaluate()
    return {
        "eval_loss": metrics["eval_loss"],
        "history_steps": callback.monitor.history.steps,
        "reporters": [type(r).__name__ for r in callback.monitor.reporters],
    }


def main(out: Path) -> None:
    torch.set_num_threads(1)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "tb")
    callback = NeuronMapTrainerCallback(
        probe=tiny_text_probe(n=N_PROBE), layers=LAYERS, analyses=analyses(), schedule=nm.Schedule(**SCHEDULE),
        audit=False,  # the tracker alone: no local run folder beside it (the audit trail needs one)
    )
    runs: list[dict[str, Any]] = []

    def on_report(report: nm.Report, model: torch.nn.Module) -> None:
        torch.save(unwrap_model(model).state_dict(), out / f"weights-{report.step}.pt")
        runs.append({"event": report.event, "step": report.step, "epoch": report.epoch, "failed": report.failed})

    callback.monitor.add_listener(on_report)
    args = _args(
        out / "hf",
        num_train_epochs=2,
        per_device_train_batch_size=4,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=["tensorboard"],
        logging_steps=1,
    )
    data = TokenDataset(tiny_text_probe(n=N_TRAIN, seed=1))
    model = tiny_bert(num_labels=2)
    trainer = Trainer(model, args, train_dataset=data, eval_dataset=data, callbacks=[callback])
    trainer.train()
    rank = args.process_index
    held = {
        "rank": rank,
        "world_size": args.world_size,
        "global_step": trainer.state.global_step,
        "runs": runs,
        "history_steps": callback.monitor.history.steps,
        "schedule_runs": callback.monitor.schedule.state.runs,
        "reporters": [type(r).__name__ for r in callback.monitor.reporters],
        "param_checksum": sum(float(p.detach().double().sum()) for p in model.parameters()),
        "evaluate_only": evaluate_only(out / "eval", model, data),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(held))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
