"""Benchmark of ``neuronmap.metrics.similarity`` (issue 3): prints ratios measured in one run.

Rows (each a median over ``--repeats`` runs, interleaved with its baseline):

* ``speedup``: :func:`cka_matrix` on L layers of ``[n, d]`` activations against a per-pair
  Gram-form reference written as in Kornblith et al.'s CKA notebook
  (``cka(gram_linear(x), gram_linear(y))`` for every pair of layers, recomputing and
  re-centring both ``n x n`` Gram matrices each time; the notebook's ``np.allclose``
  symmetry check is left out, which only makes the reference faster). Target >= 10x.
* ``gflops``: the floating-point operations ``cka_matrix`` executes (its GEMMs; SYRK,
  i.e. half the products, for the diagonal Gram blocks) per second, against numpy's
  matmul computing the same layers' Gram matrices ``x @ x.T`` (which numpy also runs as
  SYRK) one after another. Both count ``n (n + 1) d`` flops per Gram matrix, so the ratio
  says how close the blocked, all-pairs pass gets to numpy's own speed. Target >= 70 %.
  With ``--device cuda`` the baseline is torch's float64 ``x @ x.T`` on the GPU; cuBLAS
  executes it as a full GEMM, but both sides still count the ``n (n + 1) d`` the result
  needs, so the ratio stays the baseline's time over ours.
* ``memory``: peak traced memory (tracemalloc) of :class:`CKAAccumulator` streaming one
  layer pair in batches of 1000 rows, from n = 1e3 to 1e6. Target: flat (max/min <= 1.5).

Usage::

    python benchmarks/cka.py                 # 12 layers, n = 4096, d = 768 (a few minutes)
    python benchmarks/cka.py --quick         # reduced sizes, seconds
    python benchmarks/cka.py --only speedup --repeats 5 --json cka.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from neuronmap.metrics import _cka
from neuronmap.metrics.similarity import CKAAccumulator, cka_matrix

ROWS = ("speedup", "gflops", "memory")


@dataclass
class Row:
    """One line of the results table."""

    name: str
    measured: str
    ratio: float
    target: str
    passed: bool
    command: str
    details: dict[str, Any] = field(default_factory=dict)


# --- the reference, as in Kornblith et al.'s notebook (demo.ipynb, 2019) --------------------


def _gram_linear(x: np.ndarray) -> np.ndarray:
    return x.dot(x.T)


def _center_gram(gram: np.ndarray) -> np.ndarray:
    gram = gram.copy()
    means = np.mean(gram, 0, dtype=np.float64)
    means -= np.mean(means) / 2
    gram -= means[:, None]
    gram -= means[None, :]
    return gram


def _reference_cka(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    gram_x, gram_y = _center_gram(gram_x), _center_gram(gram_y)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    return float(scaled_hsic / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y)))


def reference_cka_matrix(acts: list[Any]) -> np.ndarray:
    """Per-pair Gram-form CKA for every pair ``i < j`` (diagonal = 1).

    Torch tensors run the same notebook code in torch on their device (the GPU reference).
    """
    if not isinstance(acts[0], np.ndarray):
        return _reference_cka_matrix_torch(acts)
    out = np.eye(len(acts))
    for i in range(len(acts)):
        for j in range(i + 1, len(acts)):
            out[i, j] = out[j, i] = _reference_cka(_gram_linear(acts[i]), _gram_linear(acts[j]))
    return out


def _reference_cka_matrix_torch(acts: list[Any]) -> np.ndarray:
    def center(gram: Any) -> Any:
        means = gram.mean(0)
        means = means - means.mean() / 2
        return gram - means[:, None] - means[None, :]

    out = np.eye(len(acts))
    for i in range(len(acts)):
        for j in range(i + 1, len(acts)):
            gx, gy = center(acts[i] @ acts[i].T), center(acts[j] @ acts[j].T)
            out[i, j] = out[j, i] = float((gx.ravel() @ gy.ravel()) / (gx.norm() * gy.norm()))
    return out


# --- measurement helpers ----------------------------------------------------------------------


def _sync(device: str | None) -> None:
    if device is not None and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _median_times(
    fns: list[Callable[[], object]], repeats: list[int], device: str | None = None
) -> list[float]:
    """Run the functions interleaved (so load changes hit all alike); median seconds each.

    One untimed call of each first (CUDA context, cuBLAS handles, allocator warm-up).
    """
    for fn in fns:
        fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(max(repeats)):
        for k, fn in enumerate(fns):
            if round_ < repeats[k]:
                start = time.perf_counter()
                fn()
                _sync(device)
                times[k].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _on(acts: list[np.ndarray], device: str | None) -> list[Any]:
    """float64 copies of the layers for the baselines: numpy, or torch tensors on ``device``."""
    if device is None:
        return [a.astype(np.float64) for a in acts]
    import torch

    return [torch.from_numpy(a).to(device, torch.float64) for a in acts]


def _block_size(n: int, n_layers: int, device: str | None = None) -> int:
    if device is not None:
        import torch

        from neuronmap.metrics import _cka_torch

        return _cka_torch.block_size(n, n_layers, torch.device(device))
    return _cka.block_size(n, n_layers)


def cka_matrix_flops(n: int, d: int, n_layers: int, device: str | None = None) -> float:
    """Useful flops of the Gram form of ``cka_matrix``: SYRK counts for diagonal blocks.

    numpy runs a diagonal block ``x[r] @ x[r].T`` as SYRK; cuBLAS (torch) runs it as a full
    GEMM, twice the work for the same result. Both this and the baseline count the work the
    result needs, so on a GPU the ratio is the baseline's time over ours.
    """
    block = _block_size(n, n_layers, device)
    sizes = [min(block, n - s) for s in range(0, n, block)]
    total = 0.0
    for r, br in enumerate(sizes):
        for c, bc in enumerate(sizes):
            if c < r:
                continue
            gemm = br * (br + 1) * d if r == c else 2.0 * br * bc * d
            total += n_layers * gemm + n_layers * (n_layers + 1) * br * bc
    return total


def _activations(n_layers: int, n: int, d: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, 64), dtype=np.float32)
    return [
        shared @ rng.standard_normal((64, d), dtype=np.float32)
        + rng.standard_normal((n, d), dtype=np.float32)
        for _ in range(n_layers)
    ]


# --- rows ---------------------------------------------------------------------------------------


def bench_speedup(cfg: dict[str, int], repeats: int, base_cmd: str, device: str | None = None) -> Row:
    acts = _activations(cfg["layers"], cfg["n"], cfg["d"])
    acts64 = _on(acts, device)  # the reference gets float64 (and the device) for free
    if device is not None:
        import torch

        acts = [torch.from_numpy(a).to(device) for a in acts]  # float32 on the device, as captured

    def ours() -> np.ndarray:
        return np.asarray(cka_matrix(acts, device=device))

    ref = reference_cka_matrix(acts64)
    max_diff = float(np.max(np.abs(ours() - ref)))
    t_ours, t_ref = _median_times(
        [ours, lambda: reference_cka_matrix(acts64)], [repeats, max(1, min(repeats, 3))], device
    )
    ratio = t_ref / t_ours
    where = f" on {device}" if device else ""
    return Row(
        name="speedup",
        measured=f"cka_matrix {t_ours:.3g} s vs per-pair reference {t_ref:.3g} s{where} (max |diff| {max_diff:.1e})",
        ratio=ratio,
        target=">= 10x",
        passed=ratio >= 10 and max_diff < 1e-10,
        command=f"{base_cmd} --only speedup",
        details={"t_cka_matrix_s": t_ours, "t_reference_s": t_ref, "max_abs_diff": max_diff, **cfg},
    )


def bench_gflops(cfg: dict[str, int], repeats: int, base_cmd: str, device: str | None = None) -> Row:
    n, d, n_layers = cfg["n"], cfg["d"], cfg["layers"]
    acts = _activations(n_layers, n, d)
    acts64 = _on(acts, device)
    if device is not None:
        import torch

        acts = [torch.from_numpy(a).to(device) for a in acts]

    def baseline_grams() -> None:
        for x in acts64:  # one n x n Gram at a time; numpy runs x @ x.T as SYRK (torch as GEMM)
            x @ x.T

    flops = cka_matrix_flops(n, d, n_layers, device)
    # n (n + 1) d useful flops per Gram matrix (numpy's SYRK; cuBLAS executes twice that)
    base_flops = float(n_layers) * n * (n + 1) * d
    t_ours, t_np = _median_times(
        [lambda: cka_matrix(acts, form="gram", device=device), baseline_grams], [repeats, repeats], device
    )
    ours, numpy_rate = flops / t_ours / 1e9, base_flops / t_np / 1e9
    ratio = ours / numpy_rate
    baseline = "numpy matmul" if device is None else f"torch float64 matmul on {device}"
    return Row(
        name="gflops",
        measured=(
            f"cka_matrix {ours:.1f} GFLOP/s vs {baseline} x @ x.T on the same {n_layers} "
            f"[{n},{d}] layers {numpy_rate:.1f} GFLOP/s"
        ),
        ratio=ratio,
        target=">= 70 %",
        passed=ratio >= 0.7,
        command=f"{base_cmd} --only gflops",
        details={
            "gflop_cka_matrix": flops / 1e9,
            "gflop_baseline": base_flops / 1e9,
            "t_cka_matrix_s": t_ours,
            "t_baseline_s": t_np,
            "block": _block_size(n, n_layers, device),
            **cfg,
        },
    )


def _stream_peak(n: int, d: int, batch: int) -> tuple[int, float]:
    rng = np.random.default_rng(2)
    tracemalloc.start()
    acc = CKAAccumulator()
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        x = rng.standard_normal((rows, d))
        acc.update(x, x[:, : d // 2] + rng.standard_normal((rows, d // 2)))
    value = float(acc.compute())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, value


def bench_memory(sizes: list[int], d: int, base_cmd: str) -> Row:
    peaks = {n: _stream_peak(n, d, 1000)[0] for n in sizes}
    ratio = max(peaks.values()) / min(peaks.values())
    listed = ", ".join(f"n={n:.0e}: {p / 2**20:.2f} MiB" for n, p in peaks.items())
    return Row(
        name="memory",
        measured=f"CKAAccumulator peak (d={d}+{d // 2}, batch 1000) {listed}",
        ratio=ratio,
        target="max/min <= 1.5",
        passed=ratio <= 1.5,
        command=f"{base_cmd} --only memory",
        details={"peak_bytes": {str(n): p for n, p in peaks.items()}, "d": d},
    )


# --- main -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})  # type: ignore[union-attr]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced sizes (12 layers, n=1024, d=256; memory up to n=1e5)",
    )
    parser.add_argument(
        "--only", choices=ROWS, action="append", help="run only this row (repeatable)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timing repeats (the reference runs at most 3)"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="run cka_matrix and the baselines with torch on this device (e.g. cuda); "
        "default: numpy on the CPU. The memory row always streams on the CPU.",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.device in ("cpu", "none", "None"):
        args.device = None  # run_all passes --device cpu; the CPU path is numpy
    cfg = {"layers": 12, "n": 1024, "d": 256} if args.quick else {"layers": 12, "n": 4096, "d": 768}
    sizes = [1_000, 10_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    base_cmd = (
        "python benchmarks/cka.py"
        + (" --quick" if args.quick else "")
        + f" --repeats {args.repeats}"
        + (f" --device {args.device}" if args.device else "")
    )
    rows: list[Row] = []
    for name in args.only or ROWS:
        if name == "speedup":
            rows.append(bench_speedup(cfg, args.repeats, base_cmd, args.device))
        elif name == "gflops":
            rows.append(bench_gflops(cfg, args.repeats, base_cmd, args.device))
        else:
            rows.append(bench_memory(sizes, 64 if args.quick else 128, base_cmd))
    info = machine()
    print(
        f"# CKA benchmark: {info['platform']}, {info['processor']}, {info['cpu_count']} CPUs, "
        f"numpy {info['numpy']} ({info['blas']}), load average {info['load_average']}"
    )
    print(
        f"# sizes: {cfg['layers']} layers, n={cfg['n']}, d={cfg['d']}; memory n up to {sizes[-1]:.0e}"
    )
    print(f"{'row':<8} | {'ratio':>8} | {'target':<14} | {'ok':<3} | measured | reproduce")
    for row in rows:
        ratio = f"{row.ratio:.1f}x" if row.name == "speedup" else f"{row.ratio:.2f}"
        ok = "yes" if row.passed else "NO"
        print(
            f"{row.name:<8} | {ratio:>8} | {row.target:<14} | {ok:<3} | {row.measured} | {row.command}"
        )
    if args.json:
        payload = {"machine": info, "argv": sys.argv, "rows": [asdict(r) for r in rows]}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
