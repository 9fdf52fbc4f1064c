"""Question 1 against peers: the same capture with nnsight and TransformerLens, in one run.

The result every method must produce: the attention-mask-aware mean over tokens of the
output of each of the 6 transformer blocks of a 6-layer, 384-wide BERT, for N sequences x
128 tokens (default 512; the texts of ``capture.py``). Each method is checked against
NeuronMap's ``capture_activations(..., reduce="mean")`` on the same model, on that workload
and on 8 ragged sequences (where the mask matters), before anything is timed; a maximum
absolute difference above 1e-4 stops the run (exit 1) instead of producing a number.

Two sections, each with its own plain no-grad forward as the baseline:

* ``nnsight``: all-MiniLM-L6-v2 (``AutoModel``, the model of ``capture.py``). NeuronMap
  against ``nnsight.NNsight`` tracing, both ways nnsight allows: ``.save()`` each block's
  output and pool afterwards, or pool inside the trace and save only the pooled tensors.
* ``transformer_lens``: TransformerLens 4 dropped ``HookedEncoder``; its BERT path is
  ``TransformerBridge.boot_transformers``, whose adapter needs ``BertForMaskedLM`` with eager
  attention. The real all-MiniLM-L6-v2 weights are loaded offline from the local folder into
  that class (the MLM head, absent from the checkpoint, is seeded random) and handed over with
  ``hf_model=``. The baseline, NeuronMap (``bert.encoder.layer.*``) and the bridge all run that
  same model, MLM head included. ``run_with_cache`` caches ``blocks.{i}.hook_out`` and the
  script pools the cache; the bridge's forward without a cache is timed too.

Time: median over repeats, the variants of a section interleaved in every repeat. Memory: the
accounting of ``capture.py`` (a fresh subprocess per variant, growth of the peak resident set,
or of ``torch.cuda.max_memory_allocated``, over a warm plain forward), minus the baseline's
own growth, against the bytes of the reduced output.

    pip install -r benchmarks/requirements-peers.txt   # a separate venv, see that file
    .venv-peers/bin/python benchmarks/capture_peers.py [--n 512] [--repeats 3] [--json out.json]
        [--device cuda] [--peers nnsight transformer_lens]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, median_time, minilm_path, print_rows, write_json
from capture import _peak_rss_bytes, _setup

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_TOLERANCE = 1e-4
_N_BLOCKS = 6
_INSTALL_HINT = ("capture_peers.py: {missing} not importable; install the peers in their own venv: "
                 "python3 -m venv .venv-peers && .venv-peers/bin/pip install -r benchmarks/requirements-peers.txt")


@dataclass
class _Bench:
    """One section's model(s), the probe sets and how to run them."""

    model: torch.nn.Module
    probe: Any
    ragged: Any
    batch_size: int
    device: str
    peer: Any  # the nnsight.NNsight wrapper or the TransformerBridge
    blocks: list[str]  # NeuronMap layer names of the 6 blocks


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Attention-mask-aware mean over tokens of ``[batch, tokens, d]``, as numpy."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return ((hidden * m).sum(1) / m.sum(1)).float().cpu().numpy()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _plain(b: _Bench, probe: Any) -> None:
    with torch.no_grad():
        for batch in probe.batches(b.batch_size, b.device):
            b.model(**batch)
    _sync(b.device)


def _neuronmap(b: _Bench, probe: Any) -> list[np.ndarray]:
    from neuronmap.capture import capture_activations

    acts = capture_activations(b.model, probe, layers=b.blocks, reduce="mean", batch_size=b.batch_size, device=b.device)
    return [acts[name] for name in b.blocks]


def _nnsight_save(b: _Bench, probe: Any) -> list[np.ndarray]:
    import nnsight

    out: list[list[np.ndarray]] = [[] for _ in range(_N_BLOCKS)]
    with torch.no_grad():
        for batch in probe.batches(b.batch_size, b.device):
            with b.peer.trace(**batch):
                saved = nnsight.save(list())  # names bound in a trace body do not leave it
                for i in range(_N_BLOCKS):
                    saved.append(b.peer.encoder.layer[i].output)
            for i, hidden in enumerate(saved):
                out[i].append(_pool(hidden, batch["attention_mask"]))
    return [np.concatenate(o) for o in out]


