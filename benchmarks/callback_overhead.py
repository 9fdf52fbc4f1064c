"""What does the NeuronMap callback cost per training step between scheduled runs?

Target: step time with the callback / without it <= 1.01, for Lightning and for the HF Trainer.

Method: one process, the same model and data; training runs *with* and *without* the
callback alternate (their order shuffled in each repeat) so that machine noise hits both
alike. A timing callback, present in both, records every optimizer step's wall time (batch
start to batch end); NeuronMap's schedule is set to a step the runs never reach, so its
callback checks the schedule at every step and never runs (the "between scheduled runs"
case). Per run the median step time is kept; the ratio is the median over repeats of
with / without. Because a ratio of 1.01 is within the noise of a shared machine, the script
also times the callback's per-step hooks directly (``on_train_batch_end`` / ``on_step_end``
called a million times) and reports that cost as a fraction of a step: the noise-free bound.

    python benchmarks/callback_overhead.py [--repeats 5] [--steps 200] [--threads 1] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, print_rows, write_json

import neuronmap as nm
from neuronmap.testing import tiny_bert, tiny_text_probe

os.environ.setdefault("HF_HUB_OFFLINE", "1")
COMMAND = "python benchmarks/callback_overhead.py"
NEVER = 10**9  # a step no benchmark run reaches: the callback checks and stays idle


def _monitor(probe: nm.ProbeSet, layers: list[str]) -> nm.NeuronMap:
    return nm.NeuronMap(probe, layers=layers, analyses=[nm.ActivationStats()], reporters=[],
                        schedule=nm.Schedule(every_n_steps=NEVER, on=()))


def _ratio(times: dict[str, list[float]]) -> tuple[float, float, float]:
    with_cb, without = statistics.median(times["with"]), statistics.median(times["without"])
    ratios = [w / o for w, o in zip(times["with"], times["without"], strict=True)]
    return with_cb, without, statistics.median(ratios)


def _hook_cost(hook: Any, calls: int = 1_000_000) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        hook()
    return (time.perf_counter() - t0) / calls


# ---------------------------------------------------------------------- Lightning
def lightning_overhead(repeats: int, steps: int) -> list[Row]:
    import lightning.pytorch as L
    from torch.utils.data import DataLoader, TensorDataset

    from neuronmap.callbacks import NeuronMapCallback

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                           torch.nn.ReLU(), torch.nn.Linear(256, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_start(self, *args: Any) -> None:
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            self.times.append(time.perf_counter() - self._t0)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps * 64, 64, generator=gen)
    data = DataLoader(TensorDataset(x, torch.randint(0, 10, (len(x),), generator=gen)), batch_size=64)
    probe = nm.ProbeSet(x[:128])
    times: dict[str, list[float]] = {"with": [], "without": []}
    callback = None
    for _ in range(repeats):
        for variant in random.sample(["with", "without"], 2):
            timer = StepTimer()
            callbacks: list[Any] = [timer]
            if variant == "with":
                callback = NeuronMapCallback(_monitor(probe, ["net.*"]))
                callbacks.insert(0, callback)
            trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
            torch.manual_seed(0)
            trainer.fit(Net(), data)
            times[variant].append(statistics.median(timer.times[10:]))  # skip warm-up steps
    with_cb, without, ratio = _ratio(times)
    assert callback is not None and callback.monitor.schedule.state.runs == 0
    hook = _hook_cost(lambda: callback.on_train_batch_end(trainer, trainer.lightning_module, None, None, 0))
    extra = {"repeats": repeats, "steps": steps, "per_repeat_with_s": times["with"],
             "per_repeat_without_s": times["without"]}
    return [
        Row("callback overhead", "Lightning step time, with / without NeuronMapCallback (idle)",
            with_cb * 1e3, without * 1e3, ratio, "ms", "<= 1.01", COMMAND, extra),
        Row("callback overhead", "Lightning: cost of the callback's per-step hook / step time",
            hook * 1e6, without * 1e6, 1 + hook / without, "us", "<= 1.01", COMMAND),
    ]


# ---------------------------------------------------------------------- Hugging Face
def hf_overhead(repeats: int, steps: int) -> list[Row]:
    import tempfile

    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from neuronmap.callbacks import NeuronMapTrainerCallback

    hf_logging.set_verbosity_error()
    probe = tiny_text_probe(64)

    class Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return steps * 8

        def __getitem__(self, i: int) -> dict[str, Any]:
            j = i % len(probe)
            return {"input_ids": probe.inputs["input_ids"][j], "attention_mask": probe.inputs["attention_mask"][j],
                    "labels": int(probe.labels[j])}  # type: ignore[index]

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self._t0 = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter() - self._t0)

    times: dict[str, list[float]] = {"with": [], "without": []}
    callback = None
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(out, max_steps=steps, per_device_train_batch_size=8, report_to="none",
                                 save_strategy="no", use_cpu=True, disable_tqdm=True, logging_strategy="no")
        for _ in range(repeats):
            for variant in random.sample(["with", "without"], 2):
                timer = StepTimer()
                callbacks: list[Any] = [timer]
                if variant == "with":
                    callback = NeuronMapTrainerCallback(_monitor(probe, ["bert.encoder.layer.*"]))
                    callbacks.insert(0, callback)
                trainer = Trainer(tiny_bert(num_labels=2), args, train_dataset=Data(), callbacks=callbacks)
                trainer.train()
                times[variant].append(statistics.median(timer.times[10:]))
    with_cb, without, ratio = _ratio(times)
    assert callback is not None and callback.monitor.schedule.state.runs == 0
    state, control = trainer.state, trainer.control
    hook = _hook_cost(lambda: callback.on_step_end(args, state, control, model=trainer.model))
    extra = {"repeats": repeats, "steps": steps, "per_repeat_with_s": times["with"],
             "per_repeat_without_s": times["without"]}
    return [
        Row("callback overhead", "HF Trainer step time, with / without NeuronMapTrainerCallback (idle)",
            with_cb * 1e3, without * 1e3, ratio, "ms", "<= 1.01", COMMAND, extra),
        Row("callback overhead", "HF: cost of the callback's per-step hook / step time",
            hook * 1e6, without * 1e6, 1 + hook / without, "us", "<= 1.01", COMMAND),
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per training run")
    parser.add_argument("--quick", action="store_true", help="2 repeats of 40 steps (a smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared machine quieter)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats, steps = (2, 40) if args.quick else (args.repeats, args.steps)
    random.seed(0)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    rows = lightning_overhead(repeats, steps) + hf_overhead(repeats, steps)
    print_rows(rows, "NeuronMap callback overhead between scheduled runs")
    write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
