"""Question 11 (issue 17): analyses off the training loop, ``NeuronMap(executor="background")``.

Model: all-MiniLM-L6-v2 with a seeded 2-label sequence-classification head (eager attention),
as in ``full_run.py``; probe set: the templated sentiment sentences (``--per-template`` per
template); layers: the embeddings and the 6 encoder blocks, mean-reduced; analyses: Probing,
CKA and Fairness at their defaults (none needs the live model, so all run in the worker).

Two rows:

* **blocked / capture**: the training thread's time in ``monitor.run`` per scheduled run in
  background mode (capture, hand-off) over that run's capture time. Each run waits for the
  previous one's analyses first, so the ratio is the hand-off's own cost. Target <= 1.2.
* **step time, background / synchronous**: a Lightning fit of the same model on the probe
  sentences (batch 16, AdamW) for ``--steps`` optimizer steps with
  ``Schedule(every_n_steps=--every)`` and ``NeuronMapCallback``, total fit time per step,
  background over synchronous (median over ``--repeats`` fits each, interleaved). The fit
  without NeuronMap is reported beside them. The worker has 1 thread; on a machine with few
  cores it competes with training for them, which this row includes.

    python benchmarks/background.py [--per-template 20] [--steps 20] [--every 10] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, minilm_path, print_rows, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEURONMAP_QUIET", "1")

LAYERS = ["bert.embeddings", "bert.encoder.layer.*"]


def _setup(per_template: int) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from neuronmap.data.probes import sentiment_probe

    path = minilm_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, attn_implementation="eager",
                                                               dtype=torch.float32)
    probe = sentiment_probe(AutoTokenizer.from_pretrained(path), n_per_template=per_template, seed=0)
    return model, probe


def _analyses() -> list[Any]:
    import neuronmap as nm

    return [nm.Probing(), nm.CKA(), nm.Fairness(["gender", "race"], label_column="label")]


def _blocked(model: Any, probe: Any, repeats: int) -> tuple[float, float, list[float]]:
    import neuronmap as nm

    monitor = nm.NeuronMap(probe, layers=LAYERS, analyses=_analyses(), reporters=[], executor="background")
    monitor.preflight(model)
    monitor.wait()
    blocked, capture, ratios = [], [], []
    for step in range(repeats + 1):  # the first run also waits for the worker's start
        t0 = time.perf_counter()
        pending = monitor.run(model, step=step)
        seconds = time.perf_counter() - t0
        pending.wait()
        if step:
            blocked.append(seconds)
            capture.append(pending.timings["capture"])
            ratios.append(seconds / pending.timings["capture"])
    monitor.close()
    return statistics.median(blocked), statistics.median(capture), ratios


def _lit(model: Any) -> Any:
    import lightning.pytorch as L

    class Classifier(L.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            ids, mask, labels = batch
            return self.model(input_ids=ids, attention_mask=mask, labels=labels).loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-5)

    return Classifier()


def _fit(probe: Any, executor: str | None, *, steps: int, every: int) -> float:
    import copy

    import lightning.pytorch as L
    from torch.utils.data import DataLoader, TensorDataset

    import neuronmap as nm
    from neuronmap.callbacks import NeuronMapCallback

    model, _ = _setup_cached()
    module = _lit(copy.deepcopy(model))
    data = TensorDataset(probe.inputs["input_ids"], probe.inputs["attention_mask"], torch.as_tensor(probe.labels))
    callbacks = []
    if executor is not None:
        callbacks.append(NeuronMapCallback(probe=probe, layers=LAYERS, module="model", analyses=_analyses(),
                                           reporters=[], audit=False, executor=executor,
                                           schedule=nm.Schedule(every_n_steps=every, on=("step",))))
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                            callbacks=callbacks)
        t0 = time.perf_counter()
        trainer.fit(module, DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)))
        return (time.perf_counter() - t0) / steps


_CACHE: dict[str, Any] = {}


def _setup_cached() -> tuple[Any, Any]:
    return _CACHE["setup"]  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-template", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--fits", type=int, default=1, help="fits per variant (median)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    model, probe = _CACHE["setup"] = _setup(args.per_template)
    blocked, capture, ratios = _blocked(model.eval(), probe, args.repeats)
    fits: dict[str, list[float]] = {"none": [], "sync": [], "background": []}
    for _ in range(args.fits):
        for variant in fits:
            executor = None if variant == "none" else variant
            fits[variant].append(_fit(probe, executor, steps=args.steps, every=args.every))
    step = {v: statistics.median(t) for v, t in fits.items()}

    cmd = (f"python benchmarks/background.py --per-template {args.per_template} --repeats {args.repeats} "
           f"--steps {args.steps} --every {args.every} --fits {args.fits}")
    what = f"{len(probe)} sentences, 7 layers, Probing+CKA+Fairness"
    rows = [
        Row("11", f"background run: training thread blocked / capture ({what})", blocked, capture,
            statistics.median(ratios), "s", "<= 1.2", cmd, {"ratios": ratios}),
        Row("11", f"Lightning fit step time, a full run every {args.every} steps: background / sync ({what})",
            step["background"], step["sync"], step["background"] / step["sync"], "s", "", cmd,
            {"no_monitor_step_s": step["none"], "fits": fits}),
        Row("11", f"Lightning fit step time: background / no NeuronMap ({what})", step["background"], step["none"],
            step["background"] / step["none"], "s", "", cmd, {"fits": fits}),
    ]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"
    print_rows(rows, f"Analyses off the training loop (all-MiniLM-L6-v2, CPU); load average {load}")
    write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