def _nnsight_pool(b: _Bench, probe: Any) -> list[np.ndarray]:
    import nnsight

    out: list[list[np.ndarray]] = [[] for _ in range(_N_BLOCKS)]
    with torch.no_grad():
        for batch in probe.batches(b.batch_size, b.device):
            m = batch["attention_mask"].unsqueeze(-1).float()
            with b.peer.trace(**batch):
                saved = nnsight.save(list())
                for i in range(_N_BLOCKS):
                    saved.append((b.peer.encoder.layer[i].output * m).sum(1) / m.sum(1))
            for i, pooled in enumerate(saved):
                out[i].append(pooled.cpu().numpy())
    return [np.concatenate(o) for o in out]


_HOOKS = [f"blocks.{i}.hook_out" for i in range(_N_BLOCKS)]


def _tl_cache(b: _Bench, probe: Any) -> list[np.ndarray]:
    out: list[list[np.ndarray]] = [[] for _ in range(_N_BLOCKS)]
    with torch.no_grad():
        for batch in probe.batches(b.batch_size, b.device):
            _, cache = b.peer.run_with_cache(batch["input_ids"], attention_mask=batch["attention_mask"],
                                             names_filter=_HOOKS)
            for i, name in enumerate(_HOOKS):
                out[i].append(_pool(cache[name], batch["attention_mask"]))
    return [np.concatenate(o) for o in out]


def _tl_forward(b: _Bench, probe: Any) -> None:
    with torch.no_grad():
        for batch in probe.batches(b.batch_size, b.device):
            b.peer(batch["input_ids"], attention_mask=batch["attention_mask"])
    _sync(b.device)


_Variant = Callable[[_Bench, Any], "list[np.ndarray] | None"]
# section -> variant -> (function, row label); the first variant is the section's baseline
SECTIONS: dict[str, dict[str, tuple[_Variant, str]]] = {
    "nnsight": {
        "plain": (_plain, "plain no-grad forward, all-MiniLM-L6-v2 (AutoModel, sdpa)"),
        "neuronmap": (_neuronmap, "NeuronMap capture_activations, 6 blocks, mean"),
        "nnsight_save": (_nnsight_save, "nnsight trace, .save() 6 block outputs, pool after"),
        "nnsight_pool": (_nnsight_pool, "nnsight trace, pool inside the trace, .save() pooled"),
    },
    "transformer_lens": {
        "tl_plain": (_plain, "plain no-grad forward, BertForMaskedLM with MiniLM weights (eager)"),
        "tl_neuronmap": (_neuronmap, "NeuronMap capture_activations, bert.encoder.layer.*, mean"),
        "tl_cache": (_tl_cache, "TransformerLens bridge run_with_cache(blocks.{i}.hook_out) + pool"),
        "tl_forward": (_tl_forward, "TransformerLens bridge forward, no cache"),
    },
}


