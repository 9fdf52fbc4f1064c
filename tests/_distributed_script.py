"""Two gloo processes run the engine on a DDP, an FSDP1 and an FSDP2 model; rank 0 writes the metrics.

Run by tests/test_distributed.py in a subprocess (so that pytest itself is never forked):
``python tests/_distributed_script.py OUT_JSON PORT``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import neuronmap as nm
from neuronmap.analyses.base import Analysis, AnalysisContext, AnalysisResult, MetricSet
from neuronmap.testing import tiny_mlp, tiny_probe

N_PROBE = 37  # odd, so the second rank's shard is padded


class OrderChecksum(Analysis):
    """Metrics that change if examples are reordered or dropped: sum_i i * x_i0, and the same on logits."""

    name = "order_checksum"
    needs_outputs = True

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        m = MetricSet()
        for layer, x in self.layer_items(ctx):
            m.add(layer, "weighted_first_unit", float(np.arange(len(x)) @ x[:, 0]))
            m.add(layer, "rows", float(len(x)))
        assert ctx.outputs is not None
        m.add("model", "weighted_logit", float(np.arange(len(ctx.outputs)) @ ctx.outputs[:, 0]))
        return AnalysisResult(self.name, metrics=m)


def _wrap(model: torch.nn.Module, kind: str) -> torch.nn.Module:
    cpu = torch.device("cpu")
    if kind == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        model.net[2] = FSDP(model.net[2], device_id=cpu)
        return FSDP(model, device_id=cpu)
    from torch.distributed.fsdp import fully_shard

    fully_shard(model.net[2])
    return fully_shard(model)


def main(rank: int, out: str, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    results: dict[str, object] = {}
    for kind in ("ddp", "fsdp1", "fsdp2"):
        model = _wrap(tiny_mlp(seed=3), kind)
        monitor = nm.NeuronMap(
            tiny_probe(n=N_PROBE),
            layers=["net.*"],
            analyses=[nm.ActivationStats(), OrderChecksum()],
            reporters=[],
            batch_size=8,
        )
        report = monitor.run(model, step=5, event="manual")
        results[kind] = {"metrics": report.metrics, "analyses": sorted(report.results)}
    if rank == 0:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(results, fh)
    else:
        with open(out + ".rank1", "w", encoding="utf-8") as fh:
            json.dump(results, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.multiprocessing.spawn(main, args=(sys.argv[1], sys.argv[2]), nprocs=2)
