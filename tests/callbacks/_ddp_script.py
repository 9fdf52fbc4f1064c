"""Two-process Lightning DDP run (CPU, gloo) with NeuronMapCallback; run by test_ddp.py.

``python tests/callbacks/_ddp_script.py OUT_DIR {local,mlflow,gate}``. Lightning's DDP launcher
re-runs this script for rank 1. Rank 0 saves the weights at every NeuronMap run (so the test can
recompute the metrics in one process) and the runs it saw; every rank writes what it holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _lit import lit_mlp, loader

import neuronmap as nm
from neuronmap.analyses.base import Analysis, AnalysisContext, AnalysisResult, MetricSet
from neuronmap.callbacks import NeuronMapCallback
from neuronmap.distributed import unwrap_model
from neuronmap.testing import tiny_probe

N_PROBE = 37  # odd: rank 1's shard is padded
SCHEDULE = {"every_n_steps": 2, "on": ("validation_end", "train_end")}


class OrderChecksum(Analysis):
    """Metrics that change if probe examples are reordered or dropped, on layers and on logits."""

    name = "order_checksum"
    needs_outputs = True

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        m = MetricSet()
        for layer, x in self.layer_items(ctx):
            m.add(layer, "weighted_first_unit", float(np.arange(len(x)) @ x[:, 0]))
        assert ctx.outputs is not None
        m.add("model", "weighted_logit", float(np.arange(len(ctx.outputs)) @ ctx.outputs[:, 0]))
        m.add("model", "rows", float(len(ctx.outputs)))
        return AnalysisResult(self.name, metrics=m)


class Raises(Analysis):
    """Fails on rank 0 at every run: training (on both ranks) must go on."""

    name = "raises"

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        raise RuntimeError("deliberate failure on rank 0")


def analyses() -> list[Analysis]:
    return [nm.ActivationStats(), OrderChecksum(), Raises()]


def main(out: Path, tracker: str) -> None:
    torch.set_num_threads(1)
    # "gate": a gate that fails at the first run, with stop_on_failure; only rank 0 evaluates it,
    # and every rank must stop at the same step instead of waiting for the other forever
    gates = [{"name": "never", "metric": "neuronmap/activation_stats/net.1/std", "min": 1e9}]
    callback = NeuronMapCallback(
        probe=tiny_probe(n=N_PROBE), layers=["net.*"], analyses=analyses(), schedule=nm.Schedule(**SCHEDULE),
        audit=False,  # the tracker alone: no local run folder beside it (the audit trail needs one)
        **({"gates": gates, "stop_on_failure": True} if tracker == "gate" else {}),
    )
    runs: list[dict[str, object]] = []

    def on_report(report: nm.Report, model: torch.nn.Module) -> None:
        torch.save(unwrap_model(model).state_dict(), out / f"weights-{report.step}.pt")
        runs.append({"event": report.event, "step": report.step, "epoch": report.epoch, "failed": report.failed})

    callback.monitor.add_listener(on_report)
    logger: object = False
    if tracker == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        logger = MLFlowLogger(
            experiment_name="ddp",
            tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
            artifact_location=(out / "mlartifacts").as_uri(),
        )
    trainer = L.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_epochs=2,
        logger=logger,
        callbacks=[callback],
        default_root_dir=str(out / "root"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(lit_mlp(seed=5), loader(48), loader(16))
    rank = trainer.global_rank
    held = {
        "rank": rank,
        "global_step": trainer.global_step,
        "runs": runs,
        "history_steps": callback.monitor.history.steps,
        "schedule_runs": callback.monitor.schedule.state.runs,
        "reporters": [type(r).__name__ for r in callback.monitor.reporters],
    }
    (out / f"rank{rank}.json").write_text(json.dumps(held))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
