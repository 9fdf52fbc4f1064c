"""Does a hung tracker slow training down? Training time with MLflow paused vs answering.

Target: training loop time with the MLflow server frozen (SIGSTOP: it accepts connections and
never answers) / the same loop with the server answering <= 1.02.

Method: a plain PyTorch loop (an MLP of width 512 on batches of 128, ``--steps`` optimizer
steps) with NeuronMap scheduled every ``--every`` steps (ActivationStats on 4 layers, reporting
to a local run folder and to a real ``mlflow server`` on 127.0.0.1). Each round runs the loop
twice, once per condition, in an order shuffled per round; the ratio is taken within the round
(the two loops seconds apart) and the median over rounds is reported, which a slow drift of a
shared machine cannot bias. Timed: the whole loop, scheduled runs included; ``close`` is not
part of training (with the tracker frozen it leaves the rest in the spool after
``close_timeout``). Before the change that moved tracker calls off the training thread, the
frozen server cost about 20 s per scheduled run.

    python benchmarks/hung_tracker.py [--rounds 3] [--steps 300] [--every 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import Row, print_rows, write_json
from _servers import MLflowServer

import neuronmap as nm
from neuronmap.errors import ReporterWarning
from neuronmap.reporters import LocalReporter, MLflowReporter


def _loop(server: MLflowServer, root: Path, *, steps: int, every: int, frozen: bool) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Linear(512, 512), torch.nn.ReLU())])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(128, 512)
    probe = nm.ProbeSet.from_tensors(torch.randn(64, 512))
    rep = MLflowReporter(tracking_uri=server.uri, experiment_name=f"hung-{uuid.uuid4().hex[:6]}")
    rep.run_id  # noqa: B018  (the run exists before the loop, as with a logger's run)
    monitor = nm.NeuronMap(probe, layers=["1", "3", "5", "7"], analyses=[nm.ActivationStats()],
                           schedule=nm.Schedule(every_n_steps=every, on=("step",)),
                           reporters=[LocalReporter(root, uuid.uuid4().hex[:8], render_html=False), rep])
    if frozen:
        server.pause()
    try:
        t0 = time.perf_counter()
        for step in range(steps):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
            monitor.maybe_run(model, step=step)
        elapsed = time.perf_counter() - t0
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ReporterWarning)
            monitor.close(timeout=0 if frozen else 60)
        if frozen:
            server.resume()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = MLflowServer(root / "server")
        server.start()
        try:
            _loop(server, root, steps=args.every * 2, every=args.every, frozen=False)  # warm-up
            ratios, times = [], {True: [], False: []}
            for _ in range(args.rounds):
                order = [False, True]
                random.shuffle(order)
                took = {frozen: _loop(server, root, steps=args.steps, every=args.every, frozen=frozen)
                        for frozen in order}
                for frozen, t in took.items():
                    times[frozen].append(t)
                ratios.append(took[True] / took[False])
        finally:
            server.stop()
    frozen, healthy = statistics.median(times[True]), statistics.median(times[False])
    command = f"python benchmarks/hung_tracker.py --rounds {args.rounds} --steps {args.steps} --every {args.every}"
    rows = [Row("9", f"training loop, {args.steps} steps, a run every {args.every}: MLflow frozen vs answering",
                frozen, healthy, statistics.median(ratios), "s", "<= 1.02", command,
                extra={"round_ratios": ratios, "frozen_s": times[True], "healthy_s": times[False]})]
    print_rows(rows, "Question 9: a hung tracker and the training loop")
    if args.json:
        write_json(rows, args.json)


if __name__ == "__main__":
    main()