def _build(section: str, n: int, batch_size: int, device: str) -> _Bench:
    """Load the section's model and wrap it with its peer library (offline)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from neuronmap import ProbeSet

    hf_logging.set_verbosity_error()
    model, probe = _setup(n, device)
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    ragged = ProbeSet.from_texts([" ".join(["token"] * (3 + 5 * k)) for k in range(8)], tokenizer, max_length=128)
    if section == "nnsight":
        from nnsight import NNsight

        with warnings.catch_warnings():  # BertLayer has a child called `output`; nnsight renames it
            warnings.simplefilter("ignore", UserWarning)
            peer = NNsight(copy.deepcopy(model))  # a copy, so the baseline model carries no nnsight state
        return _Bench(model, probe, ragged, batch_size, device, peer, [f"encoder.layer.{i}" for i in range(_N_BLOCKS)])
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import BertForMaskedLM

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)  # the MLM head is not in the checkpoint: seeded, identical in every process
    mlm = BertForMaskedLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval().to(device)
    peer = TransformerBridge.boot_transformers(path, hf_model=mlm, tokenizer=tokenizer, device=device)
    return _Bench(mlm, probe, ragged, batch_size, device, peer, [f"bert.encoder.layer.{i}" for i in range(_N_BLOCKS)])


def _check(b: _Bench, section: str) -> dict[str, float]:
    """Max |diff| of every variant's pooled result to NeuronMap's on the same model; exit 1 above 1e-4."""
    diffs: dict[str, float] = {}
    reference_name = next(k for k in SECTIONS[section] if k.endswith("neuronmap"))
    for probe in (b.ragged, b.probe):
        ref = _neuronmap(b, probe)
        for name, (fn, label) in SECTIONS[section].items():
            got = fn(b, probe)
            if got is None or name == reference_name:
                continue
            diff = max(float(np.abs(g - r).max()) for g, r in zip(got, ref, strict=True))
            diffs[name] = max(diffs.get(name, 0.0), diff)
            if not diff <= _TOLERANCE:
                sys.exit(f"capture_peers.py: {label} differs from NeuronMap by {diff:.3g} (> {_TOLERANCE}); no timing")
    return diffs


def _memory_child(section: str, variant: str, n: int, batch_size: int, device: str) -> None:
    b = _build(section, n, batch_size, device)
    _plain(b, b.probe)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    else:
        base = _peak_rss_bytes()
    result = SECTIONS[section][variant][0](b, b.probe)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else _peak_rss_bytes()
    print(json.dumps({"extra": peak - base, "output_bytes": sum(a.nbytes for a in result or [])}))


def _memory(section: str, variant: str, n: int, batch_size: int, device: str) -> dict[str, int]:
    cmd = [sys.executable, __file__, "--memory-child", section, variant, "--n", str(n),
           "--batch-size", str(batch_size), "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _section_rows(section: str, args: argparse.Namespace, cmd: str) -> list[Row]:
    b = _build(section, args.n, args.batch_size, args.device)
    diffs = _check(b, section)  # also the warm-up of every variant
    variants = SECTIONS[section]
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every variant alike
        for name, (fn, _label) in variants.items():
            times[name].append(median_time(lambda fn=fn: fn(b, b.probe), repeats=1, warmup=0))
    med = {k: float(np.median(v)) for k, v in times.items()}
    base_name, (_, base_label) = next(iter(variants.items()))
    nm_name = next(k for k in variants if k.endswith("neuronmap"))
    mem = {k: _memory(section, k, args.n, args.batch_size, args.device) for k in variants}
    out_bytes = mem[nm_name]["output_bytes"]
    rows = []
    for name, (_fn, label) in list(variants.items())[1:]:
        extra = {"baseline": base_label, "time_vs_neuronmap": med[name] / med[nm_name],
                 "times_s": times[name], "baseline_times_s": times[base_name]}
        if name in diffs:
            extra["max_abs_diff_vs_neuronmap"] = diffs[name]
        rows.append(Row("1p", f"[{section}] {label} vs plain forward", med[name], med[base_name],
                        med[name] / med[base_name], "s", "", cmd, extra))
    for name, (_fn, label) in list(variants.items())[1:]:
        grown = max(mem[name]["extra"] - mem[base_name]["extra"], 0)
        rows.append(Row("1p", f"[{section}] {label}: extra peak memory vs reduced output", grown / 2**20,
                        out_bytes / 2**20, grown / out_bytes, "MiB", "", cmd,
                        {"baseline_extra_MiB": mem[base_name]["extra"] / 2**20}))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peers", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--json", default=None)
    parser.add_argument("--memory-child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child, args.n, args.batch_size, args.device)
        return 0
    missing = [p for p in args.peers if importlib.util.find_spec(p) is None]
    if missing:
        print(_INSTALL_HINT.format(missing=" and ".join(missing)))
        write_json([], args.json)
        return 0

    cmd = (f".venv-peers/bin/python benchmarks/capture_peers.py --n {args.n} --repeats {args.repeats} "
           f"--device {args.device} --peers {' '.join(args.peers)}")
    rows = [row for section in args.peers for row in _section_rows(section, args, cmd)]
    print_rows(rows, f"Capture vs nnsight / TransformerLens, 6 blocks of a 6-layer 384-wide BERT, "
                     f"{args.n} x 128 tokens ({args.device})")
    for row in rows:
        if "times_s" in row.extra:
            print(f"repeats (s), {row.what}: " + ", ".join(f"{t:.2f}" for t in row.extra["times_s"])
                  + " / baseline " + ", ".join(f"{t:.2f}" for t in row.extra["baseline_times_s"]))
        if "max_abs_diff_vs_neuronmap" in row.extra:
            print(f"max |diff| vs NeuronMap, {row.what.split(' vs ')[0]}: {row.extra['max_abs_diff_vs_neuronmap']:.2e}")
    write_json(rows, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
